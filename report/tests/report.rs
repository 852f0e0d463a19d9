//! `session_report` and `compare` on small synthetic session directories.
use std::collections::BTreeMap;
use std::path::Path;

use cahl_engine::eval::aggregate::Efficiency;
use cahl_engine::eval::{
    write_outputs, EvalRun, EvalSummary, ItemRecord, ItemResult, Label, Misalignment, PredictionOut,
};
use cahl_report::{compare, session_report};
use cahl_sessions::records::{MetricsRecord, RunInfo, TrajectoryRecord};
use cahl_sessions::SessionWriter;

fn write_session(dir: &Path, mode: &str, steps: u64, slope: f64) {
    let info = RunInfo::new("tiny-random", mode, steps, 1, "cpu");
    let mut w = SessionWriter::create(dir, "seed = 1\n", &info).unwrap();
    for s in 1..=steps {
        let mut components = BTreeMap::new();
        components.insert("planner/format".to_string(), 0.1 * s as f64);
        components.insert("executor/syntax".to_string(), 0.5);
        components.insert("executor/semantics".to_string(), slope * s as f64);
        w.append_metrics(&MetricsRecord {
            step: s,
            planner_reward: slope * s as f64,
            executor_reward: 1.0 - slope * s as f64,
            success_rate: 0.1 * s as f64,
            misaligned_rate: 0.05,
            components,
            ..Default::default()
        })
        .unwrap();
    }
    w.sync().unwrap();
}

/// An eval output with `correct[i]` for items `t0..tn` (builtin, hierarchical).
fn write_eval(dir: &Path, step: u64, ids: &[&str], correct: &[bool]) {
    let items: Vec<ItemRecord> = ids
        .iter()
        .zip(correct)
        .map(|(id, ok)| ItemRecord {
            result: ItemResult {
                id: id.to_string(),
                category: "calls-2".into(),
                correct: *ok,
                error: (!ok).then(|| "wrong".to_string()),
                partial: None,
                taxonomy: (!ok).then(|| Label {
                    label: Misalignment::PlanTooCoarse,
                    detail: "1 sub-tasks, 2 needed".into(),
                }),
                efficiency: Efficiency {
                    call_attempts: 2,
                    invalid_calls: 1,
                    calls: 2,
                    tokens: 30,
                    latency_s: 0.5,
                    extra_calls: Some(0),
                    ..Default::default()
                },
            },
            prediction: PredictionOut::default(),
            trajectory: TrajectoryRecord::default(),
        })
        .collect();
    let results: Vec<ItemResult> = items.iter().map(|i| i.result.clone()).collect();
    let mut summary = EvalSummary::from_items("builtin", "hierarchical", &results);
    summary.step = Some(step);
    summary.model = "tiny-random".into();
    write_outputs(dir, &EvalRun { items, summary }).unwrap();
}

#[test]
fn session_report_names_its_files() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("run-a");
    write_session(&s, "cahl", 6, 0.1);
    write_eval(
        &s.join("eval/builtin-hierarchical-step-6"),
        6,
        &["t0", "t1", "t2"],
        &[true, false, false],
    );
    let out = d.path().join("rep");
    let r = session_report(&s, &out).unwrap();
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    for f in [
        "rewards.svg",
        "rewards.png",
        "success.svg",
        "planner-components.svg",
        "executor-components.svg",
        "loss.svg",
    ] {
        assert!(md.contains(f), "report does not name {f}:\n{md}");
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("executor-components.svg")).unwrap();
    assert!(svg.contains("executor/semantics") && svg.contains("executor/syntax"));
    assert!(r.plots.iter().any(|p| p.ends_with("rewards.svg")));
    // the eval table of the checkpoint
    assert!(md.contains("### builtin · hierarchical · step 6"), "{md}");
    assert!(md.contains("| calls-2 | 1 | 3 | 33.3 |"), "{md}");
    assert!(md.contains("| 3 | 3/6 | 50.0 |"), "{md}");
    assert!(
        md.contains(
            "| plan_too_coarse — a merged sub-task (several calls) the executor did not carry out | 2 | 100.0 |"
        ),
        "{md}"
    );
    assert!(md.contains("eval/builtin-hierarchical-step-6/results.jsonl"));
}

#[test]
fn report_of_an_empty_session_says_so_and_bad_dirs_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("run-empty");
    write_session(&s, "cahl", 0, 0.1);
    let r = session_report(&s, &d.path().join("o")).unwrap();
    let md = std::fs::read_to_string(r.markdown).unwrap();
    assert!(md.contains("No metrics recorded"));
    assert!(md.contains("No evaluations yet"));
    assert!(r.plots.is_empty());
    let e = session_report(&d.path().join("nope"), &d.path().join("o2"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a session directory"), "{e}");
    std::fs::create_dir(d.path().join("plain")).unwrap();
    let e = session_report(&d.path().join("plain"), &d.path().join("o3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no run.json"), "{e}");
}

#[test]
fn compare_two_sessions_on_shared_tasks() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("cahl");
    let b = d.path().join("flat");
    write_session(&a, "cahl", 5, 0.2);
    write_session(&b, "flat", 5, 0.1);
    // a saw t0..t3, b saw t1..t3: comparison on t1, t2, t3
    write_eval(
        &a.join("eval/builtin-hierarchical-step-5"),
        5,
        &["t0", "t1", "t2", "t3"],
        &[false, true, true, false],
    );
    // an older eval of a: must not be picked
    write_eval(
        &a.join("eval/builtin-hierarchical-step-1"),
        1,
        &["t1", "t2", "t3"],
        &[false, false, false],
    );
    write_eval(
        &b.join("eval/builtin-hierarchical-step-5"),
        5,
        &["t1", "t2", "t3"],
        &[false, false, true],
    );
    let out = d.path().join("cmp");
    let r = compare(&[a.clone(), b.clone()], &out).unwrap();
    let md = std::fs::read_to_string(&r.markdown).unwrap();
    assert!(md.contains("| training | cahl | flat |"), "{md}");
    assert!(md.contains("| mode | cahl | flat |"), "{md}");
    assert!(md.contains("3 items evaluated by all 2 runs"), "{md}");
    // a on t1..t3: 2/3; b: 1/3
    assert!(md.contains("| overall | 66.7 (2/3) | 33.3 (1/3) |"), "{md}");
    assert!(md.contains("| failed: plan_too_coarse | 1 | 2 |"), "{md}");
    assert!(
        md.contains("| eval | hierarchical, step 5 | hierarchical, step 5 |"),
        "{md}"
    );
    for f in ["compare-planner-reward.svg", "compare-success.png"] {
        assert!(md.contains(f) && out.join(f).is_file(), "{f}");
    }
    let svg = std::fs::read_to_string(out.join("compare-planner-reward.svg")).unwrap();
    assert!(svg.contains("cahl") && svg.contains("flat"));
    // an eval directory can be a column too
    let r = compare(
        &[a.join("eval/builtin-hierarchical-step-1"), b],
        &d.path().join("c2"),
    )
    .unwrap();
    let md = std::fs::read_to_string(r.markdown).unwrap();
    assert!(md.contains("| overall | 0.0 (0/3) | 33.3 (1/3) |"), "{md}");
    assert!(compare(&[a], &d.path().join("c3")).is_err());
}

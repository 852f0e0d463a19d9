//! End to end: `cahl-tui eval --bench builtin` on a tiny random GGUF model and a session whose
//! checkpoint adapters the test writes, then `report` on that session and `compare` of two.
#[path = "../engine/tests/load_support/mod.rs"]
mod load_support;

use std::path::Path;
use std::process::Command;

use cahl_engine::eval::{read_results, read_summary};
use cahl_engine::model::{LoraConfig, Model};
use cahl_sessions::records::{MetricsRecord, RunInfo};
use cahl_sessions::SessionWriter;
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cahl-tui"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{cmd:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A session with two metrics lines and a `step-1` checkpoint holding planner/executor adapters.
fn write_session(dir: &Path, model: &Path, mode: &str) {
    let info = RunInfo::new(model.display().to_string(), mode, 1, 3, "cpu");
    let mut w = SessionWriter::create(dir, "seed = 3\n", &info).unwrap();
    for s in 1..=2 {
        w.append_metrics(&MetricsRecord {
            step: s,
            planner_reward: 0.1 * s as f64,
            executor_reward: 0.2 * s as f64,
            success_rate: 0.0,
            ..Default::default()
        })
        .unwrap();
    }
    w.sync().unwrap();
    let lm = cahl_engine::load::load_model(model).unwrap();
    let mut m = Model::new(&lm.config, &lm.weights, DType::F32, &Device::Cpu).unwrap();
    let ck = dir.join("checkpoints/step-1");
    for (i, name) in ["planner", "executor"].into_iter().enumerate() {
        let cfg = LoraConfig {
            r: 2,
            lora_alpha: 4.0,
            ..Default::default()
        };
        m.add_adapter(name, &cfg, 7 + i as u64).unwrap();
        m.adapter(name)
            .unwrap()
            .save_peft(&ck.join(name), &model.display().to_string())
            .unwrap();
    }
}

#[test]
fn eval_report_and_compare_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.gguf");
    let mut parts = load_support::tiny_gguf("llama");
    // the built-in world's prompts are long in a byte-level vocabulary
    parts.set_md("llama.context_length", Value::U32(8192));
    parts.write(&model);
    let s1 = d.path().join("run-cahl");
    let s2 = d.path().join("run-flat");
    write_session(&s1, &model, "cahl");
    write_session(&s2, &model, "flat");

    let eval = |session: &Path, extra: &[&str]| {
        let mut c = bin();
        c.args([
            "eval",
            "--bench",
            "builtin",
            "--limit",
            "2",
            "--max-subtasks",
            "2",
            "--quiet",
        ])
        .arg("--session")
        .arg(session)
        .args(extra);
        run_ok(&mut c)
    };
    let stdout = eval(&s1, &[]);
    assert!(
        stdout.contains("builtin (hierarchical, 2 items)"),
        "{stdout}"
    );
    assert!(stdout.contains("overall"), "{stdout}");
    let out1 = s1.join("eval/builtin-hierarchical-step-1");
    let summary = read_summary(&out1).unwrap();
    assert_eq!(summary.items, 2);
    assert_eq!(summary.step, Some(1));
    assert!(summary.checkpoint.as_deref().unwrap().ends_with("step-1"));
    assert_eq!(summary.mode, "hierarchical");
    let items = read_results(&out1).unwrap();
    assert_eq!(items.len(), 2);
    for it in &items {
        assert!(it.id.starts_with("builtin-test-0-"));
        assert!(it.efficiency.tokens > 0, "the planner generated nothing");
        assert_eq!(it.correct, it.taxonomy.is_none(), "failures carry a label");
    }
    let overall = summary.table.iter().find(|r| r.name == "overall").unwrap();
    assert_eq!(overall.correct, items.iter().filter(|i| i.correct).count());
    // each line holds the prediction and the trajectory too
    let line = std::fs::read_to_string(out1.join("results.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert!(first["prediction"]["calls"].is_array());
    assert_eq!(first["trajectory"]["mode"], "eval-hierarchical");
    assert!(!first["trajectory"]["plans"][0]["raw_text"]
        .as_str()
        .unwrap()
        .is_empty());

    // greedy decoding: a second run reproduces the predictions and verdicts
    let again = d.path().join("again");
    eval(&s1, &["--out", again.to_str().unwrap()]);
    let strip = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p.join("results.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                serde_json::json!([
                    v["id"],
                    v["correct"],
                    v["prediction"],
                    v["trajectory"]["plans"][0]["raw_text"]
                ])
            })
            .collect()
    };
    assert_eq!(strip(&out1), strip(&again));
    // episodes side by side on two workers give the same results as one worker
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    eval(&s1, &["--workers", "1", "--out", one.to_str().unwrap()]);
    eval(&s1, &["--workers", "2", "--out", two.to_str().unwrap()]);
    assert_eq!(strip(&one), strip(&two));
    assert_eq!(strip(&out1), strip(&one));

    // the flat session defaults to flat mode
    let stdout = eval(&s2, &[]);
    assert!(stdout.contains("builtin (flat, 2 items)"), "{stdout}");
    let flat = read_summary(&s2.join("eval/builtin-flat-step-1")).unwrap();
    assert!(flat.taxonomy.is_empty());

    // report
    let stdout = run_ok(bin().arg("report").arg(&s1));
    assert!(stdout.contains("report.md"), "{stdout}");
    let md = std::fs::read_to_string(s1.join("report/report.md")).unwrap();
    assert!(md.contains("rewards.svg") && s1.join("report/rewards.svg").is_file());
    assert!(s1.join("report/rewards.png").is_file());
    assert!(md.contains("### builtin · hierarchical · step 1"), "{md}");

    // compare
    let cmp = d.path().join("cmp");
    let stdout = run_ok(
        bin()
            .arg("compare")
            .arg(&s1)
            .arg(&s2)
            .arg("--out")
            .arg(&cmp),
    );
    assert!(
        stdout.contains("| training | run-cahl | run-flat |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 items evaluated by all 2 runs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| eval | hierarchical, step 1 | flat, step 1 |"),
        "{stdout}"
    );
    assert!(cmp.join("compare-planner-reward.svg").is_file());

    // bad input is reported, not a panic
    let out = bin()
        .args(["eval", "--bench", "builtin", "--session"])
        .arg(&s1)
        .args(["--step", "9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no checkpoint step-9 (it has: 1)"), "{err}");
    let out = bin().args(["compare"]).arg(&s1).output().unwrap();
    assert!(!out.status.success());
}

//! End to end: a case saved into a session (as the debugger's `a` saves it) re-run by
//! `cahl-tui cases run` against two checkpoints of a tiny random GGUF model; `cases list`; a
//! checkpoint that is not there; `--check`.
#[path = "../engine/tests/load_support/mod.rs"]
mod load_support;

use std::path::Path;
use std::process::Command;

use cahl_engine::debugger::debug_task_of;
use cahl_engine::model::{LoraConfig, Model};
use cahl_engine::worlds::builtin::generate_tasks;
use cahl_engine::worlds::Split;
use cahl_sessions::cases::{save_case, CaseRecord, CasesReport, Expect};
use cahl_sessions::records::RunInfo;
use cahl_sessions::SessionWriter;
use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cahl-tui"));
    c.env("RUST_BACKTRACE", "0");
    c
}

/// A session of `model` with checkpoints step-1 and step-2 (different random adapters).
fn write_session(dir: &Path, model: &Path) {
    let info = RunInfo::new(model.display().to_string(), "cahl", 1, 2, "cpu");
    let mut w = SessionWriter::create(dir, "seed = 3\n", &info).unwrap();
    w.sync().unwrap();
    let lm = cahl_engine::load::load_model(model).unwrap();
    for step in 1..=2u64 {
        let mut m = Model::new(&lm.config, &lm.weights, DType::F32, &Device::Cpu).unwrap();
        let ck = dir.join(format!("checkpoints/step-{step}"));
        for (i, name) in ["planner", "executor"].into_iter().enumerate() {
            let cfg = LoraConfig {
                r: 2,
                lora_alpha: 4.0,
                ..Default::default()
            };
            m.add_adapter(name, &cfg, 10 * step + i as u64).unwrap();
            m.adapter(name)
                .unwrap()
                .save_peft(&ck.join(name), &model.display().to_string())
                .unwrap();
        }
    }
}

#[test]
fn cases_run_against_two_checkpoints() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.gguf");
    let mut parts = load_support::tiny_gguf("llama");
    parts.set_md("llama.context_length", Value::U32(8192));
    parts.write(&model);
    let session = d.path().join("run");
    write_session(&session, &model);

    // No cases yet: a clear error naming how to make one.
    let out = bin().args(["cases", "run"]).arg(&session).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no cases yet"), "{err}");

    let task = generate_tasks(Split::Train, 10, 0)
        .unwrap()
        .into_iter()
        .find(|t| t.gold_plan.len() == 2)
        .unwrap();
    for expect in [Expect::Solves, Expect::Fails] {
        save_case(
            &session,
            &CaseRecord {
                task: debug_task_of(&task),
                plan: task.gold_plan.clone(),
                seed: 5,
                samples: 10,
                expect,
                note: "gold plan".into(),
                ..CaseRecord::default()
            },
        )
        .unwrap();
    }
    let out = bin()
        .args(["cases", "list"])
        .arg(&session)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        list.contains("| case-001 |") && list.contains("| fails |"),
        "{list}"
    );

    let run = |args: &[&str]| {
        bin()
            .args(["cases", "run"])
            .arg(&session)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--checkpoint",
        "1",
        "--checkpoint",
        "step-2",
        "--samples",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| case | task | expects | step-1 | step-2 |"),
        "{stdout}"
    );
    let report = CasesReport::read(&session)
        .unwrap()
        .expect("report.json written");
    assert_eq!(report.checkpoints, vec!["step-1", "step-2"]);
    assert_eq!(report.rows.len(), 2);
    for row in &report.rows {
        assert_eq!(row.cells.len(), 2);
        for c in &row.cells {
            assert_eq!(c.error, None);
            assert_eq!(c.runs, 2);
            assert!(c.planner_reward.is_finite());
        }
    }
    assert!(session.join("cases/report.md").is_file());
    // A random model solves nothing: "fails" passes and "solves" does not, so --check fails.
    assert!(report.rows[1]
        .cells
        .iter()
        .all(|c| c.pass && c.successes == 0));
    assert!(report.rows[0].cells.iter().all(|c| !c.pass));
    let out = run(&["--checkpoint", "step-2", "--samples", "1", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("do not pass at step-2: case-001"), "{err}");

    // A checkpoint that is not there is named, with the ones that are.
    let out = bin()
        .args(["cases", "run"])
        .arg(&session)
        .args(["--checkpoint", "7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no checkpoints/step-7") && err.contains("step-1, step-2"),
        "{err}"
    );
}

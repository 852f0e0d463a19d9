//! A real `kill -9` of a writing process, followed by resume.
#![cfg(unix)]

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cahl_sessions::layout::METRICS_FILE;
use cahl_sessions::*;
use common::*;

const DIR_ENV: &str = "CAHL_SESSIONS_KILL9_DIR";

fn big_trajectory(step: u64, i: usize) -> TrajectoryRecord {
    let mut t = trajectory(step, i);
    // ~1 MiB lines make it likely that SIGKILL lands in the middle of a write.
    t.plans[0].steps[0].prompt = Some("p".repeat(1 << 20));
    t
}

/// Child process body: appends steps forever (bounded), checkpointing every 3 steps.
#[test]
#[ignore = "run as a child process by kill9_during_appends_then_resume"]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let (mut w, _) = SessionWriter::resume(&dir).unwrap();
    let start = Instant::now();
    for step in 1..=10_000u64 {
        for i in 0..2 {
            w.append_trajectory(&big_trajectory(step, i)).unwrap();
        }
        w.append_metrics(&metrics(step)).unwrap();
        if step % 3 == 0 {
            let ck = w.checkpoint_dir(step).unwrap();
            fs::write(ck.planner_dir().join("adapter_model.safetensors"), b"w").unwrap();
            w.commit_checkpoint(ck).unwrap();
        }
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
}

#[test]
fn kill9_during_appends_then_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("run");
    SessionWriter::create(&dir, CONFIG, &run_info())
        .unwrap()
        .close()
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill9_child_writer", "--exact", "--ignored", "--nocapture"])
        .env(DIR_ENV, &dir)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = fs::read(dir.join(METRICS_FILE))
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        if lines >= 7 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut w, report) = SessionWriter::resume(&dir).unwrap();
    let ck = report
        .latest_checkpoint
        .clone()
        .expect("child wrote checkpoints before being killed");
    assert!(ck.step >= 6 && ck.step % 3 == 0, "{ck:?}");
    w.truncate_after_step(ck.step).unwrap();
    for i in 0..2 {
        w.append_trajectory(&big_trajectory(ck.step + 1, i))
            .unwrap();
    }
    w.append_metrics(&metrics(ck.step + 1)).unwrap();
    w.close().unwrap();

    let r = SessionReader::open(&dir).unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    let steps: Vec<u64> = r.metrics().iter().map(|m| m.step).collect();
    assert_eq!(steps, (1..=ck.step + 1).collect::<Vec<_>>());
    let tsteps: Vec<u64> = r.entries().iter().map(|e| e.summary.step).collect();
    let expected: Vec<u64> = (1..=ck.step + 1).flat_map(|s| [s, s]).collect();
    assert_eq!(tsteps, expected);
    assert_eq!(
        r.trajectory(r.entries().len() - 1).unwrap(),
        big_trajectory(ck.step + 1, 1)
    );
    // No uncommitted checkpoint directory survives the resume.
    let hidden = fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(hidden, 0);
}

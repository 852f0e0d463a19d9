//! Resume repairs damaged JSONL files and says exactly what it did; intact checkpoints.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use cahl_sessions::layout::{METRICS_FILE, TRAJECTORIES_FILE};
use cahl_sessions::*;
use common::*;

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn line_of<T: serde::Serialize>(record: &T) -> String {
    serde_json::to_string(record).unwrap() + "\n"
}

/// A session with steps `1..=n` (two trajectories and one metrics line each) and a
/// checkpoint at `ck`.
fn session(dir: &Path, n: u64, ck: u64) {
    let mut w = SessionWriter::create(dir, CONFIG, &run_info()).unwrap();
    for s in 1..=n {
        for i in 0..2 {
            w.append_trajectory(&trajectory(s, i)).unwrap();
        }
        w.append_metrics(&metrics(s)).unwrap();
        if s == ck {
            let tmp = w.checkpoint_dir(s).unwrap();
            w.commit_checkpoint(tmp).unwrap();
        }
    }
    w.close().unwrap();
}

fn reader_is_clean(dir: &Path) {
    let r = SessionReader::open(dir).unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
}

#[test]
fn an_intact_session_reports_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    session(&dir, 4, 4);
    let (_w, report) = SessionWriter::resume(&dir).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.to_string(), "");
    assert_eq!(report.metrics_steps, vec![1, 2, 3, 4]);
    assert_eq!(report.trajectory_steps, vec![1, 2, 3, 4]);
    assert!(report.lost_steps(4).is_empty());
    assert_eq!(report.lost_steps(6), vec![5, 6]);
}

#[test]
fn torn_tail_of_a_committed_step_is_cut_and_reported_as_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    session(&dir, 29, 0);
    // Step 30: trajectories complete, the metrics line torn, then the checkpoint (as after a
    // disk that dropped the end of the file).
    let mut w = SessionWriter::resume(&dir).unwrap().0;
    for i in 0..2 {
        w.append_trajectory(&trajectory(30, i)).unwrap();
    }
    let tmpck = w.checkpoint_dir(30).unwrap();
    w.commit_checkpoint(tmpck).unwrap();
    drop(w);
    let metrics_path = dir.join(METRICS_FILE);
    let line = line_of(&metrics(30));
    append_raw(&metrics_path, &line.as_bytes()[..40]);

    let (_w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(report.repairs.len(), 1);
    let r = &report.repairs[0];
    assert_eq!(r.file, metrics_path);
    assert_eq!(r.kind, RepairKind::TornTail);
    assert_eq!(r.lines, vec![(30, 30)]);
    assert_eq!(r.bytes_cut, 40);
    assert_eq!(report.last_metrics_step(), Some(29));
    assert_eq!(report.last_trajectory_step(), Some(30));
    assert_eq!(report.latest_checkpoint.as_ref().unwrap().step, 30);
    assert_eq!(report.lost_steps(30), vec![30]);
    assert!(report.lost_steps(29).is_empty());
    let msgs = report.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].contains("metrics.jsonl") && msgs[0].contains("line 30, 40 bytes"));
    assert!(
        msgs[1].contains("metrics.jsonl has no record of step 30") && msgs[1].contains("step-30"),
        "{}",
        msgs[1]
    );
    assert!(!msgs[1].contains("trajectories.jsonl"));
    assert_eq!(report.to_string(), msgs.join("\n"));
    reader_is_clean(&dir);
}

#[test]
fn garbage_lines_in_the_middle_are_removed_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let metrics_path = dir.join(METRICS_FILE);
    SessionWriter::create(&dir, CONFIG, &run_info())
        .unwrap()
        .close()
        .unwrap();
    // Lines: 1 step 1, 2 garbage, 3 step 2, 4 garbage (replaces step 3), 5 garbage,
    // 6 step 4, 7 torn.
    let mut text = String::new();
    text += &line_of(&metrics(1));
    text += "not json at all\n";
    text += &line_of(&metrics(2));
    text += "{\"step\": 3, \"planner_rew\n";
    text += "[1, 2]\n";
    text += &line_of(&metrics(4));
    text += "{\"step\": 5";
    fs::write(&metrics_path, &text).unwrap();
    let (mut w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(report.repairs.len(), 2, "{report}");
    let g = &report.repairs[0];
    assert_eq!(g.kind, RepairKind::GarbageLines);
    assert_eq!(g.lines, vec![(2, 2), (4, 5)]);
    assert_eq!(g.line_count(), 3);
    assert_eq!(
        g.bytes_cut,
        ("not json at all\n".len() + "{\"step\": 3, \"planner_rew\n".len() + "[1, 2]\n".len())
            as u64
    );
    assert!(g.to_string().contains("lines 2, 4-5"), "{g}");
    let t = &report.repairs[1];
    assert_eq!(t.kind, RepairKind::TornTail);
    assert_eq!(t.lines, vec![(7, 7)]);
    let expected = line_of(&metrics(1)) + &line_of(&metrics(2)) + &line_of(&metrics(4));
    assert_eq!(fs::read_to_string(&metrics_path).unwrap(), expected);
    assert_eq!(report.metrics_steps, vec![1, 2, 4]);
    // Step 3's record was the garbage line: lost.
    // No trajectories were written at all, so every step lacks them.
    assert_eq!(report.lost_steps(4), vec![1, 2, 3, 4]);
    assert!(report
        .lost_steps_message(4)
        .unwrap()
        .contains("metrics.jsonl has no record of step 3"));
    // The writer appends after the repaired content and the reader sees no problem.
    w.append_metrics(&metrics(5)).unwrap();
    w.close().unwrap();
    let r = SessionReader::open(&dir).unwrap();
    assert!(r.problems().iter().all(|p| p.file != metrics_path));
    let steps: Vec<u64> = r.metrics().iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![1, 2, 4, 5]);
}

#[test]
fn an_all_garbage_file_is_backed_up_then_emptied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    session(&dir, 3, 3);
    let traj = dir.join(TRAJECTORIES_FILE);
    let garbage = b"\0\0\0\0\nnot json\n\0\0".to_vec();
    fs::write(&traj, &garbage).unwrap();

    let (_w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(report.repairs.len(), 1, "{report}");
    let r = &report.repairs[0];
    assert_eq!(r.kind, RepairKind::Unreadable);
    assert_eq!(r.lines, vec![(1, 3)]);
    assert_eq!(r.bytes_cut, garbage.len() as u64);
    let backup: PathBuf = dir.join("trajectories.jsonl.corrupt-1");
    assert_eq!(r.backup.as_ref(), Some(&backup));
    assert_eq!(fs::read(&backup).unwrap(), garbage);
    assert_eq!(fs::metadata(&traj).unwrap().len(), 0);
    assert!(
        r.to_string().contains("trajectories.jsonl.corrupt-1"),
        "{r}"
    );
    assert!(report.trajectory_steps.is_empty());
    assert_eq!(report.lost_steps(3), vec![1, 2, 3]);
    let msgs = report.messages();
    assert!(msgs
        .last()
        .unwrap()
        .contains("trajectories.jsonl has no record of steps 1-3"));

    // A second unreadable file gets the next free name; the first copy is kept.
    fs::write(&traj, b"zzz\n").unwrap();
    let (_w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(
        report.repairs[0].backup.as_deref(),
        Some(dir.join("trajectories.jsonl.corrupt-2").as_path())
    );
    assert_eq!(fs::read(&backup).unwrap(), garbage);
}

#[test]
fn records_missing_for_a_committed_step_are_reported_without_any_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    // Step 0 is the baseline evaluation (metrics only); step 2's trajectories never reached
    // the file (e.g. a failed write).
    w.append_metrics(&metrics(0)).unwrap();
    for s in 1..=3 {
        if s != 2 {
            w.append_trajectory(&trajectory(s, 0)).unwrap();
        }
        w.append_metrics(&metrics(s)).unwrap();
    }
    let tmpck = w.checkpoint_dir(3).unwrap();
    w.commit_checkpoint(tmpck).unwrap();
    w.close().unwrap();
    let (_w, report) = SessionWriter::resume(&dir).unwrap();
    assert!(report.repairs.is_empty());
    assert_eq!(report.metrics_steps, vec![0, 1, 2, 3]);
    assert_eq!(report.lost_steps(3), vec![2]);
    assert!(!report.is_clean());
    assert_eq!(report.messages().len(), 1);
    assert!(report.messages()[0].contains("trajectories.jsonl has no record of step 2"));
}

/// A minimal valid safetensors file: one F32 tensor of 2 values.
fn safetensors_bytes() -> Vec<u8> {
    let header = serde_json::json!({
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    })
    .to_string();
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&[0u8; 8]);
    b
}

fn checkpoint_with_adapters(w: &mut SessionWriter, step: u64) {
    let ck = w.checkpoint_dir(step).unwrap();
    for d in [ck.planner_dir(), ck.executor_dir()] {
        fs::write(d.join("adapter_config.json"), b"{\"r\": 8}").unwrap();
        fs::write(d.join("adapter_model.safetensors"), safetensors_bytes()).unwrap();
    }
    w.commit_checkpoint(ck).unwrap();
}

#[test]
fn intact_checkpoints_skip_a_corrupt_newest_one() {
    type Damage = fn(&Path);
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "cut weights",
            |d| {
                let p = d.join("executor/adapter_model.safetensors");
                let b = fs::read(&p).unwrap();
                fs::write(&p, &b[..b.len() - 3]).unwrap();
            },
            "executor/adapter_model.safetensors",
        ),
        (
            "empty weights",
            |d| fs::write(d.join("planner/adapter_model.safetensors"), b"").unwrap(),
            "empty file",
        ),
        (
            "header length too large",
            |d| {
                let p = d.join("planner/adapter_model.safetensors");
                let mut b = fs::read(&p).unwrap();
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                fs::write(&p, b).unwrap();
            },
            "header length",
        ),
        (
            "header not JSON",
            |d| {
                let p = d.join("planner/adapter_model.safetensors");
                let mut b = fs::read(&p).unwrap();
                b[8] = b'#';
                fs::write(&p, b).unwrap();
            },
            "not a JSON object",
        ),
        (
            "config not JSON",
            |d| fs::write(d.join("executor/adapter_config.json"), b"{\"r\":").unwrap(),
            "adapter_config.json: invalid JSON",
        ),
        (
            "adapter folder missing",
            |d| fs::remove_dir_all(d.join("executor")).unwrap(),
            "executor/adapter_config.json",
        ),
    ];
    for (what, damage, expect) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
        for step in [2, 4, 6] {
            checkpoint_with_adapters(&mut w, step);
        }
        w.close().unwrap();
        let all = intact_checkpoints(&dir).unwrap();
        let steps: Vec<u64> = all.iter().map(|c| c.step).collect();
        assert_eq!(steps, vec![6, 4, 2], "newest first");

        damage(&dir.join("checkpoints/step-6"));
        let steps: Vec<u64> = intact_checkpoints(&dir)
            .unwrap()
            .iter()
            .map(|c| c.step)
            .collect();
        assert_eq!(steps, vec![4, 2], "{what}");
        let newest = latest_checkpoint(&dir).unwrap().unwrap();
        assert_eq!(newest.step, 6);
        let why = checkpoint_defect(&dir, &newest).expect(what);
        assert!(why.contains(expect), "{what}: {why}");
        assert!(checkpoint_defect(&dir, &all[1]).is_none());
    }
}

//! Writer: creation, torn-tail repair on resume, truncation, checkpoints.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use cahl_sessions::layout::{CHECKPOINTS_DIR, METRICS_FILE, TRAJECTORIES_FILE};
use cahl_sessions::*;
use common::*;

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn write_steps(w: &mut SessionWriter, steps: std::ops::RangeInclusive<u64>) {
    for s in steps {
        for i in 0..2 {
            w.append_trajectory(&trajectory(s, i)).unwrap();
        }
        w.append_metrics(&metrics(s)).unwrap();
    }
}

#[test]
fn create_writes_files_and_refuses_to_clobber() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    assert_eq!(fs::read_to_string(dir.join("config.toml")).unwrap(), CONFIG);
    let info: RunInfo =
        serde_json::from_str(&fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(&info, w.run_info());
    assert!(dir.join(METRICS_FILE).is_file());
    assert!(dir.join(TRAJECTORIES_FILE).is_file());
    assert!(dir.join(CHECKPOINTS_DIR).is_dir());
    assert_eq!(w.log_path(), dir.join("train.log"));
    assert_eq!(w.config_toml().unwrap(), CONFIG);
    // No temp files left behind by the atomic writes.
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    w.close().unwrap();

    let again = SessionWriter::create(&dir, CONFIG, &run_info());
    assert!(matches!(again, Err(SessionError::AlreadyExists { .. })));

    let bad = SessionWriter::create(tmp.path().join("bad"), "[train\nsteps=", &run_info());
    assert!(matches!(bad, Err(SessionError::Toml { .. })));
    assert!(!tmp.path().join("bad").join("config.toml").exists());
}

#[test]
fn resume_cuts_torn_tail_and_new_appends_are_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    write_steps(&mut w, 1..=3);
    drop(w);
    let metrics_path = dir.join(METRICS_FILE);
    let traj_path = dir.join(TRAJECTORIES_FILE);
    let good_metrics_len = fs::metadata(&metrics_path).unwrap().len();
    let good_traj_len = fs::metadata(&traj_path).unwrap().len();
    // Simulate kill -9 in the middle of a write: half a line in each file, and in the
    // trajectories file also a garbled (zero-filled) complete line before it.
    let line = serde_json::to_string(&metrics(4)).unwrap();
    append_raw(&metrics_path, &line.as_bytes()[..line.len() / 2]);
    append_raw(&traj_path, b"\0\0\0\0\0\0\n{\"step\": 4, \"task\": {\"id\"");

    let (mut w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(report.repairs.len(), 2);
    let m = report
        .repairs
        .iter()
        .find(|r| r.file == metrics_path)
        .unwrap();
    assert_eq!(m.kind, RepairKind::TornTail);
    assert_eq!(m.bytes_cut, (line.len() / 2) as u64);
    assert_eq!(m.lines, vec![(4, 4)]);
    let t = report.repairs.iter().find(|r| r.file == traj_path).unwrap();
    assert_eq!(t.kind, RepairKind::TornTail);
    assert_eq!(t.lines, vec![(7, 8)]);
    assert_eq!(report.last_metrics_step(), Some(3));
    assert_eq!(report.last_trajectory_step(), Some(3));
    assert_eq!(fs::metadata(&metrics_path).unwrap().len(), good_metrics_len);
    assert_eq!(fs::metadata(&traj_path).unwrap().len(), good_traj_len);
    assert_eq!(report.latest_checkpoint, None);

    write_steps(&mut w, 4..=4);
    w.close().unwrap();
    let r = SessionReader::open(&dir).unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    let steps: Vec<u64> = r.metrics().iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert_eq!(r.metrics()[3], metrics(4));
    assert_eq!(r.entries().len(), 8);
    assert_eq!(r.trajectory(7).unwrap(), trajectory(4, 1));
}

#[test]
fn resume_without_run_json_is_not_a_session() {
    let tmp = tempfile::tempdir().unwrap();
    let res = SessionWriter::resume(tmp.path());
    assert!(matches!(res, Err(SessionError::NotASession { .. })));
}

#[test]
fn truncate_after_step_makes_resumed_files_identical_to_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    // Uninterrupted run: steps 1..=5.
    let full = tmp.path().join("full");
    let mut w = SessionWriter::create(&full, CONFIG, &run_info()).unwrap();
    write_steps(&mut w, 1..=5);
    w.close().unwrap();

    // Interrupted run: checkpoint at 3, crash during step 5, resume from 3.
    let dir = tmp.path().join("resumed");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    write_steps(&mut w, 1..=3);
    let ck = w.checkpoint_dir(3).unwrap();
    fs::write(ck.planner_dir().join("adapter_model.safetensors"), b"p").unwrap();
    w.commit_checkpoint(ck).unwrap();
    write_steps(&mut w, 4..=4);
    w.append_trajectory(&trajectory(5, 0)).unwrap();
    drop(w);
    append_raw(&dir.join(TRAJECTORIES_FILE), b"{\"step\":5,\"tas");

    let (mut w, report) = SessionWriter::resume(&dir).unwrap();
    let ck = report.latest_checkpoint.clone().unwrap();
    assert_eq!(ck.step, 3);
    let t = w.truncate_after_step(ck.step).unwrap();
    assert_eq!(t.metrics_dropped, 1);
    assert_eq!(t.trajectories_dropped, 3);
    write_steps(&mut w, 4..=5);
    w.close().unwrap();

    for name in [METRICS_FILE, TRAJECTORIES_FILE] {
        assert_eq!(
            fs::read(dir.join(name)).unwrap(),
            fs::read(full.join(name)).unwrap(),
            "{name} differs from the uninterrupted run"
        );
    }
}

#[test]
fn truncate_after_step_handles_non_monotone_and_stepless_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    for s in [1, 2, 5, 3] {
        w.append_metrics(&metrics(s)).unwrap();
    }
    w.close().unwrap();
    append_raw(&dir.join(METRICS_FILE), b"{\"note\":\"no step\"}\n");
    let (mut w, _) = SessionWriter::resume(&dir).unwrap();
    let t = w.truncate_after_step(3).unwrap();
    assert_eq!(t.metrics_dropped, 1);
    assert_eq!(t.trajectories_dropped, 0);
    w.append_metrics(&metrics(4)).unwrap();
    w.close().unwrap();
    let r = SessionReader::open(&dir).unwrap();
    let steps: Vec<u64> = r.metrics().iter().map(|m| m.step).collect();
    // The stepless line reads as step 0 (default) and was kept.
    assert_eq!(steps, vec![1, 2, 3, 0, 4]);
    assert!(r.problems().is_empty(), "{:?}", r.problems());
}

#[test]
fn clear_records_empties_files_for_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    write_steps(&mut w, 1..=2);
    w.clear_records().unwrap();
    write_steps(&mut w, 1..=1);
    w.close().unwrap();
    let r = SessionReader::open(&dir).unwrap();
    assert_eq!(r.metrics().len(), 1);
    assert_eq!(r.entries().len(), 2);
}

#[test]
fn checkpoint_is_invisible_until_commit_and_commit_is_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    write_steps(&mut w, 1..=2);
    let ck = w.checkpoint_dir(2).unwrap();
    assert!(ck.path().ends_with("checkpoints/.tmp-step-2"));
    fs::write(ck.planner_dir().join("adapter_config.json"), b"{}").unwrap();
    fs::write(ck.executor_dir().join("adapter_config.json"), b"{}").unwrap();
    fs::write(ck.path().join("rng.json"), b"{\"state\":[1,2]}").unwrap();
    assert!(w.list_checkpoints().unwrap().is_empty());
    assert_eq!(w.latest_checkpoint().unwrap(), None);
    let tmp_path = ck.path().to_path_buf();

    let rec = w.commit_checkpoint(ck).unwrap();
    assert_eq!(rec.step, 2);
    assert_eq!(rec.path, "checkpoints/step-2");
    assert!(!tmp_path.exists());
    let final_dir = dir.join(&rec.path);
    assert!(final_dir.join("planner/adapter_config.json").is_file());
    assert!(final_dir.join("executor/adapter_config.json").is_file());
    assert_eq!(
        fs::read(final_dir.join("rng.json")).unwrap(),
        b"{\"state\":[1,2]}"
    );
    let meta: CheckpointRecord =
        serde_json::from_str(&fs::read_to_string(final_dir.join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(meta, rec);
    assert_eq!(w.latest_checkpoint().unwrap(), Some(rec.clone()));

    // A later checkpoint and a replacement of an existing one.
    let ck = w.checkpoint_dir(10).unwrap();
    w.commit_checkpoint(ck).unwrap();
    let ck = w.checkpoint_dir(2).unwrap();
    fs::write(ck.path().join("marker"), b"new").unwrap();
    w.commit_checkpoint(ck).unwrap();
    let steps: Vec<u64> = w
        .list_checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, vec![2, 10], "numeric order, no duplicates");
    assert!(final_dir.join("marker").is_file());
    assert!(
        !final_dir.join("rng.json").exists(),
        "old contents replaced"
    );
    let leftovers: Vec<_> = fs::read_dir(dir.join(CHECKPOINTS_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn crashed_checkpoint_leftovers_are_ignored_and_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    let ck = w.checkpoint_dir(1).unwrap();
    w.commit_checkpoint(ck).unwrap();
    // Crash while filling step 5: the temp dir stays (forget skips the cleanup in Drop).
    let ck = w.checkpoint_dir(5).unwrap();
    fs::write(ck.planner_dir().join("adapter_model.safetensors"), b"half").unwrap();
    let tmp5 = ck.path().to_path_buf();
    std::mem::forget(ck);
    // Crash in the middle of replacing step 7: only `.old-step-7` exists.
    fs::create_dir_all(dir.join("checkpoints/.old-step-7/planner")).unwrap();
    // Not checkpoint names: ignored.
    fs::create_dir_all(dir.join("checkpoints/step-x")).unwrap();
    fs::write(dir.join("checkpoints/step-9"), b"a file, not a dir").unwrap();
    // Interrupted atomic write of run.json.
    fs::write(dir.join(".run.json.tmp"), b"{").unwrap();
    drop(w);

    let steps: Vec<u64> = list_checkpoints(&dir)
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, vec![1], "temp and old dirs are not checkpoints");
    let r = SessionReader::open(&dir).unwrap();
    assert_eq!(r.checkpoints().len(), 1);

    let (_w, report) = SessionWriter::resume(&dir).unwrap();
    assert!(!tmp5.exists());
    assert!(report.cleaned.contains(&tmp5));
    assert!(!dir.join(".run.json.tmp").exists());
    let steps: Vec<u64> = list_checkpoints(&dir)
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(
        steps,
        vec![1, 7],
        "an orphaned replaced checkpoint is restored"
    );
    assert_eq!(report.latest_checkpoint.map(|c| c.step), Some(7));
}

#[test]
fn dropping_an_uncommitted_checkpoint_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    let ck = w.checkpoint_dir(3).unwrap();
    let p = ck.path().to_path_buf();
    assert!(p.is_dir());
    drop(ck);
    assert!(!p.exists());
    let ck = w.checkpoint_dir(4).unwrap();
    let p = ck.path().to_path_buf();
    ck.abort().unwrap();
    assert!(!p.exists());
    assert!(w.list_checkpoints().unwrap().is_empty());
}

#[test]
fn new_session_dirs_are_timestamped_and_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("sessions");
    let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(session_dir_name(t), "run-20231114-221320");
    let a = new_session_dir_at(&base, t).unwrap();
    let b = new_session_dir_at(&base, t).unwrap();
    let c = new_session_dir_at(&base, t).unwrap();
    assert_eq!(a, base.join("run-20231114-221320"));
    assert_eq!(b, base.join("run-20231114-221320-2"));
    assert_eq!(c, base.join("run-20231114-221320-3"));
    assert!(a.is_dir() && b.is_dir() && c.is_dir());
    let now = new_session_dir(&base).unwrap();
    let name = now.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("run-") && name.len() >= 19, "{name}");
    // The new directory is usable by the writer.
    SessionWriter::create(&now, CONFIG, &run_info()).unwrap();
}

#[test]
fn repair_and_truncate_work_across_large_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    // Lines much larger than the 64 KiB backward-scan chunk.
    let big = |step: u64| {
        let mut t = trajectory(step, 0);
        t.plans[0].steps[0].prompt = Some("x".repeat(150_000 + step as usize));
        t
    };
    for s in 1..=3 {
        w.append_trajectory(&big(s)).unwrap();
    }
    drop(w);
    let path = dir.join(TRAJECTORIES_FILE);
    let good_len = fs::metadata(&path).unwrap().len();
    let torn = serde_json::to_string(&big(4)).unwrap();
    append_raw(&path, &torn.as_bytes()[..torn.len() - 10]);

    let (mut w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(report.repairs.len(), 1);
    assert_eq!(report.repairs[0].bytes_cut, (torn.len() - 10) as u64);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    let t = w.truncate_after_step(2).unwrap();
    assert_eq!(t.trajectories_dropped, 1);
    w.append_trajectory(&big(3)).unwrap();
    w.close().unwrap();
    let r = SessionReader::open(&dir).unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    let (all, problems) = r.load_trajectories();
    assert!(problems.is_empty());
    assert_eq!(all, vec![big(1), big(2), big(3)]);
}

#[test]
fn a_file_with_only_a_torn_line_becomes_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    SessionWriter::create(&dir, CONFIG, &run_info())
        .unwrap()
        .close()
        .unwrap();
    fs::write(dir.join(METRICS_FILE), b"{\"step\":1,\"planner_rew").unwrap();
    let (mut w, report) = SessionWriter::resume(&dir).unwrap();
    assert_eq!(report.repairs[0].kind, RepairKind::TornTail);
    assert_eq!(report.repairs[0].lines, vec![(1, 1)]);
    assert!(report.repairs[0].backup.is_none());
    assert_eq!(fs::metadata(dir.join(METRICS_FILE)).unwrap().len(), 0);
    w.append_metrics(&metrics(1)).unwrap();
    w.close().unwrap();
    let r = SessionReader::open(&dir).unwrap();
    assert_eq!(r.metrics(), &[metrics(1)]);
    assert!(r.problems().is_empty(), "{:?}", r.problems());
}

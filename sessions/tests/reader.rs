//! Reader: tolerance to corruption, bare files, lazy index, live polling.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use cahl_sessions::layout::{METRICS_FILE, TRAJECTORIES_FILE};
use cahl_sessions::*;
use common::*;

fn line<T: serde::Serialize>(r: &T) -> String {
    serde_json::to_string(r).unwrap() + "\n"
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn corrupt_middle_lines_are_reported_and_good_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    SessionWriter::create(&dir, CONFIG, &run_info())
        .unwrap()
        .close()
        .unwrap();
    let mut m = String::new();
    m += &line(&metrics(1)); // line 1
    m += "{\"step\": 2, \"planner_reward\": 0.5,,}\n"; // 2: bad JSON
    m += &line(&metrics(3)); // 3
    m += "[1, 2, 3]\n"; // 4: not an object
    m += "{\"step\": \"four\"}\n"; // 5: wrong type
    m += "\n"; // 6: blank, skipped silently
    m += &line(&metrics(7)); // 7
    fs::write(dir.join(METRICS_FILE), m).unwrap();
    let mut t = String::new();
    t += &line(&trajectory(1, 0)); // 1
    t += "garbage\n"; // 2
    t += &line(&trajectory(1, 1)); // 3
    t += "{\"step\": 2, \"plans\": 5}\n"; // 4: valid JSON, summary ok, full schema wrong
    t += &line(&trajectory(2, 0)); // 5
    fs::write(dir.join(TRAJECTORIES_FILE), t).unwrap();

    let r = SessionReader::open(&dir).unwrap();
    let steps: Vec<u64> = r.metrics().iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![1, 3, 7]);
    assert_eq!(r.metrics()[1], metrics(3));
    let metric_problems: Vec<(usize, ProblemKind)> = r
        .problems()
        .iter()
        .filter(|p| p.file.ends_with(METRICS_FILE))
        .map(|p| (p.line.unwrap(), p.kind))
        .collect();
    assert_eq!(
        metric_problems,
        vec![
            (2, ProblemKind::Corrupt),
            (4, ProblemKind::Corrupt),
            (5, ProblemKind::Corrupt)
        ]
    );
    let p5 = r.problems().iter().find(|p| p.line == Some(5)).unwrap();
    assert!(p5.to_string().contains("metrics.jsonl:5:"), "{p5}");
    assert!(!p5.message.contains("line 1"), "{}", p5.message);

    // Trajectories: line 2 is not indexed; line 4 is indexed but fails to load fully.
    let lines: Vec<usize> = r.entries().iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 3, 4, 5]);
    assert_eq!(r.trajectory(0).unwrap(), trajectory(1, 0));
    assert_eq!(r.trajectory(3).unwrap(), trajectory(2, 0));
    let err = r.trajectory(2).unwrap_err();
    assert_eq!((err.line, err.kind), (Some(4), ProblemKind::Corrupt));
    assert!(r.trajectory(99).is_err());
    let (all, problems) = r.load_trajectories();
    assert_eq!(
        all,
        vec![trajectory(1, 0), trajectory(1, 1), trajectory(2, 0)]
    );
    assert_eq!(problems.len(), 1);
    assert!(r
        .problems()
        .iter()
        .any(|p| p.file.ends_with(TRAJECTORIES_FILE) && p.line == Some(2)));
}

#[test]
fn bare_trajectories_file_opens_with_lazy_index() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("trajectories.jsonl");
    let recs: Vec<TrajectoryRecord> = (1..=4)
        .flat_map(|s| (0..3).map(move |i| trajectory(s, i)))
        .collect();
    let text: String = recs.iter().map(line).collect();
    fs::write(&path, &text).unwrap();

    let r = SessionReader::open(&path).unwrap();
    assert_eq!(r.kind(), SourceKind::TrajectoriesFile);
    assert_eq!(r.log_path(), None);
    assert_eq!(r.trajectories_path(), Some(path.as_path()));
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    assert!(r.metrics().is_empty() && r.config().is_none() && r.run_info().is_none());
    assert_eq!(r.entries().len(), 12);
    for (i, e) in r.entries().iter().enumerate() {
        assert_eq!(e.summary, TrajectorySummary::from(&recs[i]));
        // The offsets point exactly at the line.
        let bytes = &text.as_bytes()[e.offset as usize..(e.offset + e.len) as usize];
        assert_eq!(bytes, line(&recs[i]).trim_end().as_bytes());
    }
    assert_eq!(r.trajectory(10).unwrap(), recs[10]);
    assert!(r.entries()[4].summary.misaligned);

    // A bare metrics file is recognized by name.
    let mpath = tmp.path().join("metrics.jsonl");
    fs::write(&mpath, line(&metrics(1)) + &line(&metrics(2))).unwrap();
    let r = SessionReader::open(&mpath).unwrap();
    assert_eq!(r.kind(), SourceKind::MetricsFile);
    assert_eq!(r.metrics(), &[metrics(1), metrics(2)]);
    assert!(r.entries().is_empty());
}

#[test]
fn missing_files_and_torn_tail_are_problems_not_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(SessionReader::open(tmp.path().join("nope")).is_err());

    // An empty directory opens, with one problem per missing file.
    let r = SessionReader::open(tmp.path()).unwrap();
    assert_eq!(r.kind(), SourceKind::SessionDir);
    let missing = r
        .problems()
        .iter()
        .filter(|p| p.kind == ProblemKind::MissingFile)
        .count();
    assert_eq!(missing, 4, "{:?}", r.problems());

    // Corrupt run.json and config.toml, torn trajectories tail.
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    w.append_metrics(&metrics(1)).unwrap();
    w.append_trajectory(&trajectory(1, 0)).unwrap();
    w.close().unwrap();
    fs::write(dir.join("run.json"), "{\"model\": ").unwrap();
    fs::write(dir.join("config.toml"), "[unclosed").unwrap();
    let half = line(&trajectory(1, 1));
    append_raw(&dir.join(TRAJECTORIES_FILE), &half.as_bytes()[..100]);
    let r = SessionReader::open(&dir).unwrap();
    assert!(r.run_info().is_none());
    assert!(r.config().is_none());
    assert_eq!(r.config_toml(), Some("[unclosed"));
    assert_eq!(r.metrics().len(), 1);
    assert_eq!(r.entries().len(), 1);
    let torn = r
        .problems()
        .iter()
        .find(|p| p.kind == ProblemKind::TornTail)
        .unwrap();
    assert_eq!(torn.line, Some(2));
    assert!(torn.message.contains("100 bytes"));
    assert_eq!(
        r.problems()
            .iter()
            .filter(|p| p.kind == ProblemKind::Corrupt)
            .count(),
        2
    );
}

#[test]
fn poll_new_returns_only_new_complete_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    w.append_metrics(&metrics(1)).unwrap();
    w.append_trajectory(&trajectory(1, 0)).unwrap();

    let mut r = SessionReader::open(&dir).unwrap();
    assert!(r.problems().is_empty(), "{:?}", r.problems());
    assert_eq!(r.metrics().len(), 1);
    assert!(r.poll_new().is_empty());

    w.append_trajectory(&trajectory(2, 0)).unwrap();
    w.append_trajectory(&trajectory(2, 1)).unwrap();
    w.append_metrics(&metrics(2)).unwrap();
    let ck = w.checkpoint_dir(2).unwrap();
    w.commit_checkpoint(ck).unwrap();
    let up = r.poll_new();
    assert_eq!(up.metrics, vec![metrics(2)]);
    assert_eq!(up.new_entries, 1..3);
    assert_eq!(
        up.trajectories,
        vec![(1, trajectory(2, 0)), (2, trajectory(2, 1))]
    );
    assert_eq!(up.checkpoints.len(), 1);
    assert!(!up.metrics_reset && !up.trajectories_reset);
    assert_eq!(r.metrics().len(), 2);
    assert_eq!(r.entries().len(), 3);

    // A partial line is not returned until it is complete.
    let m3 = line(&metrics(3));
    let (a, b) = m3.as_bytes().split_at(m3.len() / 2);
    append_raw(&dir.join(METRICS_FILE), a);
    let up = r.poll_new();
    assert!(up.metrics.is_empty());
    assert!(
        up.problems.is_empty(),
        "a line being written is not a problem"
    );
    append_raw(&dir.join(METRICS_FILE), b);
    let up = r.poll_new();
    assert_eq!(up.metrics, vec![metrics(3)]);
    assert!(r.poll_new().is_empty());
    drop(w);

    // Resume truncates: the reader notices and re-reads from the start.
    let (mut w, _) = SessionWriter::resume(&dir).unwrap();
    w.truncate_after_step(1).unwrap();
    w.append_metrics(&metrics(2)).unwrap();
    let up = r.poll_new();
    assert!(up.metrics_reset && up.trajectories_reset);
    assert_eq!(up.metrics, vec![metrics(1), metrics(2)]);
    assert_eq!(r.metrics(), &[metrics(1), metrics(2)]);
    assert_eq!(r.entries().len(), 1);
    assert!(up.problems.iter().any(|p| p.kind == ProblemKind::Reset));
}

#[test]
fn poll_new_notices_a_replaced_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut w = SessionWriter::create(&dir, CONFIG, &run_info()).unwrap();
    for s in [1, 2, 5, 3] {
        w.append_metrics(&metrics(s)).unwrap();
    }
    let mut r = SessionReader::open(&dir).unwrap();
    assert_eq!(r.metrics().len(), 4);
    // Non-monotone steps force an atomic rewrite (new inode) rather than a truncation.
    w.truncate_after_step(3).unwrap();
    w.append_metrics(&metrics(4)).unwrap();
    w.append_metrics(&metrics(6)).unwrap();
    let up = r.poll_new();
    assert!(up.metrics_reset);
    let steps: Vec<u64> = r.metrics().iter().map(|m| m.step).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 6]);
}

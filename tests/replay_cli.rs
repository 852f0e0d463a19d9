//! `cahl-tui replay --summary` on something that is not a session fails with one clear line.
use std::process::Command;

#[test]
fn summary_of_a_folder_without_a_session_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a session").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cahl-tui"))
        .args(["replay", "--summary"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(err.contains("holds no session"), "{err}");
}

fn replay_summary(path: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cahl-tui"))
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .args(["replay", "--summary"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A config, an evaluation's results or any other file is refused with one line, exit non-zero
/// (they were read as sessions of "not a JSON object" lines and exited 0).
#[test]
fn files_that_are_not_sessions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, want) in [
        ("config.toml", "steps = 3\n", "is not a session"),
        (
            "results.jsonl",
            "{\"id\": \"a\"}\n",
            "not an evaluation result line",
        ),
        ("summary.json", "{}", "evaluation's summary"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (ok, _, err) = replay_summary(&p);
        assert!(!ok, "{name}");
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
    }
}

/// A session's own trajectories.jsonl opens the whole session: its metrics come too.
#[test]
fn a_sessions_trajectories_file_opens_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(
        run.join("run.json"),
        r#"{"model": "m", "mode": "cahl", "seed": 1, "total_steps": 2}"#,
    )
    .unwrap();
    std::fs::write(run.join("metrics.jsonl"), "{\"step\": 1}\n{\"step\": 2}\n").unwrap();
    std::fs::write(run.join("trajectories.jsonl"), "").unwrap();
    let (ok, out, err) = replay_summary(&run.join("trajectories.jsonl"));
    assert!(ok, "{err}");
    assert!(out.contains("metrics: 2 steps"), "{out}");
}

/// An evaluation's results.jsonl opens as a list of its items' episodes, each successful as the
/// scorer judged it.
#[test]
fn an_evaluations_results_open_as_a_browsable_list() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("results.jsonl");
    let line = |id: &str, ok: bool| {
        format!(
            "{{\"id\": \"{id}\", \"category\": \"c\", \"correct\": {ok}, \"prediction\": {{}}, \"trajectory\": {{\"step\": 0, \"task\": {{\"id\": \"{id}\", \"text\": \"t\"}}, \"success\": {}}}}}\n",
            !ok
        )
    };
    std::fs::write(&p, line("a", true) + &line("b", false) + &line("c", true)).unwrap();
    let (ok, out, err) = replay_summary(&p);
    assert!(ok, "{err}");
    assert!(out.contains("trajectories: 3 (2 successful)"), "{out}");
    assert!(err.contains("3 items (2 correct)"), "{err}");
}

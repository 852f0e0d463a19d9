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

/// Another engine's run opens read-only as a converted session: a verl `rollout_data_dir`
/// (`{step}.jsonl` files) and a TRL completions table; Parquet is refused with how to convert.
#[test]
fn verl_dumps_and_trl_completions_open_as_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("rollout_data");
    std::fs::create_dir(&dump).unwrap();
    let call = r#"<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n</tool_call>"#;
    for step in 1..=3 {
        let mut text = String::new();
        for (score, acc, out) in [(1.0, true, call), (0.0, false, "no call")] {
            text.push_str(&format!(
                "{{\"input\": \"user: weather in Oslo?\", \"output\": \"{out}\", \"score\": {score}, \"step\": {step}, \"acc\": {acc}, \"format\": {score}}}\n"
            ));
        }
        std::fs::write(dump.join(format!("{step}.jsonl")), text).unwrap();
    }
    let (ok, out, err) = replay_summary(&dump);
    assert!(ok, "{err}");
    assert!(out.contains("trajectories: 6 (3 successful)"), "{out}");
    assert!(out.contains("metrics: 3"), "{out}");
    assert!(
        err.contains("a verl run, 6 samples over 3 steps (3 with tool calls"),
        "{err}"
    );

    let trl = dir.path().join("completions.jsonl");
    std::fs::write(
        &trl,
        "{\"step\": \"5\", \"prompt\": \"p\", \"completion\": \"c\", \"format_reward\": 1.0, \"advantage\": 0.5}\n",
    )
    .unwrap();
    let (ok, out, err) = replay_summary(&trl);
    assert!(ok, "{err}");
    assert!(out.contains("trajectories: 1 (0 successful)"), "{out}");
    assert!(err.contains("success unknown"), "{err}");

    let pq = dir.path().join("completions_00005.parquet");
    std::fs::write(&pq, b"PAR1").unwrap();
    let (ok, _, err) = replay_summary(&pq);
    assert!(!ok);
    assert!(err.contains("Parquet is not read here"), "{err}");
}

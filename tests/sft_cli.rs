//! End to end: `cahl-tui sft` on a benchmark world (ToolRL's data format, a fixture written
//! here), then `train --init-adapters` from its output on the same world; and clear errors for
//! worlds that cannot be trained on.
#[path = "../engine/tests/load_support/mod.rs"]
mod load_support;

use std::path::Path;
use std::process::Command;

use candle_core::quantized::gguf_file::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cahl-tui"))
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let (ok, stdout, stderr) = run(cmd);
    assert!(ok, "{cmd:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    stdout
}

/// Six ToolRL-format items with one or two calls and one response-only item.
fn toolrl_fixture(dir: &Path) {
    let tools = "**Available Tools**\n1. Name: get_weather\nDescription: Weather of a city\nParameters: {\"city\": {\"description\": \"City\", \"type\": \"string\"}}\n2. Name: convert\nDescription: Convert an amount\nParameters: {\"amount\": {\"description\": \"Amount\", \"type\": \"float\"}, \"to\": {\"description\": \"Currency\", \"type\": \"string\"}}\n";
    let mut items = Vec::new();
    for (i, city) in ["Paris", "Oslo", "Rome", "Lima", "Kyiv", "Doha"]
        .iter()
        .enumerate()
    {
        let mut calls =
            format!("{{\"name\": \"get_weather\", \"parameters\": {{\"city\": \"{city}\"}}}}");
        if i % 2 == 0 {
            calls.push_str(&format!(
                "\n{{\"name\": \"convert\", \"parameters\": {{\"amount\": {i}, \"to\": \"EUR\"}}}}"
            ));
        }
        items.push(serde_json::json!({
            "instruction": tools,
            "input": format!("**Dialogue Records History**\n<user> Weather in {city}, and convert {i} to EUR. </user>"),
            "output": format!("<think> ok </think>\n<tool_call>\n{calls}\n</tool_call>"),
        }));
    }
    items.push(serde_json::json!({
        "instruction": tools,
        "input": "<user> hi </user>",
        "output": "<response> hello </response>",
    }));
    std::fs::write(
        dir.join("rlla_sft.json"),
        serde_json::Value::Array(items).to_string(),
    )
    .unwrap();
}

const SMALL: &str = r#"
tasks_per_step = 1
checkpoint_every = 0
[rollout]
plans_per_task = 2
samples_per_step = 2
max_subtasks = 2
[rollout.planner]
max_tokens = 8
[rollout.executor]
max_tokens = 8
[eval]
every = 1
tasks = 2
[lora.planner]
r = 2
lora_alpha = 4.0
[lora.executor]
r = 2
lora_alpha = 4.0
"#;

#[test]
fn sft_then_train_from_its_adapters_on_a_benchmark_world() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("tiny.gguf");
    let mut parts = load_support::tiny_gguf("llama");
    parts.set_md("llama.context_length", Value::U32(8192));
    parts.write(&model);
    let data = d.path().join("toolrl");
    std::fs::create_dir_all(&data).unwrap();
    toolrl_fixture(&data);
    let cfg = d.path().join("small.toml");
    std::fs::write(&cfg, SMALL).unwrap();
    let out = d.path().join("sft-out");

    let stdout = run_ok(
        bin()
            .args(["sft", "--world", "toolrl", "--steps", "3", "--batch", "2"])
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .arg("--out")
            .arg(&out),
    );
    assert!(stdout.contains("planner  step    3/3"), "{stdout}");
    assert!(stdout.contains("executor step    3/3"), "{stdout}");
    assert!(stdout.contains("held-out greedy success"), "{stdout}");
    for a in ["planner", "executor"] {
        assert!(out.join(a).join("adapter_model.safetensors").is_file());
        assert!(out.join(a).join("adapter_config.json").is_file());
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sft.json")).unwrap()).unwrap();
    assert_eq!(report["world"], "toolrl");
    // 6 items with calls and 1 that only answers (kept: its gold is the answer): 2 held out
    // (eval.tasks), 5 trained on; 1 plan each, and 1-2 calls or the answer
    assert_eq!(report["report"]["tasks"], 5);
    assert_eq!(report["report"]["roles"][0]["adapter"], "planner");
    assert_eq!(report["report"]["roles"][0]["examples"], 5);
    assert_eq!(report["report"]["roles"][0]["steps_done"], 3);
    assert!(report["report"]["roles"][1]["examples"].as_u64().unwrap() >= 5);
    assert_eq!(report["report"]["before"]["tasks"], 2);

    let session = d.path().join("run");
    let stdout = run_ok(
        bin()
            .args(["train", "--world", "toolrl", "--steps", "1", "--no-tui"])
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&cfg)
            .arg("--init-adapters")
            .arg(&out)
            .arg("--session")
            .arg(&session),
    );
    assert!(stdout.contains("finished at step 1"), "{stdout}");
    let traj = std::fs::read_to_string(session.join("trajectories.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(traj.lines().next().unwrap()).unwrap();
    assert!(
        first["task"]["id"].as_str().unwrap().starts_with("toolrl-"),
        "{first}"
    );
    let metrics = std::fs::read_to_string(session.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert_eq!(last["step"], 1);
    assert_eq!(last["eval"]["tasks"], 2);
    // The session's config names the world and its data, so --resume finds them again.
    let config = std::fs::read_to_string(session.join("config.toml")).unwrap();
    assert!(config.contains("kind = \"toolrl\""), "{config}");

    // Starting adapters of another shape are refused with the folder named.
    let (ok, _, stderr) = run(bin()
        .args(["train", "--steps", "1", "--no-tui", "--init-adapters"])
        .arg(d.path().join("nope"))
        .arg("--model")
        .arg(&model)
        .arg("--session")
        .arg(d.path().join("run2")));
    assert!(!ok);
    assert!(stderr.contains("nope"), "{stderr}");
}

#[test]
fn untrainable_worlds_are_refused_before_loading_a_model() {
    let d = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(bin().args(["train", "--world", "toolrl", "--no-tui"]));
    assert!(!ok);
    assert!(stderr.contains("--data"), "{stderr}");
    let (ok, _, stderr) = run(bin()
        .args(["train", "--world", "bamboogle", "--no-tui", "--data"])
        .arg(d.path()));
    assert!(!ok);
    assert!(stderr.contains("eval only"), "{stderr}");
    let (ok, _, stderr) = run(bin()
        .args(["train", "--world", "mars", "--no-tui", "--data"])
        .arg(d.path()));
    assert!(!ok);
    assert!(stderr.contains("unknown [world].kind \"mars\""), "{stderr}");
    let (ok, _, stderr) = run(bin()
        .args(["sft", "--world", "toolrl", "--data"])
        .arg(d.path()));
    assert!(!ok);
    assert!(stderr.contains("rlla_sft.json"), "{stderr}");
}

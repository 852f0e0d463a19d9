//! Test fixtures: deterministic records and session directories written with the real
//! `SessionWriter`. Shared by the integration tests, the crate's unit tests and the
//! `make_fixture` example used by `tests/tui_replay.sh`. Not part of the library.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use cahl_sessions::{
    CallRecord, ExecSample, MetricsRecord, PlanRecord, PolicyStats, RewardBreakdown, RunInfo,
    SessionWriter, StepRecord, TaskInfo, TrajectoryRecord,
};
use serde_json::json;

/// Run info with fixed values (no clock).
pub fn run_info(total_steps: u64) -> RunInfo {
    RunInfo {
        started_at: "2026-11-21T06:00:00Z".into(),
        model: "tiny-llama-test".into(),
        mode: "joint".into(),
        total_steps,
        seed: 7,
        device: "cpu".into(),
        tool: "fixture".into(),
        ..RunInfo::default()
    }
}

/// A smooth, deterministic metrics line for `step`.
pub fn metrics(step: u64) -> MetricsRecord {
    let t = step as f64;
    let mut components = BTreeMap::new();
    components.insert("executor/format".into(), (0.5 + t / 80.0).min(1.0));
    components.insert("executor/syntax".into(), (0.3 + t / 60.0).min(1.0));
    components.insert("executor/semantics".into(), (0.1 + t / 50.0).min(1.0));
    components.insert("planner/param_accuracy".into(), (0.2 + t / 70.0).min(1.0));
    components.insert(
        "planner/trajectory_alignment".into(),
        (0.15 + t / 90.0).min(1.0),
    );
    MetricsRecord {
        step,
        planner_reward: 0.2 + 0.6 * (1.0 - (-t / 20.0).exp()) + 0.03 * (t * 0.7).sin(),
        executor_reward: 0.1 + 0.7 * (1.0 - (-t / 15.0).exp()) + 0.03 * (t * 1.3).cos(),
        success_rate: (0.05 + t / 60.0).min(0.95),
        misaligned_rate: (0.5 - t / 100.0).max(0.05),
        planner_side_rate: (0.4 - t / 120.0).max(0.04),
        executor_side_rate: (0.3 - t / 150.0).max(0.03),
        planner: PolicyStats {
            loss: 0.8 / (1.0 + t / 10.0),
            kl: 0.001 * t,
            grad_norm: 1.0,
            lr: 1e-5,
            clip_frac: 0.1,
            skipped: false,
        },
        executor: PolicyStats {
            loss: 1.2 / (1.0 + t / 8.0),
            kl: 0.0015 * t,
            grad_norm: 1.5,
            lr: 1e-5,
            clip_frac: 0.12,
            skipped: false,
        },
        components,
        tokens_per_s: 1500.0,
        elapsed_s: 12.0 * t,
        step_time_s: 12.0,
        rollout_s: 8.0,
        // A held-out evaluation every 20 steps.
        eval: step
            .is_multiple_of(20)
            .then(|| cahl_sessions::records::HeldOutEval {
                split: "test".into(),
                tasks: 100,
                success_rate: 0.1 + t / 200.0,
                ..Default::default()
            }),
    }
}

fn reward(total: f64, comps: &[(&str, f64)], reasons: &[&str]) -> RewardBreakdown {
    RewardBreakdown {
        total,
        components: comps.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        reasons: reasons.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const CITIES: [&str; 5] = ["Paris", "Lyon", "Oslo", "Lima", "Kyoto"];

/// A deterministic trajectory: task `t-{k}` at `step`, 2 plans × 2 sub-tasks × 2 samples.
pub fn trajectory(step: u64, k: u64) -> TrajectoryRecord {
    let city = CITIES[(k as usize) % CITIES.len()];
    let success = !(step + k).is_multiple_of(3);
    let misaligned = (step + k).is_multiple_of(4);
    let gold_calls = vec![
        CallRecord {
            name: "get_weather".into(),
            arguments: json!({"city": city}),
        },
        CallRecord {
            name: "book_table".into(),
            arguments: json!({"city": city, "people": 2}),
        },
    ];
    let subtasks = vec![
        format!("Get the weather in {city}"),
        format!("Book a table for 2 in {city}"),
    ];
    let plan = |index: usize, ok: bool| {
        let steps = subtasks
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let call = gold_calls[i].clone();
                let good = ExecSample {
                    raw_text: format!(
                        "<tool_call>{}</tool_call>",
                        serde_json::to_string(
                            &json!({"name": call.name, "arguments": call.arguments})
                        )
                        .unwrap_or_default()
                    ),
                    calls: vec![call.clone()],
                    parse_error: None,
                    observation: Some(json!({"ok": true, "tool": call.name})),
                    reward: reward(
                        1.0,
                        &[("format", 1.0), ("syntax", 1.0), ("semantics", 1.0)],
                        &[],
                    ),
                    advantage: Some(0.5),
                    step_return: None,
                    tokens: 24,
                };
                let bad = ExecSample {
                    raw_text: "I will call the tool now".into(),
                    calls: vec![],
                    parse_error: Some("no <tool_call> block".into()),
                    observation: None,
                    reward: reward(
                        0.0,
                        &[("format", 0.0), ("syntax", 0.0), ("semantics", 0.0)],
                        &["no tool call"],
                    ),
                    advantage: Some(-0.5),
                    step_return: None,
                    tokens: 7,
                };
                StepRecord {
                    subtask_index: i,
                    subtask: st.clone(),
                    prompt: Some(format!(
                        "<system>You are the executor.</system>\n<user>{st}</user>"
                    )),
                    samples: vec![good, bad],
                    continued: if ok { 0 } else { 1 },
                    execution: 0,
                }
            })
            .collect();
        PlanRecord {
            index,
            raw_text: subtasks
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{}. {s}", i + 1))
                .collect::<Vec<_>>()
                .join("\n"),
            subtasks: subtasks.clone(),
            parse_error: None,
            reward: reward(
                if ok { 0.9 } else { 0.3 },
                &[
                    ("param_accuracy", if ok { 1.0 } else { 0.5 }),
                    ("trajectory_alignment", if ok { 0.8 } else { 0.1 }),
                ],
                &[],
            ),
            advantage: Some(if ok { 0.7 } else { -0.7 }),
            tokens: 40,
            steps,
            final_response: Some(format!("Weather checked and table booked in {city}.")),
            success: ok,
            success_rate: if ok { 1.0 } else { 0.0 },
            failure: (!ok).then(|| "plan_too_coarse".into()),
            failure_side: (!ok).then(|| "planner".into()),
        }
    };
    TrajectoryRecord {
        step,
        task: TaskInfo {
            id: format!("t-{k}"),
            split: "train".into(),
            text: format!("Check the weather in {city} and book a table for two"),
            gold_plan: subtasks.clone(),
            gold_calls: gold_calls.clone(),
        },
        seed: 1000 + step * 10 + k,
        plans: vec![plan(0, success), plan(1, false)],
        success,
        planner_reward: if success { 0.6 } else { 0.3 },
        executor_reward: if success { 0.5 } else { 0.0 },
        misaligned,
        mode: "train".into(),
        policy_version: Some(step.saturating_sub(1)),
    }
}

/// Writes a session of `steps` steps with `per_step` trajectories each and a checkpoint at the
/// middle step. With `damage`, appends a corrupt line and a torn tail to `trajectories.jsonl`.
pub fn write_session(dir: &Path, steps: u64, per_step: u64, damage: bool) {
    let mut w = SessionWriter::create(dir, "seed = 7\n", &run_info(steps * 2))
        .expect("create fixture session");
    for s in 1..=steps {
        for k in 0..per_step {
            w.append_trajectory(&trajectory(s, k))
                .expect("append trajectory");
        }
        w.append_metrics(&metrics(s)).expect("append metrics");
        if s == steps / 2 && s > 0 {
            let tmp = w.checkpoint_dir(s).expect("checkpoint dir");
            w.commit_checkpoint(tmp).expect("commit checkpoint");
        }
    }
    w.close().expect("close fixture session");
    if damage {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("trajectories.jsonl"))
            .expect("open trajectories");
        f.write_all(b"{\"step\": \"not a number\"\n{\"step\": 99, \"task\": {\"id\": \"torn")
            .expect("damage trajectories");
    }
}

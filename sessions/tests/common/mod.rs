//! Shared record builders for the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use cahl_sessions::*;
use serde_json::json;

pub const CONFIG: &str = "[train]\nsteps = 5\ng_h = 2\ng_l = 4\n\n[model]\npath = \"tiny\"\n";

pub fn run_info() -> RunInfo {
    RunInfo::new("tiny-model", "joint", 5, 42, "cpu")
}

pub fn reward(total: f64) -> RewardBreakdown {
    let mut components = BTreeMap::new();
    components.insert("format".to_string(), 0.25);
    components.insert("tool_match".to_string(), total - 0.25);
    RewardBreakdown {
        total,
        components,
        reasons: vec!["argument 'city' missing".to_string()],
        ..Default::default()
    }
}

/// Metrics for `step`; values are dyadic fractions so they survive a JSON round trip exactly
/// with serde_json's default (not `float_roundtrip`) parser.
pub fn metrics(step: u64) -> MetricsRecord {
    let mut components = BTreeMap::new();
    components.insert("executor/format".to_string(), 0.5 + step as f64 / 128.0);
    components.insert("planner/coverage".to_string(), 0.125);
    MetricsRecord {
        step,
        planner_reward: step as f64 / 8.0,
        executor_reward: step as f64 / 16.0,
        success_rate: 0.5,
        misaligned_rate: 0.25,
        planner_side_rate: 0.125,
        executor_side_rate: 0.5,
        planner: PolicyStats {
            loss: -(step as f64) / 64.0,
            kl: 0.001,
            grad_norm: 1.5,
            lr: 1e-5,
            clip_frac: 0.0,
            skipped: false,
        },
        executor: PolicyStats {
            loss: 0.02,
            kl: 0.002,
            grad_norm: 0.75,
            lr: 2e-5,
            clip_frac: 0.125,
            skipped: step.is_multiple_of(2),
        },
        components,
        tokens_per_s: 1234.5,
        elapsed_s: 10.0 * step as f64,
        step_time_s: 10.0,
        rollout_s: 6.0,
        eval: None,
    }
}

pub fn trajectory(step: u64, i: usize) -> TrajectoryRecord {
    let call = CallRecord {
        name: "get_weather".to_string(),
        arguments: json!({"city": "Paris", "days": 2}),
    };
    let sample = |k: usize| ExecSample {
        raw_text: format!("<tool_call>{{\"name\":\"get_weather\"}}</tool_call> #{k}\nline2 \"q\""),
        calls: vec![call.clone()],
        parse_error: if k == 3 {
            Some("unterminated JSON".to_string())
        } else {
            None
        },
        observation: Some(json!({"temp_c": 21.5, "sky": "clear"})),
        reward: reward(0.5 + k as f64 / 8.0),
        advantage: Some(k as f64 - 1.5),
        step_return: None,
        tokens: 17 + k,
    };
    let plan = |p: usize| PlanRecord {
        index: p,
        raw_text: "1. look up weather\n2. answer".to_string(),
        subtasks: vec!["look up weather".to_string(), "answer".to_string()],
        parse_error: None,
        reward: reward(0.75),
        advantage: Some(if p == 0 { 0.7 } else { -0.7 }),
        tokens: 40,
        steps: vec![StepRecord {
            subtask_index: 0,
            subtask: "look up weather".to_string(),
            prompt: if p == 0 {
                Some("<|im_start|>system ...".to_string())
            } else {
                None
            },
            samples: (0..4).map(sample).collect(),
            continued: 2,
            execution: 0,
        }],
        final_response: Some("It is sunny.".to_string()),
        success_rate: 0.5,
        failure: (p == 1).then(|| "executor_failed".to_string()),
        failure_side: (p == 1).then(|| "executor".to_string()),
        success: p == 0,
    };
    TrajectoryRecord {
        step,
        task: TaskInfo {
            id: format!("task-{step}-{i}"),
            split: "train".to_string(),
            text: "What's the weather in Paris? ünïcødé ✓".to_string(),
            gold_plan: vec!["look up weather".to_string()],
            gold_calls: vec![call.clone()],
        },
        seed: 1000 * step + i as u64,
        plans: (0..2).map(plan).collect(),
        success: true,
        planner_reward: 0.75,
        executor_reward: 0.6875,
        misaligned: i % 2 == 1,
        mode: "train".to_string(),
        policy_version: Some(step.saturating_sub(1)),
    }
}

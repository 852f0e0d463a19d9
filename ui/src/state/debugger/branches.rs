//! Branches (the original plan and its edited variants) and their comparison with the gold
//! plan and calls.

use cahl_sessions::{CallRecord, DebugStepOutcome, PlanMeasurement, PlanRun};
use serde::{Deserialize, Serialize};

/// One plan variant and what the executor did with it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Branch {
    /// Display name, e.g. `"original"`, `"edit 1"`.
    pub name: String,
    /// The plan.
    pub subtasks: Vec<String>,
    /// Sampling seed (re-running the branch with it reproduces the steps).
    pub seed: u64,
    /// Outcomes of sub-tasks `0..steps.len()`.
    pub steps: Vec<DebugStepOutcome>,
    /// The steps come from the recorded trace rather than from running the executor.
    pub from_trace: bool,
    /// Last error of the backend on this branch.
    pub error: Option<String>,
    /// The branch judged as it ran, once finished (a recording: as recorded).
    pub result: Option<PlanRun>,
    /// The plan's last measurement (`m`: N sampled runs, `g`: one greedy run).
    pub measurement: Option<PlanMeasurement>,
}

impl Branch {
    /// All sub-tasks have been run.
    pub fn finished(&self) -> bool {
        self.steps.len() >= self.subtasks.len()
    }
}

pub(super) fn outcome_from_trace(step: &cahl_sessions::StepRecord) -> DebugStepOutcome {
    let sample = step.samples.get(step.continued).or(step.samples.first());
    let prompt = step
        .prompt
        .clone()
        .unwrap_or_else(|| "(prompt not recorded in the trace)".into());
    match sample {
        Some(s) => DebugStepOutcome {
            prompt,
            raw_output: s.raw_text.clone(),
            calls: s.calls.clone(),
            parse_error: s.parse_error.clone(),
            tool_result: s.observation.clone(),
            reward: s.reward.clone(),
        },
        None => DebugStepOutcome {
            prompt,
            parse_error: Some("no executor sample recorded".into()),
            ..DebugStepOutcome::default()
        },
    }
}

/// Normalises a sub-task for comparison: lower case, collapsed whitespace.
fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// First index where `plan` differs from `gold` (compared case- and whitespace-insensitively);
/// `None` if they agree or there is no gold plan.
pub fn plan_divergence(plan: &[String], gold: &[String]) -> Option<usize> {
    if gold.is_empty() {
        return None;
    }
    let n = plan.len().max(gold.len());
    (0..n).find(|&i| match (plan.get(i), gold.get(i)) {
        (Some(a), Some(b)) => norm(a) != norm(b),
        _ => true,
    })
}

/// Index (into the flattened calls of `steps`) of the first call that differs from the gold
/// calls; a branch that made fewer calls diverges only once it is `finished`. `None` if they
/// agree so far or there are no gold calls.
pub fn call_divergence(
    steps: &[DebugStepOutcome],
    gold: &[CallRecord],
    finished: bool,
) -> Option<usize> {
    if gold.is_empty() {
        return None;
    }
    let calls: Vec<&CallRecord> = steps.iter().flat_map(|s| s.calls.iter()).collect();
    for i in 0..calls.len().max(gold.len()) {
        match (calls.get(i), gold.get(i)) {
            (Some(a), Some(b)) if a.name == b.name && a.arguments == b.arguments => {}
            (None, Some(_)) if !finished => return None,
            _ => return Some(i),
        }
    }
    None
}

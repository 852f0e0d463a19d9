//! What the debugger needs from a model, as a trait the binary implements with the engine.
//!
//! The UI never calls a backend on its own thread: [`crate::app`] moves it to a worker thread and
//! exchanges [`BackendJob`]s and [`BackendReply`]s over channels, so a slow generation never blocks
//! drawing or input.

use cahl_sessions::{CallRecord, RewardBreakdown};
use serde::{Deserialize, Serialize};

/// The task being debugged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DebugTask {
    /// Task id (may be empty for a typed task).
    pub id: String,
    /// The user request.
    pub text: String,
    /// Reference sub-tasks, if known.
    pub gold_plan: Vec<String>,
    /// Reference tool calls, if known.
    pub gold_calls: Vec<CallRecord>,
}

/// One earlier step of the branch: the calls made and what the tools returned.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PriorStep {
    /// The sub-task.
    pub subtask: String,
    /// Calls the executor made.
    pub calls: Vec<CallRecord>,
    /// Tool result, if any.
    pub observation: Option<serde_json::Value>,
}

/// Ask the executor to carry out sub-task `index` of `subtasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct DebugStepRequest {
    /// The task.
    pub task: DebugTask,
    /// The whole (possibly edited) plan.
    pub subtasks: Vec<String>,
    /// Which sub-task to run (0-based).
    pub index: usize,
    /// Results of sub-tasks `0..index` in this branch.
    pub previous: Vec<PriorStep>,
    /// Sampling seed of the branch; the backend derives the step's seed from it and `index`, so
    /// re-running a branch reproduces it.
    pub seed: u64,
}

/// What one executor step produced.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DebugStepOutcome {
    /// The full prompt the executor saw.
    pub prompt: String,
    /// Raw generated text.
    pub raw_output: String,
    /// Parsed tool calls.
    pub calls: Vec<CallRecord>,
    /// Why parsing failed, if it did.
    pub parse_error: Option<String>,
    /// Tool result (JSON), if calls were executed.
    pub tool_result: Option<serde_json::Value>,
    /// Reward breakdown of this step.
    pub reward: RewardBreakdown,
}

/// Ask the planner for a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// The task.
    pub task: DebugTask,
    /// Sampling seed.
    pub seed: u64,
}

/// Runs the planner and executor adapters of one checkpoint for the debugger.
///
/// Implementations must be deterministic for a given request (same seed, same output).
pub trait ExecutorBackend: Send {
    /// Short description shown in the debugger, e.g. `"checkpoint step-120 (cuda:0)"`.
    fn describe(&self) -> String;
    /// Samples a plan (list of sub-tasks) for the task.
    fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, String>;
    /// Runs one executor step.
    fn run_step(&mut self, req: DebugStepRequest) -> Result<DebugStepOutcome, String>;
}

/// Work sent to the backend worker. `ticket` is echoed back so stale replies (after a reset or
/// an edit) can be recognised and dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendJob {
    /// Run one executor step.
    Step {
        /// Correlation id.
        ticket: u64,
        /// The request.
        req: DebugStepRequest,
    },
    /// Sample a plan.
    Plan {
        /// Correlation id.
        ticket: u64,
        /// The request.
        req: PlanRequest,
    },
}

/// A backend result coming back to the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendReply {
    /// Result of [`BackendJob::Step`].
    Step {
        /// Correlation id of the job.
        ticket: u64,
        /// The outcome or an error message.
        result: Result<DebugStepOutcome, String>,
    },
    /// Result of [`BackendJob::Plan`].
    Plan {
        /// Correlation id of the job.
        ticket: u64,
        /// The sub-tasks or an error message.
        result: Result<Vec<String>, String>,
    },
}

impl BackendJob {
    /// Runs the job on `backend` (called on the worker thread). A panicking backend is reported
    /// as an error reply instead of taking the UI down.
    pub fn run(self, backend: &mut dyn ExecutorBackend) -> BackendReply {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        match self {
            BackendJob::Step { ticket, req } => {
                let result = catch_unwind(AssertUnwindSafe(|| backend.run_step(req)))
                    .unwrap_or_else(|_| Err("executor backend panicked".into()));
                BackendReply::Step { ticket, result }
            }
            BackendJob::Plan { ticket, req } => {
                let result = catch_unwind(AssertUnwindSafe(|| backend.plan(req)))
                    .unwrap_or_else(|_| Err("planner backend panicked".into()));
                BackendReply::Plan { ticket, result }
            }
        }
    }
}

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
    /// World the task runs in (`builtin`, `bfcl`, `api-bank`, `nestful`, `bamboogle`); empty
    /// means the built-in world.
    pub world: String,
    /// Tool schemas (JSON) the task brings; empty means the world's own tools.
    pub tools: Vec<serde_json::Value>,
    /// Reference final answer (search QA), if known.
    pub gold_answer: Option<String>,
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

/// Loads an [`ExecutorBackend`] on demand, on the backend worker thread, so a model is only read
/// when the debugger first needs it (e.g. a second copy of the model a live run trains).
///
/// [`BackendLoader::load`] may be called again to reload with a newer checkpoint; the worker drops
/// the previous backend first, so at most one loaded copy is held.
pub trait BackendLoader: Send {
    /// What would be loaded and what it costs, shown before loading, e.g.
    /// `"SmolLM2-135M (second copy of the weights, ~540 MB)"`.
    fn describe(&self) -> String;
    /// Loads the model with the planner/executor adapters of `checkpoint` (a checkpoint
    /// directory), or the base model with fresh adapters when `None`.
    fn load(
        &mut self,
        checkpoint: Option<&std::path::Path>,
    ) -> Result<Box<dyn ExecutorBackend>, String>;
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
    /// (Re)load the model through the [`BackendLoader`] with the adapters of `checkpoint`
    /// (`None`: base model and fresh adapters); `step` is the checkpoint's step, echoed back.
    Load {
        /// Checkpoint directory.
        checkpoint: Option<std::path::PathBuf>,
        /// Its training step.
        step: Option<u64>,
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
    /// Result of [`BackendJob::Load`].
    Loaded {
        /// The checkpoint step the adapters come from (`None`: fresh adapters).
        step: Option<u64>,
        /// The loaded backend's [`ExecutorBackend::describe`], or an error message.
        result: Result<String, String>,
    },
}

impl BackendJob {
    /// Runs the job on the worker's slot: `backend` (if loaded) and `loader` (if any). A `Load`
    /// drops the current backend first, then loads; a step or plan without a backend is an error
    /// reply. Panics are reported as error replies instead of taking the UI down.
    pub fn run_in(
        self,
        backend: &mut Option<Box<dyn ExecutorBackend>>,
        loader: Option<&mut (dyn BackendLoader + '_)>,
    ) -> BackendReply {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        if let BackendJob::Load { checkpoint, step } = self {
            *backend = None;
            let result = match loader {
                None => Err("no model to load".to_string()),
                Some(l) => catch_unwind(AssertUnwindSafe(|| l.load(checkpoint.as_deref())))
                    .unwrap_or_else(|_| Err("loading the model panicked".into())),
            };
            return BackendReply::Loaded {
                step,
                result: result.map(|b| {
                    let d = b.describe();
                    *backend = Some(b);
                    d
                }),
            };
        }
        match backend.as_deref_mut() {
            Some(b) => self.run(b),
            None => self.fail("the model is not loaded"),
        }
    }

    /// The error reply to this job.
    pub fn fail(self, why: &str) -> BackendReply {
        match self {
            BackendJob::Step { ticket, .. } => BackendReply::Step {
                ticket,
                result: Err(why.to_string()),
            },
            BackendJob::Plan { ticket, .. } => BackendReply::Plan {
                ticket,
                result: Err(why.to_string()),
            },
            BackendJob::Load { step, .. } => BackendReply::Loaded {
                step,
                result: Err(why.to_string()),
            },
        }
    }

    /// Runs the job on `backend` (called on the worker thread). A panicking backend is reported
    /// as an error reply instead of taking the UI down. A `Load` job needs a loader
    /// ([`BackendJob::run_in`]) and is answered with an error here.
    pub fn run(self, backend: &mut dyn ExecutorBackend) -> BackendReply {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        match self {
            j @ BackendJob::Load { .. } => j.fail("no model loader"),
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

//! The debugger protocol: what the plan-editing debugger needs from a model
//! ([`ExecutorBackend`], loaded on demand by a [`BackendLoader`]), the requests and replies it
//! exchanges with it, and the jobs that carry them ([`BackendJob`], [`BackendReply`]).
//!
//! The engine implements the traits; the UI (`cahl-ui`) never calls a backend on its own
//! thread: it moves it to a worker thread and exchanges [`BackendJob`]s and [`BackendReply`]s
//! over channels, so a slow generation never blocks drawing or input.

use serde::{Deserialize, Serialize};

use crate::records::{CallRecord, RewardBreakdown};

/// Why a backend could not plan, run a step or load (shown to the user as is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

impl From<String> for BackendError {
    fn from(message: String) -> Self {
        BackendError(message)
    }
}

impl From<&str> for BackendError {
    fn from(message: &str) -> Self {
        BackendError(message.to_string())
    }
}

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
    /// Sampling seed of the branch; the backend derives the step's seed from it and `index` as
    /// training derives a plan's first execution's (so re-running a branch reproduces it, and a
    /// branch with a recorded trajectory's seed and plan reproduces its recorded steps).
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
    fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, BackendError>;
    /// Runs one executor step.
    fn run_step(&mut self, req: DebugStepRequest) -> Result<DebugStepOutcome, BackendError>;
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
    ) -> Result<Box<dyn ExecutorBackend>, BackendError>;
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
// One reply per debugger job, moved once over a channel: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum BackendReply {
    /// Result of [`BackendJob::Step`].
    Step {
        /// Correlation id of the job.
        ticket: u64,
        /// The outcome or an error message.
        result: Result<DebugStepOutcome, BackendError>,
    },
    /// Result of [`BackendJob::Plan`].
    Plan {
        /// Correlation id of the job.
        ticket: u64,
        /// The sub-tasks or an error message.
        result: Result<Vec<String>, BackendError>,
    },
    /// Result of [`BackendJob::Load`].
    Loaded {
        /// The checkpoint step the adapters come from (`None`: fresh adapters).
        step: Option<u64>,
        /// The loaded backend's [`ExecutorBackend::describe`], or an error message.
        result: Result<String, BackendError>,
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
                None => Err(BackendError::from("no model to load")),
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
                result: Err(BackendError::from(why)),
            },
            BackendJob::Plan { ticket, .. } => BackendReply::Plan {
                ticket,
                result: Err(BackendError::from(why)),
            },
            BackendJob::Load { step, .. } => BackendReply::Loaded {
                step,
                result: Err(BackendError::from(why)),
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl ExecutorBackend for Fixed {
        fn describe(&self) -> String {
            "fixed".into()
        }
        fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, BackendError> {
            Ok(vec![format!("seed {}", req.seed)])
        }
        fn run_step(&mut self, _req: DebugStepRequest) -> Result<DebugStepOutcome, BackendError> {
            Err("no tools here".into())
        }
    }

    fn plan_job(ticket: u64) -> BackendJob {
        BackendJob::Plan {
            ticket,
            req: PlanRequest {
                task: DebugTask::default(),
                seed: 4,
            },
        }
    }

    #[test]
    fn jobs_echo_their_ticket_and_carry_typed_errors() {
        let mut b = Fixed;
        assert_eq!(
            plan_job(7).run(&mut b),
            BackendReply::Plan {
                ticket: 7,
                result: Ok(vec!["seed 4".into()])
            }
        );
        let step = BackendJob::Step {
            ticket: 8,
            req: DebugStepRequest {
                task: DebugTask::default(),
                subtasks: vec!["a".into()],
                index: 0,
                previous: vec![],
                seed: 1,
            },
        };
        assert_eq!(
            step.run(&mut b),
            BackendReply::Step {
                ticket: 8,
                result: Err(BackendError("no tools here".into()))
            }
        );
        assert_eq!(
            plan_job(9).fail("busy"),
            BackendReply::Plan {
                ticket: 9,
                result: Err("busy".into())
            }
        );
        assert_eq!(BackendError::from("x").to_string(), "x");
    }

    #[test]
    fn run_in_needs_a_loaded_backend_or_a_loader() {
        let mut slot: Option<Box<dyn ExecutorBackend>> = None;
        assert_eq!(
            plan_job(1).run_in(&mut slot, None),
            BackendReply::Plan {
                ticket: 1,
                result: Err("the model is not loaded".into())
            }
        );
        let load = BackendJob::Load {
            checkpoint: None,
            step: None,
        };
        assert_eq!(
            load.run_in(&mut slot, None),
            BackendReply::Loaded {
                step: None,
                result: Err("no model to load".into())
            }
        );
        slot = Some(Box::new(Fixed));
        assert!(matches!(
            plan_job(2).run_in(&mut slot, None),
            BackendReply::Plan {
                ticket: 2,
                result: Ok(_)
            }
        ));
    }
}

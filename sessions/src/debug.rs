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

/// Measure a whole plan: run it `samples` times from a fresh world (each run samples every
/// sub-task anew; run 0 is the branch's own run with `seed`), or once with argmax decoding
/// (`greedy`), and score every run as training does.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureRequest {
    /// The task.
    pub task: DebugTask,
    /// The plan.
    pub subtasks: Vec<String>,
    /// Seed of the branch (run `r` samples sub-task `k` as a plan's execution `r` in training).
    pub seed: u64,
    /// Runs (at least 1; ignored when `greedy`).
    pub samples: usize,
    /// One argmax run instead of `samples` sampled ones.
    pub greedy: bool,
}

/// Score a branch as it ran: replay its calls in a fresh world, then judge the episode as
/// training does (success, final-state difference, planner reward, failure label and side).
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    /// The task.
    pub task: DebugTask,
    /// The plan.
    pub subtasks: Vec<String>,
    /// The calls each sub-task made, in order.
    pub step_calls: Vec<Vec<CallRecord>>,
    /// The branch ended with a final answer to the user (a step's `<response>`).
    pub answered: bool,
}

/// One whole run of a plan, judged as training judges an execution.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanRun {
    /// The task was solved (gold calls made and, where the world has state, the gold state
    /// reached).
    pub success: bool,
    /// The planner's reward for the plan under this run (format, parameter and execution
    /// level).
    #[serde(with = "crate::records::float")]
    pub planner_reward: f64,
    /// Mean executor step reward of the run (NaN when no step ran).
    #[serde(with = "crate::records::float")]
    pub executor_reward: f64,
    /// For a failed run: its misalignment label (`plan_too_coarse`, …).
    pub failure: Option<String>,
    /// For a failed run: the side that failed (`planner` or `executor`).
    pub failure_side: Option<String>,
    /// For a failed run: what the label found, in words.
    pub failure_detail: Option<String>,
    /// Where the final state differs from the gold state (`path: got (gold want)`), at most a
    /// few entries; empty when it matches or the world has no state.
    pub state_diff: Vec<String>,
    /// The calls made, in order.
    pub calls: Vec<CallRecord>,
}

/// The runs of a [`MeasureRequest`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanMeasurement {
    /// Argmax decoding (one run).
    pub greedy: bool,
    /// Seed of the first run.
    pub seed: u64,
    /// What ran it (the backend's description: model and adapters).
    pub model: String,
    /// Every run, in order.
    pub runs: Vec<PlanRun>,
}

impl PlanMeasurement {
    /// Runs that solved the task.
    pub fn successes(&self) -> usize {
        self.runs.iter().filter(|r| r.success).count()
    }

    /// Share of runs that solved the task (NaN without runs).
    pub fn success_rate(&self) -> f64 {
        if self.runs.is_empty() {
            return f64::NAN;
        }
        self.successes() as f64 / self.runs.len() as f64
    }

    /// Mean, minimum and maximum planner reward over the runs (NaNs without runs).
    pub fn planner_reward_stats(&self) -> (f64, f64, f64) {
        let v: Vec<f64> = self
            .runs
            .iter()
            .map(|r| r.planner_reward)
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, min, max)
    }

    /// Failure labels of the failed runs with their counts, most frequent first (ties by
    /// name).
    pub fn failure_counts(&self) -> Vec<(String, usize)> {
        let mut m: std::collections::BTreeMap<String, usize> = Default::default();
        for r in self.runs.iter().filter(|r| !r.success) {
            let l = r.failure.clone().unwrap_or_else(|| "unlabelled".into());
            *m.entry(l).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
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
    /// Runs a whole plan several times (or once greedily) and judges every run.
    fn measure(&mut self, req: MeasureRequest) -> Result<PlanMeasurement, BackendError> {
        let _ = req;
        Err(BackendError::from(
            "this backend cannot measure plans (it runs single steps only)",
        ))
    }
    /// Judges a branch as it ran (its calls replayed in a fresh world).
    fn judge(&mut self, req: JudgeRequest) -> Result<PlanRun, BackendError> {
        let _ = req;
        Err(BackendError::from(
            "this backend cannot judge plans (it runs single steps only)",
        ))
    }
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
    /// Measure a plan ([`ExecutorBackend::measure`]).
    Measure {
        /// Correlation id.
        ticket: u64,
        /// The request.
        req: MeasureRequest,
    },
    /// Judge a branch as it ran ([`ExecutorBackend::judge`]).
    Judge {
        /// Correlation id.
        ticket: u64,
        /// The request.
        req: JudgeRequest,
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
    /// Result of [`BackendJob::Measure`].
    Measured {
        /// Correlation id of the job.
        ticket: u64,
        /// The runs or an error message.
        result: Result<PlanMeasurement, BackendError>,
    },
    /// Result of [`BackendJob::Judge`].
    Judged {
        /// Correlation id of the job.
        ticket: u64,
        /// The judged run or an error message.
        result: Result<PlanRun, BackendError>,
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
            BackendJob::Measure { ticket, .. } => BackendReply::Measured {
                ticket,
                result: Err(BackendError::from(why)),
            },
            BackendJob::Judge { ticket, .. } => BackendReply::Judged {
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
            BackendJob::Measure { ticket, req } => {
                let result = catch_unwind(AssertUnwindSafe(|| backend.measure(req)))
                    .unwrap_or_else(|_| Err("measuring the plan panicked".into()));
                BackendReply::Measured { ticket, result }
            }
            BackendJob::Judge { ticket, req } => {
                let result = catch_unwind(AssertUnwindSafe(|| backend.judge(req)))
                    .unwrap_or_else(|_| Err("judging the branch panicked".into()));
                BackendReply::Judged { ticket, result }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_summaries() {
        let run = |success: bool, r: f64, l: Option<&str>| PlanRun {
            success,
            planner_reward: r,
            failure: l.map(str::to_string),
            ..PlanRun::default()
        };
        let m = PlanMeasurement {
            runs: vec![
                run(true, 3.0, None),
                run(false, 1.0, Some("plan_too_coarse")),
                run(false, 2.0, Some("executor_failed")),
                run(false, f64::NAN, Some("plan_too_coarse")),
            ],
            ..PlanMeasurement::default()
        };
        assert_eq!(m.successes(), 1);
        assert_eq!(m.success_rate(), 0.25);
        assert_eq!(m.planner_reward_stats(), (2.0, 1.0, 3.0));
        assert_eq!(
            m.failure_counts(),
            vec![
                ("plan_too_coarse".to_string(), 2),
                ("executor_failed".to_string(), 1)
            ]
        );
        assert!(PlanMeasurement::default().success_rate().is_nan());
    }

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
        // A backend without measuring says so instead of pretending.
        let m = BackendJob::Measure {
            ticket: 10,
            req: MeasureRequest {
                task: DebugTask::default(),
                subtasks: vec!["a".into()],
                seed: 0,
                samples: 3,
                greedy: false,
            },
        };
        assert!(matches!(
            m.run(&mut b),
            BackendReply::Measured { ticket: 10, result: Err(e) } if e.0.contains("cannot measure")
        ));
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

//! Running the planner and executor through the backend worker: jobs with tickets (so stale
//! replies are dropped), loading the model on demand (runs asked for meanwhile are deferred),
//! and applying replies.

use cahl_sessions::{BackendJob, BackendReply, DebugStepRequest, PlanRequest, PriorStep};

use super::{Branch, DebugAction, DebuggerState, JobKind, ModelState, Pending, NEEDS_MODEL};

/// A run requested while the model was still loading; carried out once it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deferred {
    Step { to_end: bool },
    Plan,
    Measure { greedy: bool },
}

impl DebuggerState {
    /// A new ticket for a job of `kind` on `branch`, which becomes the pending job.
    pub(super) fn start_job(&mut self, branch: usize, kind: JobKind) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending = Some(Pending {
            ticket,
            branch,
            kind,
        });
        ticket
    }

    pub(super) fn request_plan(&mut self, branch: usize) -> Option<BackendJob> {
        let ticket = self.start_job(branch, JobKind::Plan);
        self.message = Some("asking the planner…".into());
        Some(BackendJob::Plan {
            ticket,
            req: PlanRequest {
                task: self.task.clone(),
                seed: self.branches[branch].seed,
            },
        })
    }

    pub(super) fn step_job(&mut self, to_end: bool) -> Option<BackendJob> {
        let b = &self.branches[self.current];
        let req = DebugStepRequest {
            task: self.task.clone(),
            subtasks: b.subtasks.clone(),
            index: b.steps.len(),
            previous: b
                .steps
                .iter()
                .zip(&b.subtasks)
                .map(|(s, t)| PriorStep {
                    subtask: t.clone(),
                    calls: s.calls.clone(),
                    observation: s.tool_result.clone(),
                })
                .collect(),
            seed: b.seed,
        };
        let ticket = self.start_job(self.current, JobKind::Step { to_end });
        self.message = Some(format!(
            "running sub-task {} of {}…",
            req.index + 1,
            req.subtasks.len()
        ));
        Some(BackendJob::Step { ticket, req })
    }

    /// Checks that the model can run `what`; otherwise asks for it to be loaded (remembering
    /// `what` to run once it is ready; `Err(true)`: the host must load it) or explains why it
    /// cannot run (`Err(false)`).
    pub(super) fn need_model(&mut self, what: Deferred) -> Result<(), bool> {
        match &self.model {
            ModelState::Ready { .. } => Ok(()),
            ModelState::Missing => {
                self.message = Some(match what {
                    Deferred::Plan => NEEDS_MODEL.replace("the executor", "the planner"),
                    Deferred::Step { .. } | Deferred::Measure { .. } => NEEDS_MODEL.into(),
                });
                Err(false)
            }
            ModelState::Loading { .. } => {
                self.deferred = Some(what);
                self.message =
                    Some("still loading the model… (this runs as soon as it is ready)".into());
                Err(false)
            }
            ModelState::OnDemand(w) | ModelState::Failed { what: w, .. } => {
                self.message = Some(format!(
                    "loading model… {w} (this runs as soon as it is ready)"
                ));
                self.deferred = Some(what);
                Err(true)
            }
        }
    }

    /// Called by the host once the model state changed: runs what was requested while loading
    /// (or drops it if loading failed).
    pub fn after_load(&mut self) -> Option<DebugAction> {
        match &self.model {
            ModelState::Ready { describe, .. } => {
                self.message = Some(format!("model ready: {describe}"));
                match self.deferred.take()? {
                    Deferred::Step { to_end } => self.try_run(to_end),
                    Deferred::Plan => self.ask_planner(),
                    Deferred::Measure { greedy } => self.measure(greedy),
                }
            }
            ModelState::Failed { error, .. } => {
                self.deferred = None;
                self.message = Some(format!("loading the model failed: {error} (L retries)"));
                None
            }
            _ => None,
        }
    }

    pub(super) fn ask_planner(&mut self) -> Option<DebugAction> {
        if let Err(load) = self.need_model(Deferred::Plan) {
            return load.then_some(DebugAction::LoadModel);
        }
        if self.busy() {
            self.message = Some("busy: wait for the running job".into());
            return None;
        }
        let seed = self.branch().seed;
        self.branches.push(Branch {
            name: format!("planner seed {seed}"),
            seed,
            ..Branch::default()
        });
        self.current = self.branches.len() - 1;
        self.request_plan(self.current).map(DebugAction::Job)
    }

    pub(super) fn reload_model(&mut self) -> Option<DebugAction> {
        match &self.model {
            ModelState::Loading { .. } => {
                self.message = Some("the model is already loading…".into());
                None
            }
            ModelState::Missing => {
                self.message = Some(NEEDS_MODEL.into());
                None
            }
            ModelState::Ready {
                reloadable: false, ..
            } => {
                self.message = Some("this model was given at start and is not reloaded".into());
                None
            }
            _ if self.busy() => {
                self.message = Some("busy: wait for the running job".into());
                None
            }
            _ => {
                self.message = Some("loading model…".into());
                Some(DebugAction::LoadModel)
            }
        }
    }

    pub(super) fn try_run(&mut self, to_end: bool) -> Option<DebugAction> {
        if let Err(load) = self.need_model(Deferred::Step { to_end }) {
            return load.then_some(DebugAction::LoadModel);
        }
        if self.busy() {
            self.message = Some("busy: wait for the running step (z resets)".into());
            return None;
        }
        let b = self.branch();
        if b.subtasks.is_empty() {
            self.message =
                Some("the plan is empty: press e to write one, or p to ask the planner".into());
            return None;
        }
        if b.finished() {
            self.message = Some("branch finished: z resets it to run again".into());
            return None;
        }
        self.step_job(to_end).map(DebugAction::Job)
    }

    /// Applies a backend reply. Stale replies (reset, switched job) are ignored. Returns the
    /// next job: the next step when running to the end, the judging of a branch that just
    /// finished.
    pub fn on_reply(&mut self, reply: BackendReply) -> Option<DebugAction> {
        let ticket = match &reply {
            BackendReply::Step { ticket, .. }
            | BackendReply::Plan { ticket, .. }
            | BackendReply::Measured { ticket, .. }
            | BackendReply::Judged { ticket, .. } => *ticket,
            BackendReply::Loaded { .. } => return self.after_load(),
        };
        let pending = self.pending.filter(|p| p.ticket == ticket)?;
        self.pending = None;
        let bi = pending.branch.min(self.branches.len() - 1);
        match reply {
            BackendReply::Step { result, .. } => match result {
                Ok(out) => {
                    let b = &mut self.branches[bi];
                    b.steps.push(out);
                    b.error = None;
                    let (done, n) = (b.steps.len(), b.subtasks.len());
                    if bi == self.current {
                        self.selected_step = done - 1;
                        self.detail_scroll = 0;
                    }
                    self.message = Some(format!("sub-task {done}/{n} done"));
                    let to_end = matches!(pending.kind, JobKind::Step { to_end: true });
                    if to_end && done < n && bi == self.current {
                        return self.step_job(true).map(DebugAction::Job);
                    }
                    if done >= n {
                        return self.judge_job(bi).map(DebugAction::Job);
                    }
                }
                Err(e) => {
                    self.message = Some(format!("executor error: {e}"));
                    self.branches[bi].error = Some(e.0);
                }
            },
            BackendReply::Plan { result, .. } => match result {
                Ok(plan) => {
                    let n = plan.len();
                    self.branches[bi].subtasks = plan;
                    self.branches[bi].steps.clear();
                    self.message = Some(format!("planner proposed {n} sub-tasks"));
                }
                Err(e) => {
                    self.message = Some(format!("planner error: {e}"));
                    self.branches[bi].error = Some(e.0);
                }
            },
            BackendReply::Measured { result, .. } => self.on_measured(bi, result),
            BackendReply::Judged { result, .. } => self.on_judged(bi, result),
            BackendReply::Loaded { .. } => {}
        }
        None
    }
}

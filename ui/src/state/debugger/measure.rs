//! Measuring instead of sampling once: a plan run N times (`m`, `M` sets N) or once greedily
//! (`g`) with the success rate and reward spread of the whole plan; a branch judged once it
//! finished (success, final-state difference, planner reward, the side that failed); and the
//! checkpoint picker (`o`) that chooses whose adapters run it.

use cahl_sessions::{
    BackendError, BackendJob, JudgeRequest, MeasureRequest, PlanMeasurement, PlanRun,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::run::Deferred;
use super::{DebugAction, DebuggerState, JobKind, ModelState, NEEDS_MODEL};

impl DebuggerState {
    /// Measures the current branch's plan: `samples` sampled runs, or one greedy run.
    pub(super) fn measure(&mut self, greedy: bool) -> Option<DebugAction> {
        if self.branch().subtasks.is_empty() {
            self.message =
                Some("the plan is empty: press e to write one, or p to ask the planner".into());
            return None;
        }
        if let Err(load) = self.need_model(Deferred::Measure { greedy }) {
            return load.then_some(DebugAction::LoadModel);
        }
        if self.busy() {
            self.message = Some("busy: wait for the running job".into());
            return None;
        }
        let b = self.branch();
        let req = MeasureRequest {
            task: self.task.clone(),
            subtasks: b.subtasks.clone(),
            seed: b.seed,
            samples: self.samples,
            greedy,
        };
        let ticket = self.start_job(self.current, JobKind::Measure);
        self.message = Some(if greedy {
            "measuring: one greedy run of the whole plan…".into()
        } else {
            format!("measuring: {} runs of the whole plan…", self.samples)
        });
        Some(DebugAction::Job(BackendJob::Measure { ticket, req }))
    }

    /// The job that judges branch `bi` as it ran (asked once it finished).
    pub(super) fn judge_job(&mut self, bi: usize) -> Option<BackendJob> {
        let b = &self.branches[bi];
        let req = JudgeRequest {
            task: self.task.clone(),
            subtasks: b.subtasks.clone(),
            step_calls: b.steps.iter().map(|s| s.calls.clone()).collect(),
            // A step's output holds a closed `<response>` block.
            answered: b.steps.iter().any(|s| {
                s.raw_output.contains("<response>") && s.raw_output.contains("</response>")
            }),
        };
        let ticket = self.start_job(bi, JobKind::Judge);
        Some(BackendJob::Judge { ticket, req })
    }

    pub(super) fn on_measured(&mut self, bi: usize, result: Result<PlanMeasurement, BackendError>) {
        match result {
            Ok(m) => {
                let (mean, _, _) = m.planner_reward_stats();
                let mean = if mean.is_finite() {
                    format!("{mean:+.2}")
                } else {
                    "–".into()
                };
                self.message = Some(format!(
                    "branch '{}': {} of {} runs solved the task · planner reward mean {mean}",
                    self.branches[bi].name,
                    m.successes(),
                    m.runs.len()
                ));
                self.branches[bi].measurement = Some(m);
            }
            Err(e) => self.message = Some(format!("measuring failed: {e}")),
        }
    }

    pub(super) fn on_judged(&mut self, bi: usize, result: Result<PlanRun, BackendError>) {
        match result {
            Ok(r) => {
                self.message = Some(format!(
                    "branch '{}' finished: {}",
                    self.branches[bi].name,
                    result_words(&r)
                ));
                self.branches[bi].result = Some(r);
            }
            Err(e) => self.message = Some(format!("judging the branch failed: {e}")),
        }
    }

    /// The picker's rows: fresh adapters (`None`), then the checkpoints oldest first.
    pub fn checkpoint_choices(&self) -> Vec<Option<u64>> {
        let mut steps = self.checkpoints.clone();
        steps.sort_unstable();
        steps.dedup();
        std::iter::once(None)
            .chain(steps.into_iter().map(Some))
            .collect()
    }

    /// The checkpoint step of the loaded adapters (`Some(None)`: fresh adapters), when the
    /// model was loaded on demand.
    pub fn loaded_step(&self) -> Option<Option<u64>> {
        match &self.model {
            ModelState::Ready {
                step,
                reloadable: true,
                ..
            } => Some(*step),
            _ => None,
        }
    }

    pub(super) fn open_picker(&mut self) {
        match &self.model {
            ModelState::Missing => {
                self.message = Some(NEEDS_MODEL.into());
                return;
            }
            ModelState::Ready {
                reloadable: false, ..
            } => {
                self.message = Some(
                    "this model was given at start (--model/--checkpoint): its adapters are not \\
                     switched here"
                        .into(),
                );
                return;
            }
            _ => {}
        }
        let choices = self.checkpoint_choices();
        let at = self
            .loaded_step()
            .and_then(|s| choices.iter().position(|c| *c == s))
            .unwrap_or(choices.len() - 1);
        self.picker = Some(at);
        self.message = Some(if choices.len() == 1 {
            "no checkpoint in this session yet: only fresh adapters".into()
        } else {
            "choose the adapters: j/k move · enter loads · esc closes".into()
        });
    }

    pub(super) fn picker_key(&mut self, key: KeyEvent) -> Option<DebugAction> {
        let choices = self.checkpoint_choices();
        let n = choices.len();
        let at = self.picker?;
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('o') => self.picker = None,
            KeyCode::Char('j') | KeyCode::Down => self.picker = Some((at + 1).min(n - 1)),
            KeyCode::Char('k') | KeyCode::Up => self.picker = Some(at.saturating_sub(1)),
            KeyCode::Enter => {
                let choice = choices[at.min(n - 1)];
                self.picker = None;
                if matches!(self.model, ModelState::Loading { .. }) {
                    self.message = Some("the model is already loading…".into());
                    return None;
                }
                if self.busy() {
                    self.message = Some("busy: wait for the running job".into());
                    return None;
                }
                self.message = Some(match choice {
                    Some(s) => format!("loading the adapters of checkpoint step {s}…"),
                    None => "loading the base model with fresh adapters…".into(),
                });
                return Some(DebugAction::LoadCheckpoint(choice));
            }
            _ => {}
        }
        None
    }
}

/// A judged run in words: `solved` or `failed: plan_too_coarse (planner side)`.
pub fn result_words(r: &PlanRun) -> String {
    if r.success {
        return "solved".into();
    }
    let label = r.failure.as_deref().unwrap_or("unlabelled");
    match &r.failure_side {
        Some(side) => format!("failed: {label} ({side} side)"),
        None => format!("failed: {label}"),
    }
}

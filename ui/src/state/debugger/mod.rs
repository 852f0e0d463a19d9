//! State of the plan-editing debugger: task, branches (original and edited plans), the executor
//! steps run on each, and the comparison with the gold trajectory.
//!
//! Split by concern: [`model`] (the model's state), [`branches`] (branches and the gold
//! comparison), [`edit`] (plan editing), [`run`] (backend jobs and replies), [`file`] (how a
//! debugger starts and its saved session file).

pub mod branches;
pub mod cases;
pub mod edit;
pub mod file;
pub mod measure;
pub mod model;
pub mod run;

use std::path::PathBuf;

use cahl_sessions::{BackendJob, CaseRecord, DebugTask, PlanRun};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::TextArea;

pub use branches::{call_divergence, plan_divergence, Branch};
pub use edit::parse_plan_lines;
pub use file::{DebugFileError, DebugInitial, DebugSessionFile, DEBUG_FILE_VERSION};
pub use model::{ModelState, NEEDS_MODEL};

use branches::outcome_from_trace;
use run::Deferred;

/// What the debugger asks its host to do after a key or a backend reply.
#[derive(Debug, Clone, PartialEq)]
pub enum DebugAction {
    /// Run a job on the backend worker.
    Job(BackendJob),
    /// Write the session JSON to a file.
    Save {
        /// Target file.
        path: PathBuf,
        /// Contents.
        json: String,
    },
    /// Load (or reload) the model on demand with the latest checkpoint's adapters; the host
    /// answers with a [`BackendReply::Loaded`].
    LoadModel,
    /// Load the model with the adapters of the checkpoint of this step (`None`: fresh
    /// adapters, the base model).
    LoadCheckpoint(Option<u64>),
    /// Save a case into the session's case library.
    SaveCase(Box<CaseRecord>),
    /// Leave the debugger.
    Close,
}

/// What a running backend job is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Step { to_end: bool },
    Plan,
    Measure,
    Judge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    ticket: u64,
    branch: usize,
    kind: JobKind,
}

/// Runs per measurement that `M` cycles through.
pub const SAMPLE_CHOICES: [usize; 4] = [5, 10, 20, 50];

/// The debugger's state. See the crate docs for keys.
#[derive(Debug, Clone)]
pub struct DebuggerState {
    /// The task.
    pub task: DebugTask,
    /// Where the task came from, e.g. `"trajectory t-3 (step 12), plan #1"`.
    pub source: String,
    /// Branches; index 0 is the original plan.
    pub branches: Vec<Branch>,
    /// Selected branch.
    pub current: usize,
    /// Plan editor, while editing.
    pub editor: Option<TextArea<'static>>,
    /// Selected step of the current branch.
    pub selected_step: usize,
    /// Scroll of the step detail.
    pub detail_scroll: usize,
    /// Side-by-side comparison of original, current and gold.
    pub compare: bool,
    /// The model that runs the planner and executor (kept in sync by the host).
    pub model: ModelState,
    /// A checkpoint newer than the loaded adapters exists (its step): `L` reloads.
    pub newer_checkpoint: Option<u64>,
    /// Last message for the user.
    pub message: Option<String>,
    /// Where `S` saves the session.
    pub save_path: Option<PathBuf>,
    /// Runs per measurement (`m`; `M` cycles through [`SAMPLE_CHOICES`]).
    pub samples: usize,
    /// The run's checkpoint steps (kept in sync by the host), for the picker.
    pub checkpoints: Vec<u64>,
    /// The checkpoint picker (`o`), open: the selected row (0: fresh adapters, then the
    /// checkpoints oldest first).
    pub picker: Option<usize>,
    /// The case prompt (`a`), open: what was typed (`solves`, `fails` or a label, then a note).
    pub case_input: Option<String>,
    pending: Option<Pending>,
    deferred: Option<Deferred>,
    next_ticket: u64,
}

impl DebuggerState {
    /// Builds the debugger with the state of its model.
    pub fn new(initial: DebugInitial, model: ModelState) -> Self {
        let (task, source, branches, current) = match initial {
            DebugInitial::Trajectory { record, plan_index } => {
                let task = DebugTask {
                    id: record.task.id.clone(),
                    text: record.task.text.clone(),
                    gold_plan: record.task.gold_plan.clone(),
                    gold_calls: record.task.gold_calls.clone(),
                    ..DebugTask::default()
                };
                let idx = plan_index
                    .filter(|i| *i < record.plans.len())
                    .or_else(|| {
                        record
                            .plans
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.reward.total.is_finite())
                            .max_by(|a, b| a.1.reward.total.total_cmp(&b.1.reward.total))
                            .map(|(i, _)| i)
                    })
                    .unwrap_or(0);
                let recorded = |name: String, p: &cahl_sessions::PlanRecord| {
                    // The first execution (a plan run K times records them one after
                    // another; a branch holds one step per sub-task).
                    let steps: Vec<_> = p
                        .steps
                        .iter()
                        .filter(|s| s.execution == 0)
                        .map(outcome_from_trace)
                        .collect();
                    let rewards: Vec<f64> = steps
                        .iter()
                        .map(|s| s.reward.total)
                        .filter(|r| r.is_finite())
                        .collect();
                    // A recording judged by the trainer (solved, a failure label, or a planner
                    // reward); an imported run's plans carry none of these.
                    let judged = p.success || p.failure.is_some() || p.reward.total.is_finite();
                    let result = judged.then(|| PlanRun {
                        success: p.success,
                        planner_reward: p.reward.total,
                        executor_reward: if rewards.is_empty() {
                            f64::NAN
                        } else {
                            rewards.iter().sum::<f64>() / rewards.len() as f64
                        },
                        failure: p.failure.clone(),
                        failure_side: p.failure_side.clone(),
                        failure_detail: None,
                        state_diff: Vec::new(),
                        calls: steps.iter().flat_map(|s| s.calls.clone()).collect(),
                    });
                    Branch {
                        name,
                        subtasks: p.subtasks.clone(),
                        seed: record.seed,
                        steps,
                        from_trace: true,
                        error: p.parse_error.clone(),
                        result,
                        measurement: None,
                    }
                };
                let mut branches = vec![match record.plans.get(idx) {
                    Some(p) => recorded("original".into(), p),
                    None => Branch {
                        name: "original".into(),
                        seed: record.seed,
                        ..Branch::default()
                    },
                }];
                // The group's other plans, recorded too, one branch each (b / B reach them).
                branches.extend(
                    record
                        .plans
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != idx)
                        .map(|(i, p)| recorded(format!("plan #{i}"), p)),
                );
                let source = format!(
                    "trajectory {} (step {}), plan #{idx}",
                    record.task.id, record.step
                );
                (task, source, branches, 0)
            }
            DebugInitial::Task { task, plan, seed } => {
                let mut source = if task.id.is_empty() {
                    "typed task".to_string()
                } else {
                    format!("task {}", task.id)
                };
                if !task.world.is_empty() && task.world != "builtin" {
                    let n = task.tools.len();
                    source = format!(
                        "{} benchmark item, {n} tool{}",
                        task.world,
                        if n == 1 { "" } else { "s" }
                    );
                }
                let branch = Branch {
                    name: "original".into(),
                    subtasks: plan,
                    seed,
                    ..Branch::default()
                };
                (task, source, vec![branch], 0)
            }
            DebugInitial::Saved(f) => {
                let mut branches = f.branches;
                if branches.is_empty() {
                    branches.push(Branch {
                        name: "original".into(),
                        ..Branch::default()
                    });
                }
                let current = f.current.min(branches.len() - 1);
                (f.task, f.source, branches, current)
            }
        };
        DebuggerState {
            task,
            source,
            branches,
            current,
            editor: None,
            selected_step: 0,
            detail_scroll: 0,
            compare: false,
            model,
            newer_checkpoint: None,
            message: None,
            save_path: None,
            samples: 10,
            checkpoints: Vec::new(),
            picker: None,
            case_input: None,
            pending: None,
            deferred: None,
            next_ticket: 1,
        }
    }

    /// The job to start with: a plan request when the original plan is empty and a backend is
    /// available.
    pub fn initial_job(&mut self) -> Option<BackendJob> {
        if self.model.ready()
            && self.branches.len() == 1
            && self.branches[0].subtasks.is_empty()
            && self.branches[0].steps.is_empty()
        {
            self.request_plan(0)
        } else {
            None
        }
    }

    /// The selected branch.
    pub fn branch(&self) -> &Branch {
        &self.branches[self.current.min(self.branches.len() - 1)]
    }

    /// True while a backend job for this debugger is running.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    fn reset_current(&mut self) {
        // The recording is read-only: resetting it starts a copy of its plan to run instead.
        if self.branches[self.current].from_trace {
            let src = &self.branches[self.current];
            let n = self
                .branches
                .iter()
                .filter(|b| b.name.starts_with("rerun"))
                .count()
                + 1;
            let copy = Branch {
                name: format!("rerun {n}"),
                subtasks: src.subtasks.clone(),
                seed: src.seed,
                ..Branch::default()
            };
            self.branches.push(copy);
            self.current = self.branches.len() - 1;
            self.selected_step = 0;
            self.detail_scroll = 0;
            self.message = Some(format!(
                "the recording is read-only: new branch 'rerun {n}' with its plan and seed \
                 (with the adapters that sampled it, running it reproduces the recording)"
            ));
            return;
        }
        let b = &mut self.branches[self.current];
        b.steps.clear();
        b.from_trace = false;
        b.error = None;
        b.result = None;
        b.measurement = None;
        if self.pending.is_some_and(|p| p.branch == self.current) {
            self.pending = None;
        }
        self.selected_step = 0;
        self.detail_scroll = 0;
        self.message = Some(format!(
            "branch '{}' reset",
            self.branches[self.current].name
        ));
    }

    /// Handles a key. Returns what the host must do.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<DebugAction> {
        if let Some(ta) = self.editor.as_mut() {
            if key.code == KeyCode::Esc {
                self.close_editor();
            } else {
                ta.input(key);
            }
            return None;
        }
        if self.picker.is_some() {
            return self.picker_key(key);
        }
        if self.case_input.is_some() {
            return self.case_key(key);
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') => return Some(DebugAction::Close),
            KeyCode::Char('e') => self.open_editor(),
            KeyCode::Char('n') | KeyCode::Right => return self.try_run(false),
            KeyCode::Char('r') => return self.try_run(true),
            KeyCode::Char('z') => self.reset_current(),
            KeyCode::Char('b') | KeyCode::Tab => self.switch_branch(1),
            KeyCode::Char('B') | KeyCode::BackTab => self.switch_branch(-1),
            KeyCode::Char('c') => self.compare = !self.compare,
            KeyCode::Char('j') | KeyCode::Down => {
                let n = self.branch().subtasks.len().max(1);
                self.selected_step = (self.selected_step + 1).min(n - 1);
                self.detail_scroll = 0;
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.selected_step = self.selected_step.saturating_sub(1);
                self.detail_scroll = 0;
            }
            KeyCode::PageDown | KeyCode::Char('J') => self.detail_scroll += 5,
            KeyCode::PageUp | KeyCode::Char('K') => {
                self.detail_scroll = self.detail_scroll.saturating_sub(5)
            }
            KeyCode::Char('+') | KeyCode::Char('=') => self.change_seed(1),
            KeyCode::Char('-') => self.change_seed(-1),
            KeyCode::Char('p') => return self.ask_planner(),
            KeyCode::Char('m') => return self.measure(false),
            KeyCode::Char('g') => return self.measure(true),
            KeyCode::Char('M') => {
                let i = SAMPLE_CHOICES
                    .iter()
                    .position(|&n| n == self.samples)
                    .map_or(0, |i| (i + 1) % SAMPLE_CHOICES.len());
                self.samples = SAMPLE_CHOICES[i];
                self.message = Some(format!("m measures with {} runs", self.samples));
            }
            KeyCode::Char('o') => self.open_picker(),
            KeyCode::Char('a') => self.open_case_prompt(),
            KeyCode::Char('L') => return self.reload_model(),
            KeyCode::Char('S') | KeyCode::Char('s') if !ctrl => {
                let Some(path) = self.save_path.clone() else {
                    self.message = Some("no save path for this debugger session".into());
                    return None;
                };
                return match serde_json::to_string_pretty(&self.to_file()) {
                    Ok(json) => Some(DebugAction::Save { path, json }),
                    Err(e) => {
                        self.message = Some(format!("cannot serialise session: {e}"));
                        None
                    }
                };
            }
            _ => {}
        }
        None
    }

    fn switch_branch(&mut self, delta: isize) {
        let n = self.branches.len() as isize;
        self.current = (self.current as isize + delta).rem_euclid(n) as usize;
        self.selected_step = 0;
        self.detail_scroll = 0;
        self.message = Some(format!("branch '{}'", self.branch().name));
    }

    fn change_seed(&mut self, delta: i64) {
        // A recording keeps its seed: the new seed goes to a copy of its plan.
        let forked = self.branches[self.current].from_trace;
        if forked {
            self.reset_current();
        }
        let b = &mut self.branches[self.current];
        b.seed = b.seed.wrapping_add_signed(delta);
        let seed = b.seed;
        let had_steps = !b.steps.is_empty();
        if had_steps {
            self.reset_current();
        }
        self.message = Some(if forked {
            format!("seed {seed} on new branch '{}'", self.branch().name)
        } else {
            format!("seed {seed}")
        });
    }
}

//! State of the plan-editing debugger: task, branches (original and edited plans), the executor
//! steps run on each, and the comparison with the gold trajectory.

use std::path::PathBuf;

use cahl_sessions::{CallRecord, TrajectoryRecord};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui_textarea::TextArea;
use serde::{Deserialize, Serialize};

use crate::backend::{BackendJob, BackendReply, DebugStepOutcome, DebugStepRequest, DebugTask};
use crate::backend::{PlanRequest, PriorStep};

/// Version of the saved debugger session file.
pub const DEBUG_FILE_VERSION: u32 = 1;

/// Message shown when running needs a model and none is loaded.
pub const NEEDS_MODEL: &str =
    "running the executor needs a model: start with --model PATH or from a session with a checkpoint";

/// The debugger's model, as far as the UI knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelState {
    /// No model: the debugger edits plans and compares branches only.
    #[default]
    Missing,
    /// A model can be loaded on demand: what would be loaded, and what it costs.
    OnDemand(String),
    /// Loading, with the adapters of checkpoint `step` (`None`: fresh adapters).
    Loading {
        /// What is being loaded.
        what: String,
        /// Checkpoint step of the adapters.
        step: Option<u64>,
    },
    /// Ready to run.
    Ready {
        /// The backend's description.
        describe: String,
        /// Checkpoint step of the adapters, when loaded on demand (`None`: fresh adapters, or
        /// a backend given at start).
        step: Option<u64>,
        /// Loaded on demand, so `L` can reload it with a newer checkpoint.
        reloadable: bool,
    },
    /// Loading failed; `L` (or running) tries again.
    Failed {
        /// What was being loaded.
        what: String,
        /// Why it failed.
        error: String,
    },
}

impl ModelState {
    /// The state for a backend given at start (`Some` description) or none.
    pub fn given(backend: Option<String>) -> Self {
        match backend {
            Some(describe) => ModelState::Ready {
                describe,
                step: None,
                reloadable: false,
            },
            None => ModelState::Missing,
        }
    }

    /// The model can run now.
    pub fn ready(&self) -> bool {
        matches!(self, ModelState::Ready { .. })
    }

    /// What a (re)load would load, if the model can be loaded on demand.
    pub fn loadable(&self) -> Option<&str> {
        match self {
            ModelState::OnDemand(w) | ModelState::Failed { what: w, .. } => Some(w),
            ModelState::Ready {
                describe,
                reloadable: true,
                ..
            } => Some(describe),
            _ => None,
        }
    }
}

/// A run requested while the model was still loading; carried out once it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deferred {
    Step { to_end: bool },
    Plan,
}

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
}

impl Branch {
    /// All sub-tasks have been run.
    pub fn finished(&self) -> bool {
        self.steps.len() >= self.subtasks.len()
    }
}

/// How a debugger started.
#[derive(Debug, Clone, PartialEq)]
pub enum DebugInitial {
    /// From a recorded trajectory: its task, the chosen plan (default: best reward) as the
    /// original branch, with the executor samples that continued as recorded steps.
    Trajectory {
        /// The trajectory.
        record: Box<TrajectoryRecord>,
        /// Which plan; `None` = best reward.
        plan_index: Option<usize>,
    },
    /// A task (from a world/benchmark, or typed) with an optional plan; an empty plan is asked
    /// from the planner when a backend is available.
    Task {
        /// The task.
        task: DebugTask,
        /// Initial plan (may be empty).
        plan: Vec<String>,
        /// Seed of the first branch.
        seed: u64,
    },
    /// A saved debugger session.
    Saved(DebugSessionFile),
}

/// A saved debugger session (JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DebugSessionFile {
    /// [`DEBUG_FILE_VERSION`].
    pub version: u32,
    /// Where the task came from.
    pub source: String,
    /// The task.
    pub task: DebugTask,
    /// All branches.
    pub branches: Vec<Branch>,
    /// Selected branch.
    pub current: usize,
}

impl DebugSessionFile {
    /// Parses a saved session.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let f: DebugSessionFile =
            serde_json::from_str(text).map_err(|e| format!("invalid debugger session: {e}"))?;
        if f.version > DEBUG_FILE_VERSION {
            return Err(format!(
                "debugger session version {} is newer than supported ({DEBUG_FILE_VERSION})",
                f.version
            ));
        }
        Ok(f)
    }
}

impl DebugInitial {
    /// Reopens a debugger session saved with `S` (a [`DebugSessionFile`] JSON file).
    pub fn from_saved_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        DebugSessionFile::from_json(&text)
            .map(DebugInitial::Saved)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

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
    /// Leave the debugger.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    ticket: u64,
    branch: usize,
    to_end: bool,
}

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
    pending: Option<Pending>,
    deferred: Option<Deferred>,
    next_ticket: u64,
}

fn outcome_from_trace(step: &cahl_sessions::StepRecord) -> DebugStepOutcome {
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

/// Parses editor lines into sub-tasks: trims, drops blank lines and a leading `N.`/`-` marker.
pub fn parse_plan_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let t = l.trim();
            let t = t.strip_prefix("- ").unwrap_or(t);
            let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 && t[digits..].starts_with(['.', ')']) {
                t[digits + 1..].trim().to_string()
            } else {
                t.to_string()
            }
        })
        .filter(|l| !l.is_empty())
        .collect()
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
                let branch = match record.plans.get(idx) {
                    Some(p) => Branch {
                        name: "original".into(),
                        subtasks: p.subtasks.clone(),
                        seed: record.seed,
                        steps: p.steps.iter().map(outcome_from_trace).collect(),
                        from_trace: true,
                        error: p.parse_error.clone(),
                    },
                    None => Branch {
                        name: "original".into(),
                        seed: record.seed,
                        ..Branch::default()
                    },
                };
                let source = format!(
                    "trajectory {} (step {}), plan #{idx}",
                    record.task.id, record.step
                );
                (task, source, vec![branch], 0)
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

    /// The session as a saveable file.
    pub fn to_file(&self) -> DebugSessionFile {
        DebugSessionFile {
            version: DEBUG_FILE_VERSION,
            source: self.source.clone(),
            task: self.task.clone(),
            branches: self.branches.clone(),
            current: self.current,
        }
    }

    fn ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    fn request_plan(&mut self, branch: usize) -> Option<BackendJob> {
        let ticket = self.ticket();
        self.pending = Some(Pending {
            ticket,
            branch,
            to_end: false,
        });
        self.message = Some("asking the planner…".into());
        Some(BackendJob::Plan {
            ticket,
            req: PlanRequest {
                task: self.task.clone(),
                seed: self.branches[branch].seed,
            },
        })
    }

    fn step_job(&mut self, to_end: bool) -> Option<BackendJob> {
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
        let ticket = self.ticket();
        self.pending = Some(Pending {
            ticket,
            branch: self.current,
            to_end,
        });
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
    fn need_model(&mut self, what: Deferred) -> Result<(), bool> {
        match &self.model {
            ModelState::Ready { .. } => Ok(()),
            ModelState::Missing => {
                self.message = Some(match what {
                    Deferred::Plan => NEEDS_MODEL.replace("the executor", "the planner"),
                    Deferred::Step { .. } => NEEDS_MODEL.into(),
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

    fn ask_planner(&mut self) -> Option<DebugAction> {
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

    fn reload_model(&mut self) -> Option<DebugAction> {
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

    fn try_run(&mut self, to_end: bool) -> Option<DebugAction> {
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

    fn reset_current(&mut self) {
        let b = &mut self.branches[self.current];
        b.steps.clear();
        b.from_trace = false;
        b.error = None;
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

    fn open_editor(&mut self) {
        let lines: Vec<String> = self.branch().subtasks.clone();
        let mut ta = TextArea::new(if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        });
        ta.set_block(
            ratatui::widgets::Block::bordered()
                .title(" edit plan: one sub-task per line · Esc apply · Ctrl-Z undo "),
        );
        self.editor = Some(ta);
        self.message =
            Some("editing: split = Enter inside a line, merge = Backspace at line start".into());
    }

    fn close_editor(&mut self) {
        let Some(ta) = self.editor.take() else {
            return;
        };
        let plan = parse_plan_lines(ta.lines());
        if plan == self.branch().subtasks {
            self.message = Some("plan unchanged".into());
            return;
        }
        let cur = &self.branches[self.current];
        let reuse = self.current != 0 && cur.steps.is_empty() && !cur.from_trace;
        if reuse {
            self.branches[self.current].subtasks = plan;
            self.branches[self.current].error = None;
            self.message = Some(format!(
                "branch '{}' updated",
                self.branches[self.current].name
            ));
        } else {
            let n = self
                .branches
                .iter()
                .filter(|b| b.name.starts_with("edit"))
                .count()
                + 1;
            let seed = cur.seed;
            self.branches.push(Branch {
                name: format!("edit {n}"),
                subtasks: plan,
                seed,
                ..Branch::default()
            });
            self.current = self.branches.len() - 1;
            self.message = Some(format!("new branch 'edit {n}' (same seed {seed})"));
        }
        self.selected_step = 0;
        self.detail_scroll = 0;
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
        let b = &mut self.branches[self.current];
        b.seed = b.seed.wrapping_add_signed(delta);
        let seed = b.seed;
        let had_steps = !b.steps.is_empty();
        if had_steps {
            self.reset_current();
        }
        self.message = Some(format!("seed {seed}"));
    }

    /// Applies a backend reply. Stale replies (reset, switched job) are ignored. Returns the
    /// next job when running to the end.
    pub fn on_reply(&mut self, reply: BackendReply) -> Option<DebugAction> {
        let (ticket, is_step) = match &reply {
            BackendReply::Step { ticket, .. } => (*ticket, true),
            BackendReply::Plan { ticket, .. } => (*ticket, false),
            BackendReply::Loaded { .. } => return self.after_load(),
        };
        let pending = self.pending.filter(|p| p.ticket == ticket)?;
        self.pending = None;
        let bi = pending.branch.min(self.branches.len() - 1);
        match reply {
            BackendReply::Step { result, .. } if is_step => match result {
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
                    if pending.to_end && done < n && bi == self.current {
                        return self.step_job(true).map(DebugAction::Job);
                    }
                }
                Err(e) => {
                    self.message = Some(format!("executor error: {e}"));
                    self.branches[bi].error = Some(e);
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
                    self.branches[bi].error = Some(e);
                }
            },
            BackendReply::Step { .. } | BackendReply::Loaded { .. } => {}
        }
        None
    }
}

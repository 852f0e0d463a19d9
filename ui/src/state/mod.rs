//! Pure UI state and its update function. Nothing here touches the terminal: the event loop in
//! [`crate::app`] feeds [`Msg`]s into [`update`] and carries out the returned [`Effect`]s.

pub mod charts;
pub mod debugger;
pub mod trajs;

use std::collections::VecDeque;
use std::path::PathBuf;

use cahl_sessions::{
    CheckpointRecord, MetricsRecord, RunInfo, RunState, TrainCommand, TrainEvent, TrajectoryRecord,
    TrajectorySummary,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::backend::{BackendJob, BackendReply};
use charts::{ChartKind, ChartRange};
use debugger::{DebugAction, DebugInitial, DebuggerState, ModelState};
use trajs::TrajList;

/// Default number of steps in the recent-window chart view.
pub const DEFAULT_WINDOW: usize = 100;
/// Log lines kept in memory.
pub const LOG_CAPACITY: usize = 500;

/// What the UI is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A running training (events from the engine).
    Live,
    /// A recorded session read from disk.
    Replay,
    /// The standalone debugger (`cahl-tui debug`).
    Debug,
}

/// Focusable panes of the dashboard (`tab` cycles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pane {
    /// The trajectory stream.
    #[default]
    Trajectories,
    /// Messages: warnings, errors, checkpoints, state changes, file problems.
    Log,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Informational.
    Info,
    /// Warning.
    Warn,
    /// Error.
    Error,
}

/// One line of the message log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// Text.
    pub text: String,
}

/// A one-line prompt at the bottom of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// `/`: search by task text or id.
    Search,
    /// `g`: jump to a step.
    Jump,
    /// `x`: confirm stopping the run.
    ConfirmStop,
}

/// The active prompt and what was typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// What the prompt is for.
    pub kind: InputKind,
    /// Text typed so far.
    pub text: String,
}

/// Latest in-step progress from the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Step being worked on.
    pub step: u64,
    /// Phase text.
    pub phase: String,
    /// Throughput.
    pub tokens_per_s: f64,
    /// Device memory in bytes.
    pub memory_bytes: Option<u64>,
}

/// New data read from a session on disk (replay, or following a live session).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskBatch {
    /// Metrics were re-read from scratch: replace instead of append.
    pub metrics_reset: bool,
    /// Trajectories were re-read from scratch: clear the list first.
    pub trajectories_reset: bool,
    /// New metrics.
    pub metrics: Vec<MetricsRecord>,
    /// New trajectory entries `(reader index, summary, full record if parsed)`.
    pub entries: Vec<(usize, TrajectorySummary, Option<Box<TrajectoryRecord>>)>,
    /// Newly committed checkpoints.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Problems found (already formatted).
    pub problems: Vec<String>,
    /// Run info, if (newly) known.
    pub run_info: Option<RunInfo>,
}

/// Input to [`update`].
#[derive(Debug, Clone)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// An event from the training engine.
    Engine(TrainEvent),
    /// The engine's event channel closed.
    EngineGone,
    /// Periodic tick with milliseconds since the UI started.
    Tick(u64),
    /// Data read from disk.
    Disk(DiskBatch),
    /// A trajectory requested with [`Effect::Load`] was loaded (or failed).
    Loaded {
        /// Item seq.
        seq: u64,
        /// The record or an error message.
        result: Result<Box<TrajectoryRecord>, String>,
    },
    /// Task texts and plan shapes requested with [`Effect::LoadTexts`]: `(seq, text, shape)`.
    Texts(Vec<(u64, String, (usize, usize))>),
    /// A debugger backend result.
    Backend(BackendReply),
    /// A debugger session file was written (or failed).
    Saved(Result<PathBuf, String>),
}

/// Work for the event loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a command to the trainer.
    Command(TrainCommand),
    /// Load a full trajectory from disk and answer with [`Msg::Loaded`].
    Load {
        /// Item seq.
        seq: u64,
        /// Reader index, when known (replay).
        disk_index: Option<usize>,
        /// Step, to find the entry when the index is unknown (live).
        step: u64,
        /// Task id, to find the entry when the index is unknown (live).
        task_id: String,
    },
    /// Load task texts of items that lack them (for search) and answer with [`Msg::Texts`].
    LoadTexts,
    /// Run a job on the debugger backend.
    Backend(BackendJob),
    /// Write a debugger session and answer with [`Msg::Saved`].
    SaveDebug {
        /// Target file.
        path: PathBuf,
        /// Contents.
        json: String,
    },
    /// Leave the UI.
    Quit,
}

/// Options that shape the state (not the terminal).
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Trajectories kept in the live buffer.
    pub live_capacity: usize,
    /// Trajectories whose full record stays in memory.
    pub full_records: usize,
    /// Steps in the recent-window chart.
    pub window: usize,
    /// How long `q` waits for the trainer to stop and save, in milliseconds.
    pub quit_timeout_ms: u64,
    /// Whether an executor backend is available for the debugger, and its description.
    pub backend: Option<String>,
    /// Without `backend`: a model that can be loaded on demand (what, and its cost).
    pub loader: Option<String>,
    /// Directory where debugger sessions are saved.
    pub debug_dir: Option<PathBuf>,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            live_capacity: 2000,
            full_records: 256,
            window: DEFAULT_WINDOW,
            quit_timeout_ms: 120_000,
            backend: None,
            loader: None,
            debug_dir: None,
        }
    }
}

/// Everything the UI shows.
#[derive(Debug, Clone)]
pub struct AppState {
    /// What the UI is attached to.
    pub mode: Mode,
    /// Run metadata, when known.
    pub run_info: Option<RunInfo>,
    /// Planned steps.
    pub total_steps: u64,
    /// Session directory (live: from `Started`; replay: the opened path).
    pub session_path: Option<PathBuf>,
    /// Device description.
    pub device: String,
    /// Trainer state.
    pub run_state: RunState,
    /// All metrics (one small record per step).
    pub metrics: Vec<MetricsRecord>,
    /// Latest progress.
    pub progress: Option<Progress>,
    /// The trajectory stream.
    pub trajs: TrajList,
    /// Committed checkpoints.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Message log (bounded).
    pub log: VecDeque<LogLine>,
    /// Problems reading files (shown as a banner in replay).
    pub problems: Vec<String>,
    /// Last engine error (banner until the next key press).
    pub last_error: Option<String>,
    /// Right-hand chart.
    pub chart: ChartKind,
    /// Chart range.
    pub range: ChartRange,
    /// Focused pane.
    pub focus: Pane,
    /// Scroll of the log pane (lines from the newest).
    pub log_scroll: usize,
    /// Active prompt.
    pub input: Option<Input>,
    /// Help overlay shown.
    pub help: bool,
    /// Open debugger.
    pub debugger: Option<Box<DebuggerState>>,
    /// The debugger's model (outlives an open debugger).
    pub model: ModelState,
    /// Transient status message.
    pub flash: Option<String>,
    /// Set when `q` asked the trainer to stop: quit at this tick time at the latest.
    pub quit_deadline_ms: Option<u64>,
    /// Engine event channel still open.
    pub engine_connected: bool,
    /// Milliseconds since start (from the last tick).
    pub now_ms: u64,
    /// Options.
    pub opts: StateOptions,
    pending_debug: Option<u64>,
    window: usize,
}

impl AppState {
    /// Fresh state for `mode`.
    pub fn new(mode: Mode, opts: StateOptions) -> Self {
        let capacity = if mode == Mode::Live {
            opts.live_capacity
        } else {
            usize::MAX
        };
        AppState {
            mode,
            run_info: None,
            total_steps: 0,
            session_path: None,
            device: String::new(),
            run_state: if mode == Mode::Live {
                RunState::Running
            } else {
                RunState::Finished
            },
            metrics: Vec::new(),
            progress: None,
            trajs: TrajList::new(capacity, opts.full_records),
            checkpoints: Vec::new(),
            log: VecDeque::new(),
            problems: Vec::new(),
            last_error: None,
            chart: ChartKind::default(),
            range: ChartRange::Whole,
            focus: Pane::default(),
            log_scroll: 0,
            input: None,
            help: false,
            debugger: None,
            model: match (&opts.backend, &opts.loader) {
                (Some(_), _) => ModelState::given(opts.backend.clone()),
                (None, Some(l)) => ModelState::OnDemand(l.clone()),
                (None, None) => ModelState::Missing,
            },
            flash: None,
            quit_deadline_ms: None,
            engine_connected: mode == Mode::Live,
            now_ms: 0,
            window: opts.window.max(2),
            opts,
            pending_debug: None,
        }
    }

    /// State for the standalone debugger.
    pub fn debugger(initial: DebugInitial, opts: StateOptions) -> (Self, Vec<Effect>) {
        let mut s = AppState::new(Mode::Debug, opts);
        let mut d = DebuggerState::new(initial, s.model.clone());
        d.save_path = s.debug_save_path(&d.task.id);
        let job = d.initial_job();
        s.debugger = Some(Box::new(d));
        s.sync_debugger_model();
        (s, job.map(Effect::Backend).into_iter().collect())
    }

    fn debug_save_path(&self, task_id: &str) -> Option<PathBuf> {
        let dir = self
            .opts
            .debug_dir
            .clone()
            .or_else(|| self.session_path.as_ref().map(|p| p.join("debug")))?;
        let safe: String = task_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = if safe.is_empty() { "task".into() } else { safe };
        Some(dir.join(format!("debug-{name}.json")))
    }

    /// Adds a log line, dropping the oldest beyond [`LOG_CAPACITY`].
    pub fn log(&mut self, level: Level, text: impl Into<String>) {
        self.log.push_back(LogLine {
            level,
            text: text.into(),
        });
        while self.log.len() > LOG_CAPACITY {
            self.log.pop_front();
        }
    }

    /// The last completed step (from metrics).
    pub fn last_step(&self) -> u64 {
        self.metrics.last().map_or(0, |m| m.step)
    }

    /// Estimated seconds to finish: mean duration of the last 20 steps × remaining steps.
    pub fn eta_s(&self) -> Option<f64> {
        if self.total_steps == 0 || self.run_state == RunState::Finished {
            return None;
        }
        let times: Vec<f64> = self
            .metrics
            .iter()
            .rev()
            .take(20)
            .map(|m| m.step_time_s)
            .filter(|t| t.is_finite())
            .collect();
        if times.is_empty() {
            return None;
        }
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        Some(mean * self.total_steps.saturating_sub(self.last_step()) as f64)
    }

    /// Latest throughput: progress if known, else the last metrics line.
    pub fn tokens_per_s(&self) -> f64 {
        self.progress
            .as_ref()
            .map(|p| p.tokens_per_s)
            .filter(|t| t.is_finite())
            .or_else(|| self.metrics.last().map(|m| m.tokens_per_s))
            .unwrap_or(f64::NAN)
    }

    fn add_metrics(&mut self, m: MetricsRecord) {
        // A resumed run re-emits steps after its checkpoint: replace them.
        if self.metrics.last().is_some_and(|l| l.step >= m.step) {
            let keep = self.metrics.partition_point(|x| x.step < m.step);
            self.metrics.truncate(keep);
        }
        self.metrics.push(m);
    }

    fn open_debugger_on(&mut self, seq: u64) -> Vec<Effect> {
        let Some(item) = self.trajs.get(seq) else {
            return Vec::new();
        };
        match &item.record {
            Some(rec) => {
                let initial = DebugInitial::Trajectory {
                    record: rec.clone(),
                    plan_index: None,
                };
                let mut d = DebuggerState::new(initial, self.model.clone());
                d.save_path = self.debug_save_path(&d.task.id);
                self.debugger = Some(Box::new(d));
                self.sync_debugger_model();
                Vec::new()
            }
            None => {
                self.pending_debug = Some(seq);
                self.flash = Some("loading trajectory…".into());
                vec![load_effect(item)]
            }
        }
    }

    /// The newest committed checkpoint: its directory (resolved against the session
    /// directory) and step.
    pub fn latest_checkpoint(&self) -> Option<(PathBuf, u64)> {
        let ck = self.checkpoints.iter().max_by_key(|c| c.step)?;
        let rel = PathBuf::from(&ck.path);
        let path = match &self.session_path {
            Some(p) if rel.is_relative() => {
                // replay may open a JSONL file of the session rather than its directory
                let dir = if p.extension().is_some_and(|e| e == "jsonl") {
                    p.parent().map(PathBuf::from).unwrap_or_default()
                } else {
                    p.clone()
                };
                dir.join(rel)
            }
            _ => rel,
        };
        Some((path, ck.step))
    }

    /// Copies the model state (and whether a newer checkpoint exists) into the open debugger.
    fn sync_debugger_model(&mut self) {
        let newest = self.checkpoints.iter().map(|c| c.step).max();
        let Some(d) = self.debugger.as_mut() else {
            return;
        };
        d.model = self.model.clone();
        d.newer_checkpoint = match &self.model {
            ModelState::Ready {
                step,
                reloadable: true,
                ..
            } => newest.filter(|n| step.is_none_or(|s| *n > s)),
            _ => None,
        };
    }

    /// Starts loading the model on demand with the latest checkpoint's adapters.
    fn load_model(&mut self) -> Vec<Effect> {
        let Some(what) = self.model.loadable().map(str::to_string) else {
            return Vec::new();
        };
        let what = self.opts.loader.clone().unwrap_or(what);
        let (checkpoint, step) = match self.latest_checkpoint() {
            Some((p, s)) => (Some(p), Some(s)),
            None => (None, None),
        };
        let adapters = match step {
            Some(s) => format!("adapters of checkpoint step {s}"),
            None => "fresh adapters (no checkpoint yet)".to_string(),
        };
        self.log(
            Level::Info,
            format!("debugger: loading {what} with {adapters}"),
        );
        self.model = ModelState::Loading { what, step };
        self.sync_debugger_model();
        vec![Effect::Backend(BackendJob::Load { checkpoint, step })]
    }

    fn quit(&mut self) -> Vec<Effect> {
        if self.mode != Mode::Live
            || !self.engine_connected
            || self.run_state == RunState::Finished
            || self.quit_deadline_ms.is_some()
        {
            return vec![Effect::Quit];
        }
        self.quit_deadline_ms = Some(self.now_ms + self.opts.quit_timeout_ms);
        self.flash = Some("stopping training and saving… (q again to quit now)".into());
        self.log(Level::Info, "quit requested: stopping the run");
        vec![Effect::Command(TrainCommand::Stop)]
    }
}

fn load_effect(item: &trajs::TrajItem) -> Effect {
    Effect::Load {
        seq: item.seq,
        disk_index: item.disk_index,
        step: item.step,
        task_id: item.task_id.clone(),
    }
}

/// Applies one message to the state and returns the work it implies.
pub fn update(s: &mut AppState, msg: Msg) -> Vec<Effect> {
    let out = update_inner(s, msg);
    s.sync_debugger_model();
    out
}

fn update_inner(s: &mut AppState, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(k) => {
            if k.kind == KeyEventKind::Release {
                return Vec::new();
            }
            on_key(s, k)
        }
        Msg::Engine(ev) => on_engine(s, ev),
        Msg::EngineGone => {
            if s.engine_connected {
                s.engine_connected = false;
                if s.run_state != RunState::Finished {
                    s.log(Level::Error, "the trainer stopped sending events");
                    s.last_error = Some("the trainer stopped sending events".into());
                }
            }
            if s.quit_deadline_ms.is_some() {
                return vec![Effect::Quit];
            }
            Vec::new()
        }
        Msg::Tick(ms) => {
            s.now_ms = ms;
            match s.quit_deadline_ms {
                Some(d) if ms >= d => vec![Effect::Quit],
                _ => Vec::new(),
            }
        }
        Msg::Disk(b) => {
            on_disk(s, b);
            Vec::new()
        }
        Msg::Loaded { seq, result } => match result {
            Ok(rec) => {
                s.trajs.set_record(seq, rec);
                if s.pending_debug == Some(seq) {
                    s.pending_debug = None;
                    s.flash = None;
                    return s.open_debugger_on(seq);
                }
                Vec::new()
            }
            Err(e) => {
                if s.pending_debug == Some(seq) {
                    s.pending_debug = None;
                }
                s.flash = Some(format!("cannot load trajectory: {e}"));
                s.log(Level::Warn, format!("cannot load trajectory: {e}"));
                Vec::new()
            }
        },
        Msg::Texts(texts) => {
            for (seq, text, shape) in texts {
                if let Some(it) = s.trajs.get_mut(seq) {
                    it.task_text = Some(text);
                    it.plan_len = Some(shape);
                }
            }
            Vec::new()
        }
        Msg::Backend(reply) => {
            if let BackendReply::Loaded { step, result } = &reply {
                let what = match &s.model {
                    ModelState::Loading { what, .. } => what.clone(),
                    other => other.loadable().unwrap_or("the model").to_string(),
                };
                s.model = match result {
                    Ok(describe) => {
                        s.log(Level::Info, format!("debugger model ready: {describe}"));
                        ModelState::Ready {
                            describe: describe.clone(),
                            step: *step,
                            reloadable: true,
                        }
                    }
                    Err(error) => {
                        s.log(
                            Level::Warn,
                            format!("loading the debugger model failed: {error}"),
                        );
                        ModelState::Failed {
                            what,
                            error: error.clone(),
                        }
                    }
                };
                s.sync_debugger_model();
            }
            match s.debugger.as_mut().and_then(|d| d.on_reply(reply)) {
                Some(a) => debug_action(s, a),
                None => Vec::new(),
            }
        }
        Msg::Saved(r) => {
            let text = match r {
                Ok(p) => format!("debugger session saved to {}", p.display()),
                Err(e) => format!("saving the debugger session failed: {e}"),
            };
            if let Some(d) = s.debugger.as_mut() {
                d.message = Some(text.clone());
            }
            s.flash = Some(text);
            Vec::new()
        }
    }
}

fn debug_action(s: &mut AppState, a: DebugAction) -> Vec<Effect> {
    match a {
        DebugAction::Job(j) => vec![Effect::Backend(j)],
        DebugAction::Save { path, json } => vec![Effect::SaveDebug { path, json }],
        DebugAction::LoadModel => s.load_model(),
        DebugAction::Close => {
            if s.mode == Mode::Debug {
                vec![Effect::Quit]
            } else {
                s.debugger = None;
                Vec::new()
            }
        }
    }
}

fn on_engine(s: &mut AppState, ev: TrainEvent) -> Vec<Effect> {
    match ev {
        TrainEvent::Started {
            info,
            total_steps,
            start_step,
            session_dir,
            device,
        } => {
            s.log(
                Level::Info,
                format!(
                    "run started: {} ({}), steps {}..{}",
                    info.model,
                    info.mode,
                    start_step + 1,
                    total_steps
                ),
            );
            s.total_steps = total_steps;
            s.device = device;
            s.session_path = Some(session_dir);
            s.run_info = Some(info);
            s.run_state = RunState::Running;
        }
        TrainEvent::Metrics(m) => s.add_metrics(m),
        TrainEvent::Trajectory(t) => s.trajs.push_record(t),
        TrainEvent::Checkpoint(c) => {
            s.log(
                Level::Info,
                format!("checkpoint saved: step {} ({})", c.step, c.path),
            );
            s.checkpoints.retain(|x| x.step != c.step);
            s.checkpoints.push(c);
        }
        TrainEvent::Status { state, message } => {
            s.run_state = state;
            let text = if message.is_empty() {
                format!("trainer {}", state.label())
            } else {
                format!("trainer {}: {message}", state.label())
            };
            s.log(Level::Info, text);
        }
        TrainEvent::Progress {
            step,
            phase,
            tokens_per_s,
            memory_bytes,
        } => {
            s.progress = Some(Progress {
                step,
                phase,
                tokens_per_s,
                memory_bytes,
            })
        }
        TrainEvent::Warning(w) => s.log(Level::Warn, w),
        TrainEvent::Error(e) => {
            s.log(Level::Error, e.clone());
            s.last_error = Some(e);
        }
        TrainEvent::Finished {
            step,
            completed,
            checkpoint,
            message,
        } => {
            s.run_state = RunState::Finished;
            let ck = checkpoint
                .map(|c| format!(", checkpoint step {}", c.step))
                .unwrap_or_default();
            let how = if completed { "completed" } else { "ended" };
            s.log(
                Level::Info,
                format!("run {how} at step {step}{ck}: {message}"),
            );
            s.flash = Some(format!("run {how} at step {step}{ck}"));
            if s.quit_deadline_ms.is_some() {
                return vec![Effect::Quit];
            }
        }
    }
    Vec::new()
}

fn on_disk(s: &mut AppState, b: DiskBatch) {
    if let Some(info) = b.run_info {
        s.total_steps = info.total_steps;
        s.device = info.device.clone();
        s.run_info = Some(info);
    }
    if b.metrics_reset {
        s.metrics.clear();
        s.log(Level::Warn, "metrics file was replaced; re-read");
    }
    for m in b.metrics {
        s.add_metrics(m);
    }
    if b.trajectories_reset {
        s.trajs.clear();
        s.log(Level::Warn, "trajectories file was replaced; re-read");
    }
    for (i, summary, rec) in b.entries {
        s.trajs.push_entry(i, &summary, rec);
    }
    for c in b.checkpoints {
        s.checkpoints.retain(|x| x.step != c.step);
        s.checkpoints.push(c);
    }
    for p in b.problems {
        s.log(Level::Warn, p.clone());
        s.problems.push(p);
    }
}

fn on_key(s: &mut AppState, k: KeyEvent) -> Vec<Effect> {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(k.code, KeyCode::Char('c')) {
        return s.quit();
    }
    s.last_error = None;
    if s.help {
        s.help = false;
        return Vec::new();
    }
    if s.input.is_some() {
        return on_input_key(s, k);
    }
    if let Some(d) = s.debugger.as_mut() {
        if d.editor.is_none() && k.code == KeyCode::Char('?') {
            s.help = true;
            return Vec::new();
        }
        return match d.handle_key(k) {
            Some(a) => debug_action(s, a),
            None => Vec::new(),
        };
    }
    s.flash = None;
    let live = s.mode == Mode::Live;
    match k.code {
        KeyCode::Char('?') => s.help = true,
        KeyCode::Char('q') => return s.quit(),
        KeyCode::Tab | KeyCode::BackTab => {
            s.focus = match s.focus {
                Pane::Trajectories => Pane::Log,
                Pane::Log => Pane::Trajectories,
            }
        }
        KeyCode::Char('j') | KeyCode::Down => move_in_pane(s, 1),
        KeyCode::Char('k') | KeyCode::Up => move_in_pane(s, -1),
        KeyCode::PageDown => move_in_pane(s, 10),
        KeyCode::PageUp => move_in_pane(s, -10),
        KeyCode::Enter => {
            if s.trajs.expanded {
                s.trajs.expanded = false;
            } else if let Some(seq) = s.trajs.current() {
                s.trajs.selected = Some(seq);
                s.trajs.expanded = true;
                s.trajs.detail_scroll = 0;
                s.focus = Pane::Trajectories;
                if let Some(it) = s.trajs.get(seq) {
                    if it.record.is_none() {
                        return vec![load_effect(it)];
                    }
                }
            }
        }
        KeyCode::Esc => s.trajs.expanded = false,
        KeyCode::Char('f') => {
            s.trajs.filter = s.trajs.filter.next();
            s.flash = Some(format!("filter: {}", s.trajs.filter.label()));
        }
        KeyCode::Char(' ') => {
            s.trajs.toggle_freeze();
            if s.trajs.frozen_at.is_some() {
                s.trajs.selected = s.trajs.current();
            }
        }
        KeyCode::Char('/') => {
            s.input = Some(Input {
                kind: InputKind::Search,
                text: s.trajs.search.clone(),
            })
        }
        KeyCode::Char('g') => {
            s.input = Some(Input {
                kind: InputKind::Jump,
                text: String::new(),
            })
        }
        KeyCode::Char('c') => s.chart = s.chart.next(),
        KeyCode::Char('w') => {
            s.range = match s.range {
                ChartRange::Whole => ChartRange::Window(s.window),
                ChartRange::Window(_) => ChartRange::Whole,
            }
        }
        KeyCode::Char('p') if live => {
            if !s.engine_connected || s.run_state == RunState::Finished {
                s.flash = Some("the run is not active".into());
            } else if s.run_state == RunState::Paused {
                s.flash = Some("resume requested".into());
                return vec![Effect::Command(TrainCommand::Resume)];
            } else {
                s.flash = Some("pause requested".into());
                return vec![Effect::Command(TrainCommand::Pause)];
            }
        }
        KeyCode::Char('s') if live => {
            if !s.engine_connected || s.run_state == RunState::Finished {
                s.flash = Some("the run is not active".into());
            } else {
                s.flash = Some("checkpoint requested".into());
                return vec![Effect::Command(TrainCommand::SaveCheckpoint)];
            }
        }
        KeyCode::Char('x') if live => {
            if !s.engine_connected || s.run_state == RunState::Finished {
                s.flash = Some("the run is not active".into());
            } else {
                s.input = Some(Input {
                    kind: InputKind::ConfirmStop,
                    text: String::new(),
                });
            }
        }
        KeyCode::Char('p' | 's' | 'x') => {
            s.flash = Some("replay: training controls are only available in cahl-tui train".into())
        }
        KeyCode::Char('d') => {
            if let Some(seq) = s.trajs.current() {
                s.trajs.selected = Some(seq);
                return s.open_debugger_on(seq);
            }
            s.flash = Some("no trajectory selected".into());
        }
        _ => {}
    }
    Vec::new()
}

fn move_in_pane(s: &mut AppState, delta: isize) {
    match s.focus {
        Pane::Trajectories if s.trajs.expanded => {
            let max = s
                .trajs
                .current()
                .and_then(|q| s.trajs.get(q))
                .and_then(|it| it.record.as_deref())
                .map_or(0, trajs::detail_line_bound);
            s.trajs.detail_scroll = s.trajs.detail_scroll.saturating_add_signed(delta).min(max);
        }
        Pane::Trajectories => s.trajs.move_selection(delta),
        Pane::Log => {
            // Scrolling "down" moves towards the newest line.
            s.log_scroll = s
                .log_scroll
                .saturating_add_signed(-delta)
                .min(s.log.len().saturating_sub(1));
        }
    }
}

fn on_input_key(s: &mut AppState, k: KeyEvent) -> Vec<Effect> {
    let Some(input) = s.input.as_mut() else {
        return Vec::new();
    };
    if input.kind == InputKind::ConfirmStop {
        let yes = matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y'));
        s.input = None;
        if yes {
            s.flash = Some("stop requested: the trainer will save and stop".into());
            s.log(Level::Info, "stop requested");
            return vec![Effect::Command(TrainCommand::Stop)];
        }
        s.flash = Some("stop cancelled".into());
        return Vec::new();
    }
    match k.code {
        KeyCode::Esc => s.input = None,
        KeyCode::Backspace => {
            input.text.pop();
        }
        KeyCode::Char(c) if input.kind == InputKind::Search || c.is_ascii_digit() => {
            input.text.push(c);
        }
        KeyCode::Enter => {
            let Some(input) = s.input.take() else {
                return Vec::new();
            };
            match input.kind {
                InputKind::Search => {
                    let q = input.text.trim().to_string();
                    s.trajs.search = q.clone();
                    s.trajs.selected = None;
                    s.trajs.expanded = false;
                    if q.is_empty() {
                        s.flash = Some("search cleared".into());
                        return Vec::new();
                    }
                    let n = s.trajs.visible().len();
                    s.flash = Some(format!("search '{q}': {n} matching"));
                    let missing = s.trajs.iter().any(|it| it.task_text.is_none());
                    if missing {
                        return vec![Effect::LoadTexts];
                    }
                }
                InputKind::Jump => match input.text.parse::<u64>() {
                    Ok(step) => {
                        s.trajs.expanded = false;
                        if s.trajs.jump_to_step(step) {
                            let at = s
                                .trajs
                                .current()
                                .and_then(|q| s.trajs.get(q))
                                .map_or(step, |it| it.step);
                            s.flash = Some(format!("jumped to step {at}"));
                            s.focus = Pane::Trajectories;
                        } else {
                            s.flash = Some("no trajectories to jump to".into());
                        }
                    }
                    Err(_) => s.flash = Some("type a step number".into()),
                },
                InputKind::ConfirmStop => {}
            }
        }
        _ => {}
    }
    Vec::new()
}

//! Pure UI state and its update function. Nothing here touches the terminal: the event loop in
//! [`crate::app`] feeds [`Msg`]s into [`update`] and carries out the returned [`Effect`]s.
//!
//! One file per pane: [`charts`] (the curves), [`trajs`] (the trajectory stream), [`status`]
//! (status bar, message log, the engine's control events), [`prompt`] (search/jump/stop prompt),
//! [`debugger`] (the plan-editing debugger) and [`debug_host`] (opening it from the dashboard);
//! [`data`] holds what all panes show, read from the session files. The help overlay is only a
//! flag here ([`AppState::help`]); its text lives with its view.

pub mod cases;
pub mod charts;
pub mod data;
pub mod debug_host;
pub mod debugger;
pub mod prompt;
pub mod status;
pub mod trajs;

use std::collections::VecDeque;
use std::path::PathBuf;

use cahl_sessions::{
    BackendJob, BackendReply, CheckpointRecord, MetricsRecord, RunInfo, RunState, TrainCommand,
    TrainEvent, TrajectoryRecord,
};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use charts::{ChartKind, ChartRange};
use debugger::{DebugInitial, DebuggerState, ModelState};
use trajs::TrajList;

pub use data::DiskBatch;
pub use prompt::{Input, InputKind};
pub use status::{Level, LogLine, Progress, LOG_CAPACITY};

/// Default number of steps in the recent-window chart view.
pub const DEFAULT_WINDOW: usize = 100;

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
    /// Data read from the session files.
    Disk(DiskBatch),
    /// A trajectory requested with [`Effect::Load`] was loaded (or failed).
    Loaded {
        /// Item seq.
        seq: u64,
        /// The record or why it could not be read.
        result: Result<Box<TrajectoryRecord>, TrajectoryLoadError>,
    },
    /// Task texts and plan shapes requested with [`Effect::LoadTexts`]: `(seq, text, shape)`.
    Texts(Vec<(u64, String, (usize, usize))>),
    /// A debugger backend result.
    Backend(BackendReply),
    /// A debugger session file was written (or failed).
    Saved(Result<PathBuf, SaveError>),
    /// A case was saved (its file) or why it was not.
    CaseSaved(Result<PathBuf, String>),
    /// The case library, read for the overlay.
    Cases(Box<cases::CasesView>),
    /// A termination signal (SIGTERM, SIGINT, SIGHUP) arrived: end as `q` does.
    Signal(&'static str),
}

/// Why a trajectory requested with [`Effect::Load`] could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TrajectoryLoadError {
    /// The session files could not be read at the trajectory's entry.
    #[error("{0}")]
    Read(cahl_sessions::Problem),
    /// No session is open.
    #[error("no session to read from")]
    NoSession,
    /// The trajectory is only in the live buffer.
    #[error("not in the session files")]
    NotOnDisk,
}

/// Why a debugger session file could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SaveError {
    /// The file's directory could not be created.
    #[error("{}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The atomic write failed.
    #[error(transparent)]
    Write(std::sync::Arc<cahl_sessions::SessionError>),
}

/// Work for the event loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a command to the trainer.
    Command(TrainCommand),
    /// Read what is new in the session files now (attaching to [`AppState::session_path`]
    /// first in live mode) and answer with [`Msg::Disk`].
    ReadSession,
    /// Load a full trajectory from the session files and answer with [`Msg::Loaded`].
    Load {
        /// Item seq.
        seq: u64,
        /// Index of its entry in the session reader (`None`: not from the files).
        disk_index: Option<usize>,
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
    /// Read the session's case library and answer with [`Msg::Cases`].
    LoadCases {
        /// The session directory.
        session: PathBuf,
    },
    /// Save a case into the session's case library and answer with [`Msg::CaseSaved`].
    SaveCase {
        /// The session directory.
        session: PathBuf,
        /// The case.
        case: Box<cahl_sessions::CaseRecord>,
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
    /// Exponential moving average of the line series (`m`; TensorBoard's smoothing): `None`
    /// shows the raw values.
    pub smoothing: Option<f64>,
    /// In a components panel, the one component shown (`C` cycles; `None`: all of them).
    pub component: Option<usize>,
    /// Focused pane.
    pub focus: Pane,
    /// Scroll of the log pane (lines from the newest).
    pub log_scroll: usize,
    /// Active prompt.
    pub input: Option<Input>,
    /// Help overlay shown.
    pub help: bool,
    /// The case library overlay (`v`), when open.
    pub cases: Option<cases::CasesView>,
    /// Small terminals (under 100x30) show one pane at a time: the charts (`1`) or the stream
    /// (`2`; `tab` switches trajectories and messages).
    pub compact_charts: bool,
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
            smoothing: None,
            component: None,
            focus: Pane::default(),
            log_scroll: 0,
            input: None,
            help: false,
            cases: None,
            compact_charts: false,
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
}

fn load_effect(item: &trajs::TrajItem) -> Effect {
    Effect::Load {
        seq: item.seq,
        disk_index: item.disk_index,
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
        Msg::Engine(ev) => status::on_engine(s, ev),
        Msg::EngineGone => status::on_engine_gone(s),
        Msg::Tick(ms) => {
            s.now_ms = ms;
            match s.quit_deadline_ms {
                Some(d) if ms >= d => vec![Effect::Quit],
                _ => Vec::new(),
            }
        }
        Msg::Disk(b) => {
            data::on_disk(s, b);
            Vec::new()
        }
        Msg::Loaded { seq, result } => data::on_loaded(s, seq, result),
        Msg::Texts(texts) => {
            data::on_texts(s, texts);
            Vec::new()
        }
        Msg::Backend(reply) => debug_host::on_backend(s, reply),
        Msg::Signal(name) => {
            s.log(Level::Warn, format!("{name} received: ending as q does"));
            s.quit()
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
        Msg::Cases(v) => {
            s.flash = None;
            s.cases = Some(*v);
            Vec::new()
        }
        Msg::CaseSaved(r) => {
            let text = match r {
                Ok(p) => {
                    let id = p
                        .file_stem()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let session = s
                        .session_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|| "SESSION".into());
                    s.log(Level::Info, format!("case {id} saved to {}", p.display()));
                    format!("case {id} saved · re-run the library: cahl-tui cases run {session}")
                }
                Err(e) => {
                    s.log(Level::Warn, format!("saving the case failed: {e}"));
                    format!("saving the case failed: {e}")
                }
            };
            if let Some(d) = s.debugger.as_mut() {
                d.message = Some(text.clone());
            }
            s.flash = Some(text);
            Vec::new()
        }
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
        return prompt::on_input_key(s, k);
    }
    if s.cases.is_some() && s.debugger.is_none() {
        return cases::on_key(s, k);
    }
    if let Some(d) = s.debugger.as_mut() {
        if d.editor.is_none() && d.case_input.is_none() && k.code == KeyCode::Char('?') {
            s.help = true;
            return Vec::new();
        }
        return match d.handle_key(k) {
            Some(a) => debug_host::debug_action(s, a),
            None => Vec::new(),
        };
    }
    s.flash = None;
    let live = s.mode == Mode::Live;
    match k.code {
        KeyCode::Char('?') => s.help = true,
        KeyCode::Char('v') => return cases::open(s),
        KeyCode::Char('1') => s.compact_charts = true,
        KeyCode::Char('2') => s.compact_charts = false,
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
            let present: Vec<&str> = s
                .trajs
                .iter()
                .filter(|it| !it.success)
                .filter_map(|it| it.failure.as_deref())
                .collect();
            s.trajs.filter = s.trajs.filter.next_among(&present);
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
        KeyCode::Char('c') => {
            s.chart = s.chart.next();
            s.component = None;
        }
        KeyCode::Char('C') => {
            // All components, then each one alone.
            let n = charts::kind_series(s.chart, &s.metrics).len();
            s.component = match s.component {
                _ if !s.chart.is_components() || n == 0 => None,
                None => Some(0),
                Some(i) if i + 1 < n => Some(i + 1),
                Some(_) => None,
            };
        }
        KeyCode::Char('m') => {
            s.smoothing = match s.smoothing {
                None => Some(charts::DEFAULT_SMOOTHING),
                Some(_) => None,
            };
        }
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

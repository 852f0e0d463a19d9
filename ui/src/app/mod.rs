//! The terminal front end: the entry points ([`run_live`], [`run_replay`], [`run_debugger`]) and
//! their options. The parts live apart: [`terminal`] (setup, restore, panic hook), [`workers`]
//! (input thread, engine forwarder, backend worker), [`session`] (the session files as the one
//! source of run data) and `runtime` (the loop: effects, session reads, drawing).
//!
//! Everything arrives as a [`Msg`] on one channel; [`update`] turns it into state changes and
//! [`Effect`]s that the runtime carries out. Drawing happens at most `fps` times per second,
//! after all pending messages were applied, so a fast engine never makes the UI fall behind (the
//! state keeps a bounded buffer; the session files on disk hold everything).

mod runtime;
pub mod session;
pub mod signals;
pub mod terminal;
pub mod workers;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use cahl_sessions::{BackendLoader, ExecutorBackend, TrainCommand, TrainEvent};

use crate::state::debugger::DebugInitial;
use crate::state::{update, AppState, Effect, Mode, Msg, StateOptions};
pub(crate) use runtime::Runtime;
pub use runtime::MAX_TEXT_LOADS;
use session::SessionFeed;
pub use terminal::restore_terminal;
use workers::{spawn_backend_worker, spawn_engine_forwarder, spawn_input_thread};

/// Errors that end the UI.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// Terminal I/O failed.
    #[error("terminal: {0}")]
    Io(#[from] io::Error),
    /// The session could not be opened.
    #[error(transparent)]
    Session(#[from] cahl_sessions::SessionError),
    /// Drawing failed.
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// Result type of the entry points.
pub type Result<T> = std::result::Result<T, UiError>;

/// Options of the terminal UI.
pub struct UiOptions {
    /// Maximum frames per second (default 20).
    pub fps: u32,
    /// Trajectories kept in the live buffer (default 2,000).
    pub live_capacity: usize,
    /// Trajectories whose full record stays in memory (default 256); older ones are re-read
    /// from the session files when expanded.
    pub full_records: usize,
    /// Steps in the recent-window chart (default 100).
    pub window: usize,
    /// How long `q` waits for the trainer to stop and save (default 120 s).
    pub quit_timeout: Duration,
    /// How often replay re-reads the session files to follow a live run (default 500 ms).
    pub poll_interval: Duration,
    /// Executor backend for the debugger opened from train/replay (`d`); `None` = no model.
    pub backend: Option<Box<dyn ExecutorBackend>>,
    /// Loads a backend on demand (used when `backend` is `None`): nothing is loaded until the
    /// debugger first runs the planner or executor (or `L` is pressed); loading happens on the
    /// worker thread while the UI shows "loading model…".
    pub loader: Option<Box<dyn BackendLoader>>,
    /// Where debugger sessions are saved (default `<session>/debug/`).
    pub debug_dir: Option<PathBuf>,
    /// The standalone debugger's session, when it has one: its checkpoints are offered by
    /// the picker (`o`, with a `loader`) and its case library takes the cases (`a`).
    pub session: Option<PathBuf>,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            fps: 20,
            live_capacity: 2000,
            full_records: 256,
            window: crate::state::DEFAULT_WINDOW,
            quit_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
            backend: None,
            loader: None,
            debug_dir: None,
            session: None,
        }
    }
}

impl std::fmt::Debug for UiOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiOptions")
            .field("fps", &self.fps)
            .field("live_capacity", &self.live_capacity)
            .field("full_records", &self.full_records)
            .field("window", &self.window)
            .field("quit_timeout", &self.quit_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("backend", &self.backend.as_ref().map(|b| b.describe()))
            .field("loader", &self.loader.as_ref().map(|l| l.describe()))
            .field("debug_dir", &self.debug_dir)
            .field("session", &self.session)
            .finish()
    }
}

impl UiOptions {
    fn state_options(&self) -> StateOptions {
        StateOptions {
            live_capacity: self.live_capacity,
            full_records: self.full_records,
            window: self.window,
            quit_timeout_ms: self.quit_timeout.as_millis() as u64,
            backend: self.backend.as_ref().map(|b| b.describe()),
            loader: self.loader.as_ref().map(|l| l.describe()),
            debug_dir: self.debug_dir.clone(),
        }
    }
}

fn with_terminal(rt: &mut Runtime, state: &mut AppState, initial: Vec<Effect>) -> Result<()> {
    let tx = rt.tx.clone();
    signals::listen(move |sig| tx.send(Msg::Signal(sig.name)).is_ok())?;
    let (guard, mut terminal) = terminal::setup_terminal()?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_input_thread(rt.tx.clone(), stop.clone(), rt.start);
    let res = rt.run(&mut terminal, state, initial);
    stop.store(true, Ordering::Relaxed);
    drop(guard);
    res
}

/// The live training dashboard. Reads engine events from `events`, sends user commands on
/// `commands`. Run data (metrics, trajectories, checkpoints) is read from the session directory
/// named by the first event, `Started`, as replay reads it; the other events are control
/// information (see the crate docs). Returns when the user quits (after the trainer confirmed it stopped, or after
/// [`UiOptions::quit_timeout`]) or the terminal fails. Engine errors are shown, not fatal.
pub fn run_live(
    events: Receiver<TrainEvent>,
    commands: Sender<TrainCommand>,
    mut opts: UiOptions,
) -> Result<()> {
    let mut state = AppState::new(Mode::Live, opts.state_options());
    let mut rt = Runtime::new(&opts);
    rt.commands = Some(commands);
    rt.backend_tx = spawn_backend_worker(&mut opts, rt.tx.clone());
    spawn_engine_forwarder(events, rt.tx.clone());
    with_terminal(&mut rt, &mut state, Vec::new())
}

/// Prepares replay state and runtime for `path` (a session directory or a JSONL file).
pub(crate) fn replay_setup(path: &Path, opts: &mut UiOptions) -> Result<(AppState, Runtime)> {
    let (feed, batch) = SessionFeed::open(path)?;
    let mut state = AppState::new(Mode::Replay, opts.state_options());
    state.session_path = Some(path.to_path_buf());
    update(&mut state, Msg::Disk(batch));
    let mut rt = Runtime::new(opts);
    rt.feed = feed;
    rt.backend_tx = spawn_backend_worker(opts, rt.tx.clone());
    Ok((state, rt))
}

/// Browses a recorded session (directory, `trajectories.jsonl` or `metrics.jsonl`) without a
/// model; follows the files if they are still growing. Problems in the files are shown in a
/// banner; only a path that cannot be opened at all is an error.
pub fn run_replay(path: impl AsRef<Path>, mut opts: UiOptions) -> Result<()> {
    let (mut state, mut rt) = replay_setup(path.as_ref(), &mut opts)?;
    with_terminal(&mut rt, &mut state, Vec::new())
}

/// The standalone debugger. `backend` runs the planner/executor; without it, plan editing,
/// branches and the gold comparison still work and running explains that a model is needed.
pub fn run_debugger(
    initial: DebugInitial,
    backend: Option<Box<dyn ExecutorBackend>>,
    mut opts: UiOptions,
) -> Result<()> {
    if backend.is_some() {
        opts.backend = backend;
    }
    let (mut state, effects) = AppState::debugger(initial, opts.state_options());
    if let Some(session) = &opts.session {
        state.session_path = Some(session.clone());
        // Committed checkpoints only (an unreadable folder: none to pick).
        state.checkpoints = cahl_sessions::intact_checkpoints(session).unwrap_or_default();
        update(&mut state, Msg::Tick(0));
    }
    let mut rt = Runtime::new(&opts);
    rt.backend_tx = spawn_backend_worker(&mut opts, rt.tx.clone());
    with_terminal(&mut rt, &mut state, effects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fx;
    use cahl_sessions::SessionWriter;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;

    fn key(c: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn screen(t: &Terminal<TestBackend>) -> String {
        t.backend().to_string()
    }

    #[test]
    fn replay_of_damaged_session_opens_readable_part_and_loads_on_expand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run");
        fx::write_session(&path, 40, 3, true);
        let mut opts = UiOptions::default();
        let (mut state, mut rt) = replay_setup(&path, &mut opts).expect("replay opens");
        assert_eq!(state.metrics.len(), 40);
        assert_eq!(state.trajs.len(), 120);
        assert_eq!(state.checkpoints.len(), 1);
        assert!(
            state.problems.len() >= 2,
            "corrupt line and torn tail: {:?}",
            state.problems
        );
        assert!(state
            .problems
            .iter()
            .any(|p| p.contains("trajectories.jsonl:121")));
        for m in [
            key(KeyCode::Char('j')),
            key(KeyCode::Enter),
            key(KeyCode::Char('q')),
        ] {
            rt.tx.send(m).expect("send");
        }
        let mut term = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
        rt.run(&mut term, &mut state, Vec::new())
            .expect("loop ends on q");
        let seq = state.trajs.current().expect("selection");
        let item = state.trajs.get(seq).expect("item");
        assert!(state.trajs.expanded);
        assert_eq!(item.step, 40);
        assert_eq!(item.task_id, "t-1");
        assert!(item.record.is_some(), "loaded from disk by the loop");
        // The last frame was drawn before `q` was applied, after Enter: it shows the plan tree.
        let out = screen(&term);
        assert!(out.contains("REPLAY"), "{out}");
        assert!(out.contains("file problems"), "{out}");
    }

    /// Opening a recorded session shows every row's task text and plan shape at once (they come
    /// with the index), so a search counts right from the first key.
    #[test]
    fn replay_rows_have_their_texts_and_search_finds_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        fx::write_session(dir.path(), 10, 3, false);
        let mut opts = UiOptions::default();
        let (mut state, mut rt) = replay_setup(dir.path(), &mut opts).expect("open");
        assert!(state
            .trajs
            .iter()
            .all(|it| it.task_text.is_some() && it.plan_len == Some((2, 2))));
        let mut msgs = vec![key(KeyCode::Char('/'))];
        msgs.extend("lyon".chars().map(|c| key(KeyCode::Char(c))));
        msgs.push(key(KeyCode::Enter));
        for m in msgs {
            assert!(!rt.handle(&mut state, m));
        }
        assert_eq!(
            state.trajs.visible().len(),
            10,
            "t-1 is the Lyon task at every step"
        );
        assert_eq!(state.flash.as_deref(), Some("search 'lyon': 10 matching"));
    }

    #[test]
    fn replay_follows_a_growing_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            SessionWriter::create(dir.path(), "seed = 7\n", &fx::run_info(10)).expect("create");
        w.append_metrics(&fx::metrics(1)).expect("append");
        w.sync().expect("sync");
        let mut opts = UiOptions::default();
        let (mut state, mut rt) = replay_setup(dir.path(), &mut opts).expect("open");
        assert_eq!(state.metrics.len(), 1);
        assert!(rt.read_session(&mut state).is_none(), "nothing new yet");
        w.append_trajectory(&fx::trajectory(2, 0)).expect("append");
        w.append_metrics(&fx::metrics(2)).expect("append");
        w.sync().expect("sync");
        let msg = rt.read_session(&mut state).expect("new data");
        assert!(!rt.handle(&mut state, msg));
        assert_eq!(state.metrics.len(), 2);
        assert_eq!(state.trajs.len(), 1);
        let it = state.trajs.iter().next().expect("item");
        assert!(
            it.record.is_some() && it.task_text.is_some(),
            "new lines arrive parsed"
        );
    }
}

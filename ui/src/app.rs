//! The event loop: terminal setup/restore, input thread, engine channel, disk polling, the
//! backend worker, and drawing capped at a frame rate.
//!
//! Everything arrives as a [`Msg`] on one channel; [`update`] turns it into state changes and
//! [`Effect`]s that this module carries out. Drawing happens at most `fps` times per second, after
//! all pending messages were applied, so a fast engine never makes the UI fall behind (the state
//! keeps a bounded buffer; the session files on disk hold everything).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use cahl_sessions::{SessionReader, TrainCommand, TrainEvent};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

use crate::backend::{BackendJob, BackendLoader, ExecutorBackend};
use crate::state::debugger::DebugInitial;
use crate::state::trajs::plan_shape;
use crate::state::{update, AppState, DiskBatch, Effect, Level, Mode, Msg, StateOptions};
use crate::view;

/// Name of the backend worker thread (a panic there must not restore the terminal).
pub const BACKEND_THREAD: &str = "cahl-ui-backend";

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

/// Restores the terminal: leaves raw mode and the alternate screen, shows the cursor.
pub fn restore_terminal() -> io::Result<()> {
    let r1 = disable_raw_mode();
    let r2 = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    r1.and(r2)
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The backend worker's panics are caught and shown in the UI; any other panic
            // must leave a usable terminal before the message is printed.
            if thread::current().name() != Some(BACKEND_THREAD) {
                let _ = restore_terminal();
            }
            prev(info);
        }));
    });
}

/// Restores the terminal when dropped (normal exit, error, or unwinding).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = restore_terminal();
    }
}

fn setup_terminal() -> Result<(TerminalGuard, Terminal<CrosstermBackend<io::Stdout>>)> {
    install_panic_hook();
    enable_raw_mode()?;
    let guard = TerminalGuard;
    let mut out = io::stdout();
    execute!(out, EnterAlternateScreen, cursor::Hide)?;
    out.flush()?;
    let terminal = Terminal::new(CrosstermBackend::new(out))?;
    Ok((guard, terminal))
}

/// Reads terminal input on its own thread (so the loop never blocks on it) until `stop`.
fn spawn_input_thread(tx: Sender<Msg>, stop: Arc<AtomicBool>, start: Instant) {
    thread::Builder::new()
        .name("cahl-ui-input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => {
                        let msg = match event::read() {
                            Ok(Event::Key(k)) => Msg::Key(k),
                            Ok(Event::Resize(..)) => Msg::Tick(start.elapsed().as_millis() as u64),
                            Ok(_) => continue,
                            Err(_) => break,
                        };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        })
        .ok();
}

fn spawn_engine_forwarder(events: Receiver<TrainEvent>, tx: Sender<Msg>) {
    thread::Builder::new()
        .name("cahl-ui-engine".into())
        .spawn(move || {
            for ev in events {
                if tx.send(Msg::Engine(ev)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Msg::EngineGone);
        })
        .ok();
}

/// Starts the worker that owns the backend (and the loader that can replace it), when there is
/// either; takes them out of `opts`.
fn spawn_backend_worker(opts: &mut UiOptions, tx: Sender<Msg>) -> Option<Sender<BackendJob>> {
    let mut backend = opts.backend.take();
    let mut loader = opts.loader.take();
    if backend.is_none() && loader.is_none() {
        return None;
    }
    let (jtx, jrx) = mpsc::channel::<BackendJob>();
    thread::Builder::new()
        .name(BACKEND_THREAD.into())
        .spawn(move || {
            for job in jrx {
                let reply = job.run_in(&mut backend, loader.as_deref_mut());
                if tx.send(Msg::Backend(reply)).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(jtx)
}

/// Builds a [`DiskBatch`] from a reader's newly read data.
pub fn batch_from_update(reader: &SessionReader, up: cahl_sessions::Update) -> DiskBatch {
    let mut records: Vec<_> = up.trajectories.into_iter().collect();
    records.sort_by_key(|(i, _)| *i);
    let mut rec_iter = records.into_iter().peekable();
    let entries = up
        .new_entries
        .clone()
        .filter_map(|i| {
            let e = reader.entries().get(i)?;
            let rec = match rec_iter.peek() {
                Some((j, _)) if *j == i => rec_iter.next().map(|(_, r)| Box::new(r)),
                _ => None,
            };
            Some((i, e.summary.clone(), rec))
        })
        .collect();
    DiskBatch {
        metrics_reset: up.metrics_reset,
        trajectories_reset: up.trajectories_reset,
        metrics: up.metrics,
        entries,
        checkpoints: up.checkpoints,
        problems: up.problems.iter().map(|p| p.to_string()).collect(),
        run_info: None,
    }
}

/// Everything already read by a freshly opened reader.
pub fn initial_batch(reader: &SessionReader) -> DiskBatch {
    DiskBatch {
        metrics_reset: false,
        trajectories_reset: false,
        metrics: reader.metrics().to_vec(),
        entries: reader
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.summary.clone(), None))
            .collect(),
        checkpoints: reader.checkpoints().to_vec(),
        problems: reader.problems().iter().map(|p| p.to_string()).collect(),
        run_info: reader.run_info().cloned(),
    }
}

/// Most task texts loaded for one search (beyond this, search matches ids only).
pub const MAX_TEXT_LOADS: usize = 50_000;

/// The running loop's resources.
pub(crate) struct Runtime {
    pub(crate) tx: Sender<Msg>,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) commands: Option<Sender<TrainCommand>>,
    pub(crate) reader: Option<SessionReader>,
    pub(crate) follow: bool,
    pub(crate) backend_tx: Option<Sender<BackendJob>>,
    pub(crate) fps: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) start: Instant,
}

impl Runtime {
    pub(crate) fn new(opts: &UiOptions) -> Self {
        let (tx, rx) = mpsc::channel();
        Runtime {
            tx,
            rx,
            commands: None,
            reader: None,
            follow: false,
            backend_tx: None,
            fps: opts.fps.clamp(1, 120),
            poll_interval: opts.poll_interval,
            start: Instant::now(),
        }
    }

    fn live_reader(&mut self, s: &AppState) -> Option<&mut SessionReader> {
        if self.reader.is_none() {
            let dir = s.session_path.as_ref()?;
            self.reader = SessionReader::open(dir).ok();
        } else if let Some(r) = self.reader.as_mut() {
            r.poll_new();
        }
        self.reader.as_mut()
    }

    fn apply(&mut self, s: &mut AppState, e: Effect, queue: &mut Vec<Msg>) -> bool {
        match e {
            Effect::Quit => return true,
            Effect::Command(c) => {
                let sent = self.commands.as_ref().is_some_and(|t| t.send(c).is_ok());
                if !sent {
                    s.log(
                        Level::Warn,
                        format!("the trainer is not listening ({c:?} dropped)"),
                    );
                }
            }
            Effect::Load {
                seq,
                disk_index,
                step,
                task_id,
            } => {
                let result = if s.mode == Mode::Live {
                    match self.live_reader(s) {
                        Some(r) => {
                            let idx = r.entries().iter().rposition(|e| {
                                e.summary.step == step && e.summary.task.id == task_id
                            });
                            match idx {
                                Some(i) => r.trajectory(i).map(Box::new).map_err(|p| p.to_string()),
                                None => Err("not found in the session files".to_string()),
                            }
                        }
                        None => Err("no session directory to read from".to_string()),
                    }
                } else {
                    match (self.reader.as_ref(), disk_index) {
                        (Some(r), Some(i)) => {
                            r.trajectory(i).map(Box::new).map_err(|p| p.to_string())
                        }
                        _ => Err("no session to read from".to_string()),
                    }
                };
                queue.push(Msg::Loaded { seq, result });
            }
            Effect::LoadTexts => {
                if let Some(r) = self.reader.as_ref() {
                    let texts: Vec<_> = s
                        .trajs
                        .iter()
                        .filter(|it| it.task_text.is_none())
                        .filter_map(|it| Some((it.seq, it.disk_index?)))
                        .take(MAX_TEXT_LOADS)
                        .filter_map(|(seq, i)| {
                            let rec = r.trajectory(i).ok()?;
                            let shape = plan_shape(&rec);
                            Some((seq, rec.task.text, shape))
                        })
                        .collect();
                    queue.push(Msg::Texts(texts));
                }
            }
            Effect::Backend(job) => {
                let sent = self
                    .backend_tx
                    .as_ref()
                    .is_some_and(|t| t.send(job.clone()).is_ok());
                if !sent {
                    queue.push(Msg::Backend(job.fail("no model backend")));
                }
            }
            Effect::SaveDebug { path, json } => {
                queue.push(Msg::Saved(
                    write_atomic(&path, json.as_bytes()).map(|_| path),
                ));
            }
        }
        false
    }

    /// Applies `msg` and everything it leads to; returns true when the UI should quit.
    pub(crate) fn handle(&mut self, s: &mut AppState, msg: Msg) -> bool {
        let mut queue = vec![msg];
        let mut quit = false;
        while let Some(m) = queue.pop() {
            for e in update(s, m) {
                quit |= self.apply(s, e, &mut queue);
            }
        }
        quit
    }

    fn poll_disk(&mut self) -> Option<Msg> {
        if !self.follow {
            return None;
        }
        let r = self.reader.as_mut()?;
        let up = r.poll_new();
        if up.is_empty() {
            return None;
        }
        let mut batch = batch_from_update(r, up);
        batch.run_info = r.run_info().cloned();
        Some(Msg::Disk(batch))
    }

    /// Runs until quit. Draws at most `fps` times per second, only when something changed.
    pub(crate) fn run<B: Backend>(
        &mut self,
        terminal: &mut Terminal<B>,
        s: &mut AppState,
        initial: Vec<Effect>,
    ) -> Result<()> {
        let frame = Duration::from_secs(1) / self.fps;
        let tick = Duration::from_millis(250);
        let mut queue = Vec::new();
        for e in initial {
            if self.apply(s, e, &mut queue) {
                return Ok(());
            }
        }
        for m in queue {
            if self.handle(s, m) {
                return Ok(());
            }
        }
        let mut dirty = true;
        let mut last_draw: Option<Instant> = None;
        let mut next_tick = Instant::now() + tick;
        let mut next_poll = Instant::now() + self.poll_interval;
        loop {
            let now = Instant::now();
            if dirty && last_draw.is_none_or(|t| now.duration_since(t) >= frame) {
                terminal
                    .draw(|f| view::draw(f, s))
                    .map_err(|e| UiError::Draw(e.to_string()))?;
                last_draw = Some(now);
                dirty = false;
            }
            let mut wait = next_tick.saturating_duration_since(now);
            if dirty {
                if let Some(t) = last_draw {
                    wait = wait.min(frame.saturating_sub(now.duration_since(t)));
                }
            }
            let first = match self.rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            if let Some(m) = first {
                dirty = true;
                if self.handle(s, m) {
                    break;
                }
                // Apply everything already waiting before the next frame (bounded, so input
                // stays responsive even under an event flood).
                let mut n = 0;
                while n < 20_000 {
                    let Ok(m) = self.rx.try_recv() else { break };
                    n += 1;
                    if self.handle(s, m) {
                        return Ok(());
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                next_tick = now + tick;
                let ms = now.duration_since(self.start).as_millis() as u64;
                if self.handle(s, Msg::Tick(ms)) {
                    break;
                }
            }
            if now >= next_poll {
                next_poll = now + self.poll_interval;
                if let Some(m) = self.poll_disk() {
                    dirty = true;
                    if self.handle(s, m) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` via a temp file and rename (creating the directory).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::result::Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    let res = (|| -> io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| format!("{}: {e}", path.display()))
}

fn with_terminal(rt: &mut Runtime, state: &mut AppState, initial: Vec<Effect>) -> Result<()> {
    let (guard, mut terminal) = setup_terminal()?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_input_thread(rt.tx.clone(), stop.clone(), rt.start);
    let res = rt.run(&mut terminal, state, initial);
    stop.store(true, Ordering::Relaxed);
    drop(guard);
    res
}

/// The live training dashboard. Reads engine events from `events`, sends user commands on
/// `commands`, returns when the user quits (after the trainer confirmed it stopped, or after
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
    let reader = SessionReader::open(path)?;
    let mut state = AppState::new(Mode::Replay, opts.state_options());
    state.session_path = Some(path.to_path_buf());
    let batch = initial_batch(&reader);
    update(&mut state, Msg::Disk(batch));
    let mut rt = Runtime::new(opts);
    rt.reader = Some(reader);
    rt.follow = true;
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
    let mut rt = Runtime::new(&opts);
    rt.backend_tx = spawn_backend_worker(&mut opts, rt.tx.clone());
    with_terminal(&mut rt, &mut state, effects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendReply, DebugStepOutcome, DebugStepRequest, PlanRequest};
    use crate::test_fixture as fx;
    use cahl_sessions::{RunState, SessionWriter};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

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

    #[test]
    fn replay_search_loads_texts_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        fx::write_session(dir.path(), 10, 3, false);
        let mut opts = UiOptions::default();
        let (mut state, mut rt) = replay_setup(dir.path(), &mut opts).expect("open");
        assert!(state.trajs.iter().all(|it| it.task_text.is_none()));
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
        assert!(state.trajs.iter().all(|it| it.task_text.is_some()));
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
        assert!(rt.poll_disk().is_none(), "nothing new yet");
        w.append_trajectory(&fx::trajectory(2, 0)).expect("append");
        w.append_metrics(&fx::metrics(2)).expect("append");
        w.sync().expect("sync");
        let msg = rt.poll_disk().expect("new data");
        assert!(!rt.handle(&mut state, msg));
        assert_eq!(state.metrics.len(), 2);
        assert_eq!(state.trajs.len(), 1);
        let it = state.trajs.iter().next().expect("item");
        assert!(
            it.record.is_some() && it.task_text.is_some(),
            "new lines arrive parsed"
        );
    }

    #[test]
    fn live_loop_sends_stop_on_q_and_exits_on_finished() {
        let opts = UiOptions {
            quit_timeout: Duration::from_secs(600),
            ..UiOptions::default()
        };
        let mut state = AppState::new(Mode::Live, opts.state_options());
        let mut rt = Runtime::new(&opts);
        let (ctx, crx) = mpsc::channel();
        rt.commands = Some(ctx);
        let (etx, erx) = mpsc::channel();
        spawn_engine_forwarder(erx, rt.tx.clone());
        etx.send(TrainEvent::Started {
            info: fx::run_info(10),
            total_steps: 10,
            start_step: 0,
            session_dir: "sessions/x".into(),
            device: "cpu".into(),
        })
        .expect("send");
        for s in 1..=3 {
            etx.send(TrainEvent::Trajectory(Box::new(fx::trajectory(s, 0))))
                .expect("send");
            etx.send(TrainEvent::Metrics(fx::metrics(s))).expect("send");
        }
        let tx = rt.tx.clone();
        let driver = thread::spawn(move || {
            // Wait for the Stop command, then answer like the trainer.
            thread::sleep(Duration::from_millis(50));
            tx.send(Msg::Key(KeyEvent::new(
                KeyCode::Char('p'),
                KeyModifiers::NONE,
            )))
            .expect("send");
            tx.send(Msg::Key(KeyEvent::new(
                KeyCode::Char('q'),
                KeyModifiers::NONE,
            )))
            .expect("send");
            let first = crx
                .recv_timeout(Duration::from_secs(5))
                .expect("pause command");
            let second = crx
                .recv_timeout(Duration::from_secs(5))
                .expect("stop command");
            etx.send(TrainEvent::Finished {
                step: 3,
                completed: false,
                checkpoint: None,
                message: "stopped by user".into(),
            })
            .expect("send");
            (first, second)
        });
        let mut term = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
        rt.run(&mut term, &mut state, Vec::new()).expect("loop");
        let (first, second) = driver.join().expect("driver");
        assert_eq!(first, TrainCommand::Pause);
        assert_eq!(second, TrainCommand::Stop);
        assert_eq!(state.run_state, RunState::Finished);
        assert_eq!(state.metrics.len(), 3);
        // Frames are capped, so the last events may be applied without a final draw; at least
        // one frame of the dashboard was drawn.
        assert!(screen(&term).contains("TRAIN"));
    }

    #[test]
    fn live_loads_evicted_trajectories_from_the_session_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fx::write_session(dir.path(), 10, 3, false);
        let opts = UiOptions {
            live_capacity: 100,
            full_records: 3,
            ..UiOptions::default()
        };
        let mut state = AppState::new(Mode::Live, opts.state_options());
        let mut rt = Runtime::new(&opts);
        let mut msgs = vec![Msg::Engine(TrainEvent::Started {
            info: fx::run_info(10),
            total_steps: 10,
            start_step: 0,
            session_dir: dir.path().to_path_buf(),
            device: "cpu".into(),
        })];
        for s in 1..=10 {
            for k in 0..3 {
                msgs.push(Msg::Engine(TrainEvent::Trajectory(Box::new(
                    fx::trajectory(s, k),
                ))));
            }
        }
        msgs.extend((0..20).map(|_| key(KeyCode::Char('j'))));
        msgs.push(key(KeyCode::Enter));
        for m in msgs {
            assert!(!rt.handle(&mut state, m));
        }
        let item = state
            .trajs
            .get(state.trajs.current().expect("sel"))
            .expect("item");
        assert_eq!((item.step, item.task_id.as_str()), (4, "t-0"));
        let rec = item
            .record
            .as_ref()
            .expect("re-read from trajectories.jsonl");
        assert_eq!(**rec, fx::trajectory(4, 0));
        // Opening the debugger on it works from the loaded record.
        assert!(!rt.handle(&mut state, key(KeyCode::Char('d'))));
        assert_eq!(state.debugger.as_ref().expect("debugger").task.id, "t-0");
    }

    #[test]
    fn saved_debugger_session_reopens_from_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut state, _) = AppState::debugger(
            DebugInitial::Trajectory {
                record: Box::new(fx::trajectory(2, 1)),
                plan_index: None,
            },
            StateOptions {
                debug_dir: Some(dir.path().to_path_buf()),
                ..StateOptions::default()
            },
        );
        let mut rt = Runtime::new(&UiOptions::default());
        assert!(!rt.handle(&mut state, key(KeyCode::Char('S'))));
        let path = dir.path().join("debug-t-1.json");
        assert!(state.flash.as_deref().is_some_and(|f| f.contains("saved")));
        let initial = DebugInitial::from_saved_file(&path).expect("reopen");
        let (again, _) = AppState::debugger(initial, StateOptions::default());
        assert_eq!(
            again.debugger.as_ref().expect("d").branches,
            state.debugger.as_ref().expect("d").branches
        );
        assert!(DebugInitial::from_saved_file(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn an_event_flood_is_absorbed_with_a_bounded_buffer() {
        let opts = UiOptions::default();
        let mut state = AppState::new(Mode::Live, opts.state_options());
        let mut rt = Runtime::new(&opts);
        let rec = fx::trajectory(1, 0);
        for s in 1..=20_000u64 {
            let mut r = rec.clone();
            r.step = s;
            rt.tx
                .send(Msg::Engine(TrainEvent::Trajectory(Box::new(r))))
                .expect("send");
            if s % 10 == 0 {
                rt.tx
                    .send(Msg::Engine(TrainEvent::Metrics(fx::metrics(s / 10))))
                    .expect("send");
            }
        }
        rt.tx.send(Msg::EngineGone).expect("send");
        rt.tx.send(key(KeyCode::Char('q'))).expect("send");
        let mut term = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
        let t0 = Instant::now();
        rt.run(&mut term, &mut state, Vec::new()).expect("loop");
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "took {:?}",
            t0.elapsed()
        );
        assert_eq!(state.trajs.len(), 2000);
        assert_eq!(state.trajs.dropped, 18_000);
        assert!(state.trajs.iter().filter(|it| it.record.is_some()).count() <= 256);
        assert_eq!(state.metrics.len(), 2000);
    }

    struct Echo;
    impl ExecutorBackend for Echo {
        fn describe(&self) -> String {
            "echo test double".into()
        }
        fn plan(&mut self, _req: PlanRequest) -> std::result::Result<Vec<String>, String> {
            panic!("planner exploded")
        }
        fn run_step(
            &mut self,
            req: DebugStepRequest,
        ) -> std::result::Result<DebugStepOutcome, String> {
            Ok(DebugStepOutcome {
                raw_output: format!("step {} seed {}", req.index, req.seed),
                ..DebugStepOutcome::default()
            })
        }
    }

    #[test]
    fn backend_worker_answers_and_survives_a_panicking_backend() {
        let (tx, rx) = mpsc::channel();
        let mut opts = UiOptions {
            backend: Some(Box::new(Echo)),
            ..UiOptions::default()
        };
        let jobs = spawn_backend_worker(&mut opts, tx).expect("worker");
        let task = crate::backend::DebugTask::default();
        jobs.send(BackendJob::Plan {
            ticket: 1,
            req: PlanRequest {
                task: task.clone(),
                seed: 3,
            },
        })
        .expect("send");
        jobs.send(BackendJob::Step {
            ticket: 2,
            req: DebugStepRequest {
                task,
                subtasks: vec!["a".into()],
                index: 0,
                previous: vec![],
                seed: 9,
            },
        })
        .expect("send");
        match rx.recv_timeout(Duration::from_secs(5)).expect("plan reply") {
            Msg::Backend(BackendReply::Plan {
                ticket: 1,
                result: Err(e),
            }) => {
                assert!(e.contains("panicked"))
            }
            other => panic!("unexpected {other:?}"),
        }
        match rx.recv_timeout(Duration::from_secs(5)).expect("step reply") {
            Msg::Backend(BackendReply::Step {
                ticket: 2,
                result: Ok(o),
            }) => {
                assert_eq!(o.raw_output, "step 0 seed 9")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Loads [`Echo`] backends; fails for a checkpoint named `bad`, panics for `boom`.
    struct EchoLoader {
        loads: Arc<std::sync::Mutex<Vec<Option<PathBuf>>>>,
    }
    impl BackendLoader for EchoLoader {
        fn describe(&self) -> String {
            "echo loader".into()
        }
        fn load(
            &mut self,
            checkpoint: Option<&Path>,
        ) -> std::result::Result<Box<dyn ExecutorBackend>, String> {
            self.loads
                .lock()
                .expect("lock")
                .push(checkpoint.map(Path::to_path_buf));
            match checkpoint.and_then(|c| c.to_str()) {
                Some("bad") => Err("no adapters in bad".into()),
                Some("boom") => panic!("loader exploded"),
                _ => Ok(Box::new(Echo)),
            }
        }
    }

    #[test]
    fn backend_worker_loads_on_demand_and_survives_failed_loads() {
        let loads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut opts = UiOptions {
            loader: Some(Box::new(EchoLoader {
                loads: loads.clone(),
            })),
            ..UiOptions::default()
        };
        assert_eq!(opts.state_options().loader.as_deref(), Some("echo loader"));
        let (tx, rx) = mpsc::channel();
        let jobs = spawn_backend_worker(&mut opts, tx).expect("worker");
        assert!(opts.loader.is_none(), "moved to the worker");
        let step = |ticket| BackendJob::Step {
            ticket,
            req: DebugStepRequest {
                task: crate::backend::DebugTask::default(),
                subtasks: vec!["a".into()],
                index: 0,
                previous: vec![],
                seed: 5,
            },
        };
        let load = |c: Option<&str>, s: Option<u64>| BackendJob::Load {
            checkpoint: c.map(PathBuf::from),
            step: s,
        };
        for j in [
            step(1),
            load(None, None),
            step(2),
            load(Some("bad"), Some(3)),
            step(3),
            load(Some("boom"), Some(4)),
            load(Some("ck/step-5"), Some(5)),
            step(4),
        ] {
            jobs.send(j).expect("send");
        }
        let mut replies = Vec::new();
        for _ in 0..8 {
            match rx.recv_timeout(Duration::from_secs(5)).expect("reply") {
                Msg::Backend(r) => replies.push(r),
                other => panic!("unexpected {other:?}"),
            }
        }
        let step_result = |r: &BackendReply| match r {
            BackendReply::Step { result, .. } => result.clone().map(|o| o.raw_output),
            other => panic!("expected a step reply, got {other:?}"),
        };
        assert_eq!(
            step_result(&replies[0]),
            Err("the model is not loaded".into())
        );
        assert_eq!(
            replies[1],
            BackendReply::Loaded {
                step: None,
                result: Ok("echo test double".into())
            }
        );
        assert_eq!(step_result(&replies[2]), Ok("step 0 seed 5".into()));
        assert_eq!(
            replies[3],
            BackendReply::Loaded {
                step: Some(3),
                result: Err("no adapters in bad".into())
            }
        );
        // A failed reload drops the old copy (at most one copy is held).
        assert_eq!(
            step_result(&replies[4]),
            Err("the model is not loaded".into())
        );
        assert!(matches!(
            &replies[5],
            BackendReply::Loaded { step: Some(4), result: Err(e) } if e.contains("panicked")
        ));
        assert!(matches!(
            &replies[6],
            BackendReply::Loaded {
                step: Some(5),
                result: Ok(_)
            }
        ));
        assert_eq!(step_result(&replies[7]), Ok("step 0 seed 5".into()));
        assert_eq!(
            *loads.lock().expect("lock"),
            vec![
                None,
                Some(PathBuf::from("bad")),
                Some(PathBuf::from("boom")),
                Some(PathBuf::from("ck/step-5"))
            ]
        );
    }

    #[test]
    fn save_debug_writes_file_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("debug").join("debug-t-1.json");
        write_atomic(&path, b"{\"version\":1}").expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"version\":1}"
        );
        assert!(!path.with_extension("json.tmp").exists());
    }
}

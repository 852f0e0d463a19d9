//! The running loop: it owns the state, applies every [`Msg`] through [`update`], carries out
//! the returned [`Effect`]s (trainer commands, session reads, trajectory loads, backend jobs,
//! saves) and draws at most `fps` frames per second, after all pending messages were applied,
//! so a fast engine never makes the UI fall behind.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use cahl_sessions::fsutil::atomic_write;
use cahl_sessions::{BackendJob, TrainCommand};
use ratatui::backend::Backend;
use ratatui::Terminal;

use super::session::SessionFeed;
use super::{Result, UiError, UiOptions};
use crate::state::trajs::plan_shape;
use crate::state::{update, AppState, Effect, Level, Msg, SaveError, TrajectoryLoadError};
use crate::view;

/// Most task texts loaded for one search (beyond this, search matches ids only).
pub const MAX_TEXT_LOADS: usize = 50_000;

/// The running loop's resources.
pub(crate) struct Runtime {
    pub(crate) tx: Sender<Msg>,
    pub(crate) rx: Receiver<Msg>,
    pub(crate) commands: Option<Sender<TrainCommand>>,
    /// The session files: opened at start in replay, attached on `Started` in live mode.
    pub(crate) feed: SessionFeed,
    pub(crate) backend_tx: Option<Sender<BackendJob>>,
    pub(crate) fps: u32,
    pub(crate) poll_interval: Duration,
    pub(crate) start: Instant,
    /// An [`Effect::ReadSession`] is waiting (reads are batched: one per drained queue).
    read_due: bool,
    /// Reading the session failed and the user was told (once).
    read_failed: bool,
}

impl Runtime {
    pub(crate) fn new(opts: &UiOptions) -> Self {
        let (tx, rx) = mpsc::channel();
        Runtime {
            tx,
            rx,
            commands: None,
            feed: SessionFeed::detached(),
            backend_tx: None,
            fps: opts.fps.clamp(1, 120),
            poll_interval: opts.poll_interval,
            start: Instant::now(),
            read_due: false,
            read_failed: false,
        }
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
            Effect::ReadSession => self.read_due = true,
            Effect::Load { seq, disk_index } => {
                let result = match (self.feed.reader(), disk_index) {
                    (Some(r), Some(i)) => r
                        .trajectory(i)
                        .map(Box::new)
                        .map_err(TrajectoryLoadError::Read),
                    (None, _) => Err(TrajectoryLoadError::NoSession),
                    (Some(_), None) => Err(TrajectoryLoadError::NotOnDisk),
                };
                queue.push(Msg::Loaded { seq, result });
            }
            Effect::LoadTexts => {
                if let Some(r) = self.feed.reader() {
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
                queue.push(Msg::Saved(save_file(&path, json.as_bytes()).map(|_| path)));
            }
            Effect::LoadCases { session } => {
                queue.push(Msg::Cases(Box::new(read_cases(&session))));
            }
            Effect::SaveCase { session, case } => {
                let r = cahl_sessions::cases::save_case(&session, &case).map_err(|e| e.to_string());
                queue.push(Msg::CaseSaved(r));
            }
        }
        false
    }

    /// Applies `msg` and everything it leads to, including a session read it asked for;
    /// returns true when the UI should quit.
    pub(crate) fn handle(&mut self, s: &mut AppState, msg: Msg) -> bool {
        self.apply_msg(s, msg) || self.read_if_due(s).unwrap_or(false)
    }

    /// Applies `msg` and the effects it leads to, leaving a requested session read for later.
    fn apply_msg(&mut self, s: &mut AppState, msg: Msg) -> bool {
        let mut queue = vec![msg];
        let mut quit = false;
        while let Some(m) = queue.pop() {
            for e in update(s, m) {
                quit |= self.apply(s, e, &mut queue);
            }
        }
        quit
    }

    /// Carries out a pending session read; `Some(quit)` when new data was applied.
    fn read_if_due(&mut self, s: &mut AppState) -> Option<bool> {
        if !std::mem::take(&mut self.read_due) {
            return None;
        }
        let msg = self.read_session(s)?;
        Some(self.handle(s, msg))
    }

    /// Reads what is new in the session files (attaching to the state's session directory in
    /// live mode). A failure is logged once and retried at the next read.
    pub(crate) fn read_session(&mut self, s: &mut AppState) -> Option<Msg> {
        match self.feed.read(s.session_path.as_deref()) {
            Ok(batch) => {
                self.read_failed = false;
                batch.map(Msg::Disk)
            }
            Err(e) => {
                if !self.read_failed {
                    self.read_failed = true;
                    s.log(Level::Warn, format!("cannot read the session files: {e}"));
                }
                None
            }
        }
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
                if self.apply_msg(s, m) {
                    break;
                }
                // Apply everything already waiting before the next frame (bounded, so input
                // stays responsive even under an event flood), then read the session files
                // once for all the events that asked for it.
                let mut n = 0;
                while n < 20_000 {
                    let Ok(m) = self.rx.try_recv() else { break };
                    n += 1;
                    if self.apply_msg(s, m) {
                        return Ok(());
                    }
                }
                if self.read_if_due(s) == Some(true) {
                    break;
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
                self.read_due = true;
                if let Some(quit) = self.read_if_due(s) {
                    dirty = true;
                    if quit {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes a debugger session file with the workspace's atomic write, creating its directory.
fn save_file(path: &Path, bytes: &[u8]) -> std::result::Result<(), SaveError> {
    let dir = cahl_sessions::fsutil::parent_of(path);
    std::fs::create_dir_all(dir).map_err(|e| SaveError::CreateDir {
        path: dir.to_path_buf(),
        source: std::sync::Arc::new(e),
    })?;
    atomic_write(path, bytes).map_err(|e| SaveError::Write(std::sync::Arc::new(e)))
}

/// The case library of `session` for the overlay: problems are listed, not fatal.
fn read_cases(session: &std::path::Path) -> crate::state::cases::CasesView {
    let mut v = crate::state::cases::CasesView {
        session: session.display().to_string(),
        ..Default::default()
    };
    match cahl_sessions::cases::list_cases(session) {
        Ok((cases, problems)) => {
            v.cases = cases;
            v.problems = problems;
        }
        Err(e) => v.problems.push(e.to_string()),
    }
    match cahl_sessions::CasesReport::read(session) {
        Ok(r) => v.report = r,
        Err(e) => v.problems.push(format!("report not read: {e}")),
    }
    v
}

#[cfg(test)]
mod tests {
    use std::thread;

    use cahl_sessions::{RunState, SessionWriter, TrainEvent};
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::super::workers::spawn_engine_forwarder;
    use super::*;
    use crate::state::debugger::DebugInitial;
    use crate::state::{Mode, StateOptions};
    use crate::test_fixture as fx;

    fn key(c: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn started(dir: &Path) -> TrainEvent {
        TrainEvent::Started {
            info: fx::run_info(10),
            total_steps: 10,
            start_step: 0,
            session_dir: dir.to_path_buf(),
            device: "cpu".into(),
        }
    }

    #[test]
    fn live_loop_reads_the_session_sends_stop_on_q_and_exits_on_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            SessionWriter::create(dir.path(), "seed = 7\n", &fx::run_info(10)).expect("create");
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
        etx.send(started(dir.path())).expect("send");
        // Like the engine: append the record, then send the event.
        for s in 1..=3 {
            let t = fx::trajectory(s, 0);
            w.append_trajectory(&t).expect("append");
            etx.send(TrainEvent::Trajectory(Box::new(t))).expect("send");
            w.append_metrics(&fx::metrics(s)).expect("append");
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
        assert_eq!(state.trajs.len(), 3);
        // Frames are capped, so the last events may be applied without a final draw; at least
        // one frame of the dashboard was drawn.
        assert!(term.backend().to_string().contains("TRAIN"));
    }

    #[test]
    fn live_loads_evicted_trajectories_from_the_session_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            SessionWriter::create(dir.path(), "seed = 7\n", &fx::run_info(20)).expect("create");
        let opts = UiOptions {
            live_capacity: 100,
            full_records: 3,
            ..UiOptions::default()
        };
        let mut state = AppState::new(Mode::Live, opts.state_options());
        let mut rt = Runtime::new(&opts);
        assert!(!rt.handle(&mut state, Msg::Engine(started(dir.path()))));
        for s in 1..=10 {
            for k in 0..3 {
                let t = fx::trajectory(s, k);
                w.append_trajectory(&t).expect("append");
                assert!(!rt.handle(&mut state, Msg::Engine(TrainEvent::Trajectory(Box::new(t)))));
            }
        }
        assert_eq!(state.trajs.len(), 30);
        assert_eq!(
            state.trajs.iter().filter(|it| it.record.is_some()).count(),
            3
        );
        let mut msgs: Vec<Msg> = (0..20).map(|_| key(KeyCode::Char('j'))).collect();
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
    fn an_unreadable_session_is_reported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = UiOptions::default();
        let mut state = AppState::new(Mode::Live, opts.state_options());
        let mut rt = Runtime::new(&opts);
        let missing = dir.path().join("missing");
        assert!(!rt.handle(&mut state, Msg::Engine(started(&missing))));
        assert!(!rt.handle(&mut state, Msg::Engine(TrainEvent::Metrics(fx::metrics(1)))));
        let warnings = state
            .log
            .iter()
            .filter(|l| l.text.contains("cannot read the session files"))
            .count();
        assert_eq!(warnings, 1);
        assert!(state.metrics.is_empty());
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
    fn save_debug_creates_the_directory_and_writes_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("debug").join("debug-t-1.json");
        let mut state = AppState::new(Mode::Debug, StateOptions::default());
        let mut rt = Runtime::new(&UiOptions::default());
        let mut queue = Vec::new();
        let effect = Effect::SaveDebug {
            path: path.clone(),
            json: "{\"version\":1}".into(),
        };
        assert!(!rt.apply(&mut state, effect, &mut queue));
        assert!(matches!(queue.as_slice(), [Msg::Saved(Ok(p))] if *p == path));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"version\":1}"
        );
        assert!(!cahl_sessions::fsutil::temp_sibling(&path).exists());
    }

    #[test]
    fn an_event_flood_is_absorbed_with_a_bounded_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            SessionWriter::create(dir.path(), "seed = 7\n", &fx::run_info(2000)).expect("create");
        let opts = UiOptions::default();
        let mut state = AppState::new(Mode::Live, opts.state_options());
        let mut rt = Runtime::new(&opts);
        rt.tx.send(Msg::Engine(started(dir.path()))).expect("send");
        // Small records: the flood is about the number of events, not their size.
        let rec = cahl_sessions::TrajectoryRecord {
            task: cahl_sessions::TaskInfo {
                id: "t-0".into(),
                text: "flood".into(),
                ..cahl_sessions::TaskInfo::default()
            },
            ..cahl_sessions::TrajectoryRecord::default()
        };
        for s in 1..=20_000u64 {
            let mut r = rec.clone();
            r.step = s;
            w.append_trajectory(&r).expect("append");
            rt.tx
                .send(Msg::Engine(TrainEvent::Trajectory(Box::new(r))))
                .expect("send");
            if s % 10 == 0 {
                w.append_metrics(&fx::metrics(s / 10)).expect("append");
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
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fixture;

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;

use cahl_sessions::{
    BackendError, BackendJob, CallRecord, DebugStepOutcome, DebugStepRequest, ExecutorBackend,
    PlanRequest, RewardBreakdown, RunInfo, SessionWriter, TrainEvent,
};
use cahl_ui::app::session::SessionFeed;
use cahl_ui::state::{update, AppState, Effect, Mode, Msg, StateOptions};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use serde_json::json;

/// Snapshot size used by every view test.
pub const W: u16 = 120;
/// Snapshot height.
pub const H: u16 = 40;

pub fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

pub fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

pub fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

/// Feeds messages, collecting all effects.
pub fn feed(s: &mut AppState, msgs: impl IntoIterator<Item = Msg>) -> Vec<Effect> {
    msgs.into_iter().flat_map(|m| update(s, m)).collect()
}

/// Types a string as key presses.
pub fn typed(text: &str) -> Vec<Msg> {
    text.chars().map(key).collect()
}

/// The session directory shown in the title of live views. [`LiveRun`] writes the real files to
/// a temp directory and shows this name instead, so the snapshots do not depend on it.
pub const SHOWN_SESSION: &str = "sessions/run-20261121-060000";

/// The recorded engine stream of a short run: Started, then per step 3 trajectories and a
/// metrics line, a checkpoint at step 10, a warning at step 5.
pub fn recorded_events(steps: u64) -> Vec<TrainEvent> {
    let mut ev = vec![TrainEvent::Started {
        info: fixture::run_info(100),
        total_steps: 100,
        start_step: 0,
        session_dir: PathBuf::from(SHOWN_SESSION),
        device: "cuda:0 (NVIDIA H100)".into(),
    }];
    for s in 1..=steps {
        for k in 0..3 {
            ev.push(TrainEvent::Trajectory(Box::new(fixture::trajectory(s, k))));
        }
        ev.push(TrainEvent::Metrics(fixture::metrics(s)));
        if s == 5 {
            ev.push(TrainEvent::Warning(
                "executor output truncated at 512 tokens".into(),
            ));
        }
        if s == 10 {
            ev.push(TrainEvent::Checkpoint(cahl_sessions::CheckpointRecord {
                step: 10,
                path: "checkpoints/step-10".into(),
                created_at: "2026-11-21T06:10:00Z".into(),
            }));
        }
    }
    ev.push(TrainEvent::Progress {
        step: steps + 1,
        phase: "sampling plans 3/8".into(),
        tokens_per_s: 1834.0,
        memory_bytes: Some(12 * (1 << 30)),
    });
    ev
}

/// A live UI attached to a real session in a temp directory, driven the way the engine drives
/// it: each event's record (metrics line, trajectory, checkpoint) is appended to the session
/// files first, then the event is sent; a session read the state asks for is done at once with
/// the [`SessionFeed`] the event loop uses. Derefs to the [`AppState`].
pub struct LiveRun {
    pub state: AppState,
    feed: SessionFeed,
    writer: SessionWriter,
    dir: tempfile::TempDir,
}

impl LiveRun {
    /// A live state with `opts`, before `Started`; the session's run info matches
    /// [`recorded_events`].
    pub fn new(opts: StateOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = RunInfo {
            device: "cuda:0 (NVIDIA H100)".into(),
            ..fixture::run_info(100)
        };
        let writer = SessionWriter::create(dir.path(), "seed = 7\n", &info).expect("session");
        LiveRun {
            state: AppState::new(Mode::Live, opts),
            feed: SessionFeed::detached(),
            writer,
            dir,
        }
    }

    /// Writes the event's record to the session files, then applies the event; returns the
    /// effects other than session reads.
    pub fn send(&mut self, ev: TrainEvent) -> Vec<Effect> {
        match &ev {
            TrainEvent::Metrics(m) => self.writer.append_metrics(m).expect("append metrics"),
            TrainEvent::Trajectory(t) => self.writer.append_trajectory(t).expect("append"),
            TrainEvent::Checkpoint(c) => {
                let tmp = self.writer.checkpoint_dir(c.step).expect("checkpoint dir");
                tmp.commit().expect("commit checkpoint");
            }
            _ => {}
        }
        if let TrainEvent::Started {
            info,
            total_steps,
            start_step,
            device,
            ..
        } = ev
        {
            let started = TrainEvent::Started {
                info,
                total_steps,
                start_step,
                session_dir: self.dir.path().to_path_buf(),
                device,
            };
            let out = self.apply(Msg::Engine(started));
            self.state.session_path = Some(PathBuf::from(SHOWN_SESSION));
            return out;
        }
        self.apply(Msg::Engine(ev))
    }

    /// Sends every event in order.
    pub fn send_all(&mut self, events: impl IntoIterator<Item = TrainEvent>) -> Vec<Effect> {
        events.into_iter().flat_map(|e| self.send(e)).collect()
    }

    /// Applies a message, carrying out the session reads it leads to.
    pub fn apply(&mut self, msg: Msg) -> Vec<Effect> {
        let mut out = Vec::new();
        for e in update(&mut self.state, msg) {
            match e {
                Effect::ReadSession => {
                    let dir = self.state.session_path.clone();
                    if let Some(b) = self.feed.read(dir.as_deref()).expect("read session") {
                        out.extend(self.apply(Msg::Disk(b)));
                    }
                }
                e => out.push(e),
            }
        }
        out
    }
}

impl Deref for LiveRun {
    type Target = AppState;
    fn deref(&self) -> &AppState {
        &self.state
    }
}

impl DerefMut for LiveRun {
    fn deref_mut(&mut self) -> &mut AppState {
        &mut self.state
    }
}

/// A live UI with `opts` that has seen `recorded_events(steps)`.
pub fn live_run(opts: StateOptions, steps: u64) -> LiveRun {
    let mut run = LiveRun::new(opts);
    run.send_all(recorded_events(steps));
    run
}

/// A live UI that has seen `recorded_events(steps)`.
pub fn live_state(steps: u64) -> LiveRun {
    live_run(StateOptions::default(), steps)
}

/// Renders the state at the snapshot size and returns the backend (Display = text grid).
pub fn render(s: &AppState) -> TestBackend {
    let mut t = Terminal::new(TestBackend::new(W, H)).expect("test terminal");
    t.draw(|f| cahl_ui::view::draw(f, s)).expect("draw");
    t.backend().clone()
}

/// Renders the state at `w`x`h` and returns the backend.
pub fn render_at(s: &AppState, w: u16, h: u16) -> TestBackend {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| cahl_ui::view::draw(f, s)).expect("draw");
    t.backend().clone()
}

/// The rendered screen as plain text.
pub fn screen(s: &AppState) -> String {
    render(s).to_string()
}

/// Test double for the executor backend: deterministic output derived from the request, so
/// re-running a branch with the same seed reproduces it. Never shipped.
#[derive(Debug, Default)]
pub struct FakeBackend {
    pub calls: usize,
}

impl ExecutorBackend for FakeBackend {
    fn describe(&self) -> String {
        "fake test backend".into()
    }

    fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, BackendError> {
        Ok(vec![
            format!("Look up: {}", req.task.text),
            format!("Answer (seed {})", req.seed),
        ])
    }

    fn run_step(&mut self, req: DebugStepRequest) -> Result<DebugStepOutcome, BackendError> {
        self.calls += 1;
        let st = req
            .subtasks
            .get(req.index)
            .ok_or_else(|| BackendError(format!("no sub-task {}", req.index)))?;
        let n = req.seed.wrapping_add(req.index as u64) % 100;
        let call = CallRecord {
            name: "fake_tool".into(),
            arguments: json!({"q": st, "n": n}),
        };
        Ok(DebugStepOutcome {
            prompt: format!(
                "EXECUTOR PROMPT\nsub-task {}: {st}\nprevious steps: {}",
                req.index + 1,
                req.previous.len()
            ),
            raw_output: format!("<tool_call>{{\"name\":\"fake_tool\",\"q\":\"{st}\"}}</tool_call>"),
            calls: vec![call],
            parse_error: None,
            tool_result: Some(json!({"ok": true, "n": n})),
            reward: RewardBreakdown {
                total: 1.0,
                components: [("format".to_string(), 1.0), ("semantics".to_string(), 0.5)]
                    .into_iter()
                    .collect(),
                reasons: vec![],
                ..Default::default()
            },
        })
    }

    /// Run r of a plan solves the task unless (seed + r) is a multiple of 3; a failure is a
    /// planner-side `plan_too_coarse`.
    fn measure(
        &mut self,
        req: cahl_sessions::MeasureRequest,
    ) -> Result<cahl_sessions::PlanMeasurement, BackendError> {
        let n = if req.greedy { 1 } else { req.samples.max(1) };
        let runs = (0..n)
            .map(|r| {
                let ok = !(req.seed + r as u64).is_multiple_of(3);
                cahl_sessions::PlanRun {
                    success: ok,
                    planner_reward: 1.0 + 0.5 * (r % 2) as f64,
                    executor_reward: 1.0,
                    failure: (!ok).then(|| "plan_too_coarse".into()),
                    failure_side: (!ok).then(|| "planner".into()),
                    ..Default::default()
                }
            })
            .collect();
        Ok(cahl_sessions::PlanMeasurement {
            greedy: req.greedy,
            seed: req.seed,
            model: self.describe(),
            runs,
        })
    }

    /// Solved when the branch made as many calls as the gold has; otherwise an executor-side
    /// failure with a state difference.
    fn judge(
        &mut self,
        req: cahl_sessions::JudgeRequest,
    ) -> Result<cahl_sessions::PlanRun, BackendError> {
        let calls: Vec<CallRecord> = req.step_calls.into_iter().flatten().collect();
        let ok = calls.len() == req.task.gold_calls.len();
        Ok(cahl_sessions::PlanRun {
            success: ok,
            planner_reward: 2.0,
            executor_reward: f64::NAN,
            failure: (!ok).then(|| "executor_failed".into()),
            failure_side: (!ok).then(|| "executor".into()),
            failure_detail: (!ok).then(|| "sub-task 1: expected get_weather(…)".into()),
            state_diff: if ok {
                vec![]
            } else {
                vec!["fake.state: 1 (gold 2)".into()]
            },
            calls,
        })
    }
}

/// Runs every backend job in `effects` on `backend` synchronously and feeds the replies back,
/// repeating until no job is left (like the worker thread, but deterministic).
pub fn drive_backend(
    s: &mut AppState,
    backend: &mut dyn ExecutorBackend,
    effects: Vec<Effect>,
) -> Vec<Effect> {
    let mut pending = effects;
    let mut other = Vec::new();
    while let Some(e) = pending.pop() {
        match e {
            Effect::Backend(job) => {
                let reply = BackendJob::run(job, backend);
                pending.extend(update(s, Msg::Backend(reply)));
            }
            e => other.push(e),
        }
    }
    other
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fixture;

use std::path::PathBuf;

use cahl_sessions::{CallRecord, RewardBreakdown, TrainEvent};
use cahl_ui::backend::{
    BackendJob, DebugStepOutcome, DebugStepRequest, ExecutorBackend, PlanRequest,
};
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

/// The recorded engine stream of a short run: Started, then per step 3 trajectories and a
/// metrics line, a checkpoint at step 10, a warning at step 5.
pub fn recorded_events(steps: u64) -> Vec<TrainEvent> {
    let mut ev = vec![TrainEvent::Started {
        info: fixture::run_info(100),
        total_steps: 100,
        start_step: 0,
        session_dir: PathBuf::from("sessions/run-20261121-060000"),
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

/// A live state that has seen `recorded_events(steps)`.
pub fn live_state(steps: u64) -> AppState {
    let mut s = AppState::new(Mode::Live, StateOptions::default());
    feed(&mut s, recorded_events(steps).into_iter().map(Msg::Engine));
    s
}

/// Renders the state at the snapshot size and returns the backend (Display = text grid).
pub fn render(s: &AppState) -> TestBackend {
    let mut t = Terminal::new(TestBackend::new(W, H)).expect("test terminal");
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

    fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, String> {
        Ok(vec![
            format!("Look up: {}", req.task.text),
            format!("Answer (seed {})", req.seed),
        ])
    }

    fn run_step(&mut self, req: DebugStepRequest) -> Result<DebugStepOutcome, String> {
        self.calls += 1;
        let st = req
            .subtasks
            .get(req.index)
            .ok_or_else(|| format!("no sub-task {}", req.index))?;
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
            },
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

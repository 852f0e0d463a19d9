//! The status bar and the message log: the engine's control events (`Started`, `Status`,
//! `Progress`, `Warning`, `Error`, `Finished`), the numbers the status bar shows (step, ETA,
//! throughput) and the quit flow that stops the trainer first.

use cahl_sessions::{RunState, TrainCommand, TrainEvent};

use super::{AppState, Effect, Mode};

/// Log lines kept in memory.
pub const LOG_CAPACITY: usize = 500;

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

impl AppState {
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

    /// `q`: in a live run, asks the trainer to stop and save first (quitting once it finished
    /// or after the quit timeout); otherwise quits.
    pub(super) fn quit(&mut self) -> Vec<Effect> {
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

/// Applies an engine event. Metrics, trajectories and checkpoints are not taken from the event:
/// the engine appended them to the session files before sending it, so the event only asks the
/// loop to read the files now ([`Effect::ReadSession`]), exactly as replay reads them.
pub(super) fn on_engine(s: &mut AppState, ev: TrainEvent) -> Vec<Effect> {
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
            return vec![Effect::ReadSession];
        }
        TrainEvent::Metrics(_) | TrainEvent::Trajectory(_) | TrainEvent::Checkpoint(_) => {
            return vec![Effect::ReadSession];
        }
        TrainEvent::Status { state, message } => {
            s.run_state = state;
            // A message that only repeats the state ("paused") adds nothing.
            let text = if message.is_empty() || message == state.label() {
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
            // A run that ended early or diverged is a warning, not news.
            let diverged = message.contains("diverged");
            let level = if completed && !diverged {
                Level::Info
            } else {
                Level::Warn
            };
            s.log(level, format!("run {how} at step {step}{ck}: {message}"));
            let tail = if diverged {
                " (diverged: see messages)"
            } else {
                ""
            };
            s.flash = Some(format!("run {how} at step {step}{ck}{tail}"));
            if s.quit_deadline_ms.is_some() {
                return vec![Effect::Quit];
            }
        }
    }
    Vec::new()
}

/// The engine's event channel closed.
pub(super) fn on_engine_gone(s: &mut AppState) -> Vec<Effect> {
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

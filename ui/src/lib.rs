//! `cahl-ui`: the terminal UI of cahl-tui.
//!
//! * [`run_live`] — the training dashboard (curves, trajectory stream, status bar, controls)
//!   fed by [`cahl_sessions::TrainEvent`]s, sending [`cahl_sessions::TrainCommand`]s back.
//! * [`run_replay`] — the same views over a recorded session, following it while it grows.
//! * [`run_debugger`] — the plan-editing debugger, with an optional [`ExecutorBackend`].
//!
//! State and update logic ([`state`]) are separate from drawing ([`view`]) and from the terminal
//! event loop ([`app`]), so everything but the loop is testable without a terminal.
//!
//! # Threads and channels
//! One loop thread owns the state and the terminal. An input thread turns terminal events into
//! messages; in live mode a forwarder thread moves [`cahl_sessions::TrainEvent`]s from the
//! engine's `std::sync::mpsc` channel; a worker thread owns the [`ExecutorBackend`]. The loop
//! applies every waiting message, then draws (at most [`UiOptions::fps`] frames per second). The
//! live trajectory buffer is bounded ([`UiOptions::live_capacity`]); older trajectories are re-read
//! from the session's `trajectories.jsonl` when expanded.
//!
//! # Keys
//! The dashboard keys are listed in [`view::help::DASHBOARD_KEYS`], the debugger keys in
//! [`view::help::DEBUGGER_KEYS`]; `?` shows them in the UI.

#![warn(missing_docs)]

pub mod app;
pub mod backend;
pub mod state;
pub mod view;

#[cfg(test)]
#[path = "../tests/common/fixture.rs"]
pub(crate) mod test_fixture;

pub use app::{restore_terminal, run_debugger, run_live, run_replay, Result, UiError, UiOptions};
pub use backend::{
    BackendJob, BackendLoader, BackendReply, DebugStepOutcome, DebugStepRequest, DebugTask,
    ExecutorBackend, PlanRequest, PriorStep,
};
pub use state::debugger::{DebugInitial, DebugSessionFile, ModelState};

//! `cahl-ui`: the terminal UI of cahl-tui.
//!
//! * [`run_live`] — the training dashboard (curves, trajectory stream, status bar, controls)
//!   following a running training, sending [`cahl_sessions::TrainCommand`]s back.
//! * [`run_replay`] — the same views over a recorded session, following it while it grows.
//! * [`run_debugger`] — the plan-editing debugger, with an optional
//!   [`cahl_sessions::ExecutorBackend`] (the debugger protocol lives in [`cahl_sessions::debug`]).
//!
//! State and update logic ([`state`], one file per pane) are separate from drawing ([`view`],
//! one file per pane) and from the terminal, the worker threads and the event loop ([`app`]),
//! so everything but the loop is testable without a terminal.
//!
//! # One data path: live mode is replay plus control events
//! Metrics, trajectories and checkpoints reach the UI only from the session files, through
//! [`app::session::SessionFeed`]. Replay opens it on the recorded session. In live mode the
//! engine sends [`cahl_sessions::TrainEvent::Started`] first, naming the session directory, and
//! appends every metrics line, trajectory and checkpoint to the session files *before* it sends
//! the matching `Metrics`, `Trajectory` or `Checkpoint` event; the UI attaches the feed on
//! `Started` and takes those events only as a signal to read the files now (besides the regular
//! poll timer, [`UiOptions::poll_interval`]). `Status`, `Progress`, `Warning`, `Error`,
//! `Finished` and `Started` itself are live-only control information (run state, progress, the
//! message log). So live and replay show the same thing the same way.
//!
//! # Threads and channels
//! One loop thread owns the state and the terminal. An input thread turns terminal events into
//! messages; in live mode a forwarder thread moves [`cahl_sessions::TrainEvent`]s from the
//! engine's `std::sync::mpsc` channel; a worker thread owns the
//! [`cahl_sessions::ExecutorBackend`]. The loop applies every waiting message, reads the session
//! files once for all events that asked for it, then draws (at most [`UiOptions::fps`] frames
//! per second). The live trajectory list is bounded ([`UiOptions::live_capacity`], with full
//! records for the newest [`UiOptions::full_records`]); older trajectories are re-read from the
//! session's `trajectories.jsonl` when expanded.
//!
//! # Keys
//! The dashboard keys are listed in [`view::help::DASHBOARD_KEYS`], the debugger keys in
//! [`view::help::DEBUGGER_KEYS`]; `?` shows them in the UI.

#![warn(missing_docs)]

pub mod app;
pub mod state;
pub mod view;

#[cfg(test)]
#[path = "../tests/common/fixture.rs"]
pub(crate) mod test_fixture;

pub use app::{restore_terminal, run_debugger, run_live, run_replay, Result, UiError, UiOptions};
pub use state::debugger::{DebugFileError, DebugInitial, DebugSessionFile, ModelState};

//! The engine ↔ observer protocol: plain data the trainer emits while it runs ([`TrainEvent`])
//! and the commands an observer (the terminal UI) sends back ([`TrainCommand`]).
//!
//! These types carry no channel: the trainer sends them over whatever channel the binary wires
//! (`std::sync::mpsc` is what `cahl-ui` consumes). Records inside are the same records that the
//! session writer puts on disk, so an observer can show live data and the files identically.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::records::{CheckpointRecord, MetricsRecord, RunInfo, TrajectoryRecord};

/// Lifecycle state of a training run, as reported by [`TrainEvent::Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RunState {
    /// Sampling and updating.
    #[default]
    Running,
    /// Paused by a [`TrainCommand::Pause`]; waiting for [`TrainCommand::Resume`].
    Paused,
    /// A stop was requested; the trainer is finishing the step and saving.
    Stopping,
    /// The run ended (completed, stopped or failed).
    Finished,
}

impl RunState {
    /// Short lower-case label, e.g. `"running"`.
    pub fn label(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopping => "stopping",
            RunState::Finished => "finished",
        }
    }
}

/// Something the trainer reports to observers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainEvent {
    /// The run started (or resumed).
    Started {
        /// Run metadata (model, mode, seed, device, planned steps).
        info: RunInfo,
        /// Planned number of optimizer steps (same as `info.total_steps`, kept explicit).
        total_steps: u64,
        /// Step the run starts after (0 for a fresh run, the checkpoint step on resume).
        start_step: u64,
        /// The session directory the run writes to.
        session_dir: PathBuf,
        /// Device description, e.g. `"cuda:0 (NVIDIA H100)"`.
        device: String,
    },
    /// Aggregate statistics of one completed step.
    Metrics(MetricsRecord),
    /// One sampled trajectory (one task of one step).
    Trajectory(Box<TrajectoryRecord>),
    /// A checkpoint was committed.
    Checkpoint(CheckpointRecord),
    /// The run changed state (e.g. paused in answer to [`TrainCommand::Pause`]).
    Status {
        /// New state.
        state: RunState,
        /// Human-readable detail, e.g. `"paused after step 12"`.
        message: String,
    },
    /// Progress inside a step, sent often (throttled by the trainer).
    Progress {
        /// Step being worked on (1-based; the step that will complete next).
        step: u64,
        /// What the trainer is doing, e.g. `"sampling plans 3/8"`.
        phase: String,
        /// Recent generation throughput (NaN if unknown).
        tokens_per_s: f64,
        /// Device memory in use, in bytes, if known.
        memory_bytes: Option<u64>,
    },
    /// Something worth showing that did not stop the run.
    Warning(String),
    /// An error; the run may continue (e.g. one task failed) or be followed by `Finished`.
    Error(String),
    /// The run ended; no more events follow.
    Finished {
        /// Last completed step.
        step: u64,
        /// Whether it ran to `total_steps` (false: stopped or failed).
        completed: bool,
        /// Last checkpoint written, if any.
        checkpoint: Option<CheckpointRecord>,
        /// Why it ended, e.g. `"stopped by user"`.
        message: String,
    },
}

/// A request from an observer to the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainCommand {
    /// Pause after the current generation/update finishes.
    Pause,
    /// Resume a paused run.
    Resume,
    /// Write a checkpoint as soon as the current step completes.
    SaveCheckpoint,
    /// Stop cleanly: finish or abandon the current step, save a checkpoint, send `Finished`.
    Stop,
}

//! `cahl-sessions`: the on-disk run format of cahl-tui.
//!
//! A session directory holds the resolved `config.toml`, `run.json`, `metrics.jsonl`,
//! `trajectories.jsonl`, `checkpoints/step-N/{planner,executor}/` and a log file. This crate
//! defines the [record types](records) shared by the engine (producer), the [`SessionWriter`] and
//! the UI ([`SessionReader`]), and the crash-safety rules: atomic writes for whole files,
//! append-only JSONL with torn-tail repair, checkpoints committed by renaming a temp directory.
//! The format is specified in `docs/SESSION_FORMAT.md`.
//!
//! It also holds the protocols between the engine and its observers: training events and
//! commands ([`events`]) and the debugger's model backend ([`debug`]).

#![warn(missing_docs)]

pub mod cases;
pub mod debug;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod jsonl;
pub mod layout;
pub mod reader;
pub mod records;
pub mod time;
pub mod writer;

pub use cases::{CaseCell, CaseRecord, CaseRow, CasesReport, Expect, CASE_VERSION};
pub use debug::{
    BackendError, BackendJob, BackendLoader, BackendReply, DebugStepOutcome, DebugStepRequest,
    DebugTask, ExecutorBackend, JudgeRequest, MeasureRequest, PlanMeasurement, PlanRequest,
    PlanRun, PriorStep,
};
pub use error::{Result, SessionError};
pub use events::{RunState, TrainCommand, TrainEvent};
pub use jsonl::{JsonlCheck, JsonlRepair, RepairKind};
pub use layout::{
    checkpoint_defect, intact_checkpoints, latest_checkpoint, list_checkpoints, new_session_dir,
    new_session_dir_at, session_dir_name,
};
pub use reader::{Problem, ProblemKind, SessionReader, SourceKind, TrajectoryEntry, Update};
pub use records::{
    CallRecord, CheckpointRecord, ExecSample, MetricsRecord, PlanRecord, PolicyStats,
    RewardBreakdown, RunInfo, StepRecord, TaskInfo, TaskRef, TrajectoryRecord, TrajectorySummary,
    FORMAT_VERSION,
};
pub use time::UtcDateTime;
pub use writer::{ResumeReport, SessionWriter, TempCheckpoint, TruncateReport};

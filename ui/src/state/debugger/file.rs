//! How a debugger starts ([`DebugInitial`]) and its saved session file ([`DebugSessionFile`],
//! written with `S`, reopened with `cahl-tui debug --session FILE`).

use cahl_sessions::{DebugTask, TrajectoryRecord};
use serde::{Deserialize, Serialize};

use super::{Branch, DebuggerState};

/// Version of the saved debugger session file.
pub const DEBUG_FILE_VERSION: u32 = 1;

/// How a debugger started.
#[derive(Debug, Clone, PartialEq)]
pub enum DebugInitial {
    /// From a recorded trajectory: its task, the chosen plan (default: best reward) as the
    /// original branch, with the executor samples that continued as recorded steps.
    Trajectory {
        /// The trajectory.
        record: Box<TrajectoryRecord>,
        /// Which plan; `None` = best reward.
        plan_index: Option<usize>,
    },
    /// A task (from a world/benchmark, or typed) with an optional plan; an empty plan is asked
    /// from the planner when a backend is available.
    Task {
        /// The task.
        task: DebugTask,
        /// Initial plan (may be empty).
        plan: Vec<String>,
        /// Seed of the first branch.
        seed: u64,
    },
    /// A saved debugger session.
    Saved(DebugSessionFile),
}

/// A saved debugger session (JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DebugSessionFile {
    /// [`DEBUG_FILE_VERSION`].
    pub version: u32,
    /// Where the task came from.
    pub source: String,
    /// The task.
    pub task: DebugTask,
    /// All branches.
    pub branches: Vec<Branch>,
    /// Selected branch.
    pub current: usize,
}

/// Why a saved debugger session cannot be reopened.
#[derive(Debug, thiserror::Error)]
pub enum DebugFileError {
    /// The text is not a debugger session.
    #[error("invalid debugger session: {0}")]
    Invalid(#[from] serde_json::Error),
    /// The file's version is newer than [`DEBUG_FILE_VERSION`].
    #[error("debugger session version {0} is newer than supported ({DEBUG_FILE_VERSION})")]
    TooNew(u32),
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A [`DebugFileError::Invalid`] or [`DebugFileError::TooNew`] of the file at `path`.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with its contents.
        #[source]
        source: Box<DebugFileError>,
    },
}

impl DebugSessionFile {
    /// Parses a saved session.
    pub fn from_json(text: &str) -> Result<Self, DebugFileError> {
        let f: DebugSessionFile = serde_json::from_str(text)?;
        if f.version > DEBUG_FILE_VERSION {
            return Err(DebugFileError::TooNew(f.version));
        }
        Ok(f)
    }
}

impl DebugInitial {
    /// Reopens a debugger session saved with `S` (a [`DebugSessionFile`] JSON file).
    pub fn from_saved_file(path: &std::path::Path) -> Result<Self, DebugFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| DebugFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        DebugSessionFile::from_json(&text)
            .map(DebugInitial::Saved)
            .map_err(|e| DebugFileError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            })
    }
}

impl DebuggerState {
    /// The session as a saveable file.
    pub fn to_file(&self) -> DebugSessionFile {
        DebugSessionFile {
            version: DEBUG_FILE_VERSION,
            source: self.source.clone(),
            task: self.task.clone(),
            branches: self.branches.clone(),
            current: self.current,
        }
    }
}

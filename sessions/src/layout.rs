//! Session directory layout: file names, new-directory naming, checkpoint listing and cleanup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{io_err, Result, SessionError};
use crate::records::CheckpointRecord;
use crate::time::UtcDateTime;

/// Resolved configuration of the run (TOML), written once at creation.
pub const CONFIG_FILE: &str = "config.toml";
/// Run metadata ([`crate::RunInfo`], JSON), written at creation.
pub const RUN_INFO_FILE: &str = "run.json";
/// One [`crate::MetricsRecord`] per line.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// One [`crate::TrajectoryRecord`] per line.
pub const TRAJECTORIES_FILE: &str = "trajectories.jsonl";
/// Log file name (written by the binary through tracing-appender, not by this crate).
pub const LOG_FILE: &str = "train.log";
/// Directory holding `step-N` checkpoint directories.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Checkpoint metadata ([`CheckpointRecord`]) inside each `step-N` directory.
pub const CHECKPOINT_META_FILE: &str = "checkpoint.json";
/// PEFT adapter directory of the planner inside a checkpoint.
pub const PLANNER_DIR: &str = "planner";
/// PEFT adapter directory of the executor inside a checkpoint.
pub const EXECUTOR_DIR: &str = "executor";
/// Recommended name for the optimizer state inside a checkpoint (written by the engine).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Recommended name for the RNG state inside a checkpoint (written by the engine).
pub const RNG_STATE_FILE: &str = "rng.json";
/// Recommended name for other trainer state (step, elapsed time, ...) inside a checkpoint.
pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
/// Default parent directory of new sessions, relative to the working directory.
pub const DEFAULT_SESSIONS_DIR: &str = "sessions";

const TMP_PREFIX: &str = ".tmp-";
const OLD_PREFIX: &str = ".old-";
const MAX_NAME_ATTEMPTS: u32 = 10_000;

/// Directory name of the checkpoint for `step`: `step-N` (decimal, no padding).
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step}")
}

/// Parses a checkpoint directory name `step-N`; `None` for anything else (including temp dirs).
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Name of a new session directory for time `t`: `run-YYYYMMDD-HHMMSS` (UTC).
pub fn session_dir_name(t: SystemTime) -> String {
    format!("run-{}", UtcDateTime::from_system_time(t).compact())
}

/// Creates and returns a new, empty session directory under `base` named after the current UTC
/// time (`run-YYYYMMDD-HHMMSS`). If that name is taken, `-2`, `-3`, ... is appended. `base` is
/// created if needed. Creation is race-free (`create_dir` fails on an existing name).
pub fn new_session_dir(base: &Path) -> Result<PathBuf> {
    new_session_dir_at(base, SystemTime::now())
}

/// Like [`new_session_dir`] with an explicit time (for tests and reproducible naming).
pub fn new_session_dir_at(base: &Path, t: SystemTime) -> Result<PathBuf> {
    fs::create_dir_all(base).map_err(io_err(base))?;
    let name = session_dir_name(t);
    for i in 1..=MAX_NAME_ATTEMPTS {
        let candidate = if i == 1 {
            base.join(&name)
        } else {
            base.join(format!("{name}-{i}"))
        };
        match fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&candidate)(e)),
        }
    }
    Err(SessionError::Io {
        path: base.join(&name),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "too many sessions with the same timestamp",
        ),
    })
}

/// Lists committed checkpoints of the session in `session_dir`, sorted by step.
///
/// Only directories named `step-N` count; temp (`.tmp-*`) and other entries are ignored. The
/// step and path always come from the directory name; `created_at` comes from
/// `checkpoint.json` when it is readable (empty otherwise). A missing `checkpoints/` directory
/// yields an empty list.
pub fn list_checkpoints(session_dir: &Path) -> Result<Vec<CheckpointRecord>> {
    let dir = session_dir.join(CHECKPOINTS_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let name = entry.file_name();
        let Some(step) = name.to_str().and_then(parse_checkpoint_name) else {
            continue;
        };
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let created_at = fs::read(path.join(CHECKPOINT_META_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<CheckpointRecord>(&b).ok())
            .map(|r| r.created_at)
            .unwrap_or_default();
        out.push(CheckpointRecord {
            step,
            path: format!("{CHECKPOINTS_DIR}/{}", checkpoint_name(step)),
            created_at,
        });
    }
    out.sort_by_key(|c| c.step);
    Ok(out)
}

/// The committed checkpoint with the highest step, if any.
pub fn latest_checkpoint(session_dir: &Path) -> Result<Option<CheckpointRecord>> {
    Ok(list_checkpoints(session_dir)?.pop())
}

/// Removes leftovers of interrupted operations and returns what was removed or restored:
/// `checkpoints/.tmp-*` (uncommitted checkpoints), `checkpoints/.old-step-N` (a replaced
/// checkpoint; renamed back to `step-N` if the replacement never landed), and `.<file>.tmp`
/// files of interrupted atomic writes in the session directory.
pub(crate) fn clean_stale(session_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cleaned = Vec::new();
    let ckdir = session_dir.join(CHECKPOINTS_DIR);
    if let Ok(entries) = fs::read_dir(&ckdir) {
        for entry in entries {
            let entry = entry.map_err(io_err(&ckdir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = entry.path();
            if name.starts_with(TMP_PREFIX) {
                remove_any(&path)?;
                cleaned.push(path);
            } else if let Some(orig) = name.strip_prefix(OLD_PREFIX) {
                let target = ckdir.join(orig);
                if parse_checkpoint_name(orig).is_some() && !target.exists() {
                    fs::rename(&path, &target).map_err(io_err(&path))?;
                } else {
                    remove_any(&path)?;
                }
                cleaned.push(path);
            }
        }
    }
    let entries = fs::read_dir(session_dir).map_err(io_err(session_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(session_dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        if name.starts_with('.') && name.ends_with(".tmp") && path.is_file() {
            fs::remove_file(&path).map_err(io_err(&path))?;
            cleaned.push(path);
        }
    }
    Ok(cleaned)
}

/// Path of the temp directory for an uncommitted checkpoint of `step`.
pub(crate) fn temp_checkpoint_path(session_dir: &Path, step: u64) -> PathBuf {
    session_dir
        .join(CHECKPOINTS_DIR)
        .join(format!("{TMP_PREFIX}{}", checkpoint_name(step)))
}

/// Path a replaced checkpoint is moved to while its replacement is renamed into place.
pub(crate) fn old_checkpoint_path(session_dir: &Path, step: u64) -> PathBuf {
    session_dir
        .join(CHECKPOINTS_DIR)
        .join(format!("{OLD_PREFIX}{}", checkpoint_name(step)))
}

/// Removes a file or a directory tree; missing paths are fine.
pub(crate) fn remove_any(path: &Path) -> Result<()> {
    let res = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

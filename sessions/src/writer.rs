//! Session writer: creates or resumes a session directory and appends records crash-safely.
//!
//! # Durability policy
//! - `config.toml`, `run.json` and `checkpoint.json` are written atomically (temp file, fsync,
//!   rename, fsync of the directory).
//! - Each JSONL record is serialized to a buffer and written with one `write` call ending in
//!   `\n` (no user-space buffering), so after a `kill -9` the file holds every completed append
//!   plus at most one torn last line. On `ENOSPC`-style write errors the partial line is cut
//!   immediately.
//! - JSONL files are fsynced on [`SessionWriter::sync`], on [`SessionWriter::commit_checkpoint`]
//!   (before the checkpoint is renamed into place, so a checkpoint never exists without the
//!   records up to its step on disk) and on [`SessionWriter::close`] (and, best effort, on drop).
//!   A power loss can therefore lose records written after the last checkpoint; they are
//!   re-emitted by the resumed run.
//! - Checkpoints are filled in `checkpoints/.tmp-step-N` and renamed to `checkpoints/step-N`
//!   only after everything inside was fsynced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{io_err, Result, SessionError};
use crate::fsutil::{atomic_write, sync_dir, sync_tree};
use crate::jsonl::{self, TailRepair};
use crate::layout::{
    self, checkpoint_name, old_checkpoint_path, remove_any, temp_checkpoint_path, CHECKPOINTS_DIR,
    CHECKPOINT_META_FILE, CONFIG_FILE, EXECUTOR_DIR, LOG_FILE, METRICS_FILE, PLANNER_DIR,
    RUN_INFO_FILE, TRAJECTORIES_FILE,
};
use crate::records::{CheckpointRecord, MetricsRecord, RunInfo, TrajectoryRecord};
use crate::time::UtcDateTime;

/// Append-only JSONL file with one `write` per record.
#[derive(Debug)]
struct JsonlAppender {
    path: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
}

impl JsonlAppender {
    fn open(path: PathBuf) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        Ok(JsonlAppender {
            path,
            file,
            len,
            buf: Vec::new(),
        })
    }

    fn append<T: Serialize>(&mut self, record: &T) -> Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, record).map_err(|source| SessionError::Json {
            path: self.path.clone(),
            source,
        })?;
        // Compact serde_json output escapes control characters, so it never contains a raw
        // newline: one record is exactly one line.
        self.buf.push(b'\n');
        if let Err(e) = self.file.write_all(&self.buf) {
            // Cut a partially written line so later appends stay parseable.
            let _ = self.file.set_len(self.len);
            return Err(io_err(&self.path)(e));
        }
        self.len += self.buf.len() as u64;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

/// Report of what [`SessionWriter::resume`] repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeReport {
    /// Torn tails cut from `metrics.jsonl` and `trajectories.jsonl` (entries only for files
    /// where something was cut).
    pub tail_repairs: Vec<TailRepair>,
    /// Leftovers of interrupted writes that were removed (or, for a replaced checkpoint whose
    /// replacement never landed, restored).
    pub cleaned: Vec<PathBuf>,
    /// The checkpoint to resume from, if any. Pass its step to
    /// [`SessionWriter::truncate_after_step`] before appending (or call
    /// [`SessionWriter::clear_records`] if there is none and the run starts over).
    pub latest_checkpoint: Option<CheckpointRecord>,
}

/// Lines removed by [`SessionWriter::truncate_after_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncateReport {
    /// Lines removed from `metrics.jsonl`.
    pub metrics_dropped: usize,
    /// Lines removed from `trajectories.jsonl`.
    pub trajectories_dropped: usize,
}

/// Writes one session directory. See the module docs for the durability policy.
#[derive(Debug)]
pub struct SessionWriter {
    dir: PathBuf,
    info: RunInfo,
    metrics: JsonlAppender,
    trajectories: JsonlAppender,
    closed: bool,
}

impl SessionWriter {
    /// Starts a new session in `dir` (created if missing; an existing directory must not hold
    /// a session yet). `config_toml` is the resolved configuration and must be valid TOML; it is
    /// written verbatim to `config.toml`. `info` is written to `run.json`.
    pub fn create(dir: impl AsRef<Path>, config_toml: &str, info: &RunInfo) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join(CONFIG_FILE);
        config_toml
            .parse::<toml::Table>()
            .map_err(|e| SessionError::Toml {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for name in [CONFIG_FILE, RUN_INFO_FILE, METRICS_FILE, TRAJECTORIES_FILE] {
            if dir.join(name).exists() {
                return Err(SessionError::AlreadyExists {
                    path: dir,
                    found: name.to_string(),
                });
            }
        }
        layout::clean_stale(&dir)?;
        atomic_write(&config_path, config_toml.as_bytes())?;
        write_run_info(&dir, info)?;
        let ck = dir.join(CHECKPOINTS_DIR);
        fs::create_dir_all(&ck).map_err(io_err(&ck))?;
        let metrics = JsonlAppender::open(dir.join(METRICS_FILE))?;
        let trajectories = JsonlAppender::open(dir.join(TRAJECTORIES_FILE))?;
        sync_dir(&dir)?;
        Ok(SessionWriter {
            dir,
            info: info.clone(),
            metrics,
            trajectories,
            closed: false,
        })
    }

    /// Reopens an existing session for appending after a crash or a clean stop.
    ///
    /// Requires readable `run.json` and `config.toml`. Cuts torn tails of both JSONL files
    /// (see [`jsonl::repair_tail`]), removes leftover temp files and checkpoint temp
    /// directories, and reports the latest committed checkpoint. It does **not** drop records
    /// after that checkpoint: call [`Self::truncate_after_step`] with the step you resume from.
    pub fn resume(dir: impl AsRef<Path>) -> Result<(Self, ResumeReport)> {
        let dir = dir.as_ref().to_path_buf();
        let info_path = dir.join(RUN_INFO_FILE);
        let bytes = fs::read(&info_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SessionError::NotASession {
                    path: dir.clone(),
                    reason: format!("{RUN_INFO_FILE} is missing"),
                }
            } else {
                io_err(&info_path)(e)
            }
        })?;
        let info: RunInfo =
            serde_json::from_slice(&bytes).map_err(|source| SessionError::Json {
                path: info_path.clone(),
                source,
            })?;
        let config_path = dir.join(CONFIG_FILE);
        let config = fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
        config
            .parse::<toml::Table>()
            .map_err(|e| SessionError::Toml {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        let cleaned = layout::clean_stale(&dir)?;
        let mut tail_repairs = Vec::new();
        for name in [METRICS_FILE, TRAJECTORIES_FILE] {
            let rep = jsonl::repair_tail(&dir.join(name))?;
            if rep.bytes_cut > 0 {
                tail_repairs.push(rep);
            }
        }
        let ck = dir.join(CHECKPOINTS_DIR);
        fs::create_dir_all(&ck).map_err(io_err(&ck))?;
        let latest_checkpoint = layout::latest_checkpoint(&dir)?;
        let metrics = JsonlAppender::open(dir.join(METRICS_FILE))?;
        let trajectories = JsonlAppender::open(dir.join(TRAJECTORIES_FILE))?;
        sync_dir(&dir)?;
        Ok((
            SessionWriter {
                dir,
                info,
                metrics,
                trajectories,
                closed: false,
            },
            ResumeReport {
                tail_repairs,
                cleaned,
                latest_checkpoint,
            },
        ))
    }

    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run metadata (as written to or read from `run.json`).
    pub fn run_info(&self) -> &RunInfo {
        &self.info
    }

    /// Replaces `run.json` atomically (e.g. to record a changed `total_steps`).
    pub fn update_run_info(&mut self, info: &RunInfo) -> Result<()> {
        write_run_info(&self.dir, info)?;
        self.info = info.clone();
        Ok(())
    }

    /// Reads `config.toml` back (e.g. to rebuild the configuration on resume).
    pub fn config_toml(&self) -> Result<String> {
        let p = self.dir.join(CONFIG_FILE);
        fs::read_to_string(&p).map_err(io_err(&p))
    }

    /// Where the binary should point its tracing-appender file writer: `<dir>/train.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn append_metrics(&mut self, record: &MetricsRecord) -> Result<()> {
        self.metrics.append(record)
    }

    /// Appends one line to `trajectories.jsonl`.
    pub fn append_trajectory(&mut self, record: &TrajectoryRecord) -> Result<()> {
        self.trajectories.append(record)
    }

    /// Fsyncs both JSONL files.
    pub fn sync(&mut self) -> Result<()> {
        self.metrics.sync()?;
        self.trajectories.sync()
    }

    /// Removes every metrics and trajectory line whose `step` is greater than `step`, so a run
    /// resumed from checkpoint `step` re-emits them. Lines without a readable step are kept.
    pub fn truncate_after_step(&mut self, step: u64) -> Result<TruncateReport> {
        let m = jsonl::truncate_after_step(&self.dir.join(METRICS_FILE), step)?;
        let t = jsonl::truncate_after_step(&self.dir.join(TRAJECTORIES_FILE), step)?;
        self.reopen()?;
        Ok(TruncateReport {
            metrics_dropped: m,
            trajectories_dropped: t,
        })
    }

    /// Empties both JSONL files (a resume with no checkpoint starts the run over).
    pub fn clear_records(&mut self) -> Result<()> {
        for a in [&self.metrics, &self.trajectories] {
            a.file.set_len(0).map_err(io_err(&a.path))?;
            a.sync()?;
        }
        self.reopen()
    }

    fn reopen(&mut self) -> Result<()> {
        self.metrics = JsonlAppender::open(self.dir.join(METRICS_FILE))?;
        self.trajectories = JsonlAppender::open(self.dir.join(TRAJECTORIES_FILE))?;
        Ok(())
    }

    /// Creates an empty temp checkpoint directory `checkpoints/.tmp-step-N` with `planner/` and
    /// `executor/` subdirectories for the caller to fill (PEFT adapters, optimizer and RNG
    /// state). A stale temp directory for the same step is removed first. Nothing is visible as
    /// a checkpoint until [`Self::commit_checkpoint`] (or [`TempCheckpoint::commit`]).
    pub fn checkpoint_dir(&self, step: u64) -> Result<TempCheckpoint> {
        TempCheckpoint::create(&self.dir, step)
    }

    /// Fsyncs the JSONL files, then commits `tmp` (see [`TempCheckpoint::commit`]).
    pub fn commit_checkpoint(&mut self, tmp: TempCheckpoint) -> Result<CheckpointRecord> {
        self.sync()?;
        tmp.commit()
    }

    /// All committed checkpoints, sorted by step.
    pub fn list_checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        layout::list_checkpoints(&self.dir)
    }

    /// The committed checkpoint with the highest step.
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>> {
        layout::latest_checkpoint(&self.dir)
    }

    /// Fsyncs both JSONL files and closes them.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        self.sync()
    }
}

impl Drop for SessionWriter {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.metrics.sync();
            let _ = self.trajectories.sync();
        }
    }
}

fn write_run_info(dir: &Path, info: &RunInfo) -> Result<()> {
    let path = dir.join(RUN_INFO_FILE);
    let mut bytes = serde_json::to_vec_pretty(info).map_err(|source| SessionError::Json {
        path: path.clone(),
        source,
    })?;
    bytes.push(b'\n');
    atomic_write(&path, &bytes)
}

/// An uncommitted checkpoint directory (`checkpoints/.tmp-step-N`).
///
/// Fill it, then call [`TempCheckpoint::commit`] (or [`SessionWriter::commit_checkpoint`]).
/// Dropping it without committing removes the temp directory (best effort); a temp directory
/// left by a crash is removed by the next [`SessionWriter::resume`] or `create`, and is never
/// listed as a checkpoint.
#[derive(Debug)]
pub struct TempCheckpoint {
    session_dir: PathBuf,
    step: u64,
    path: PathBuf,
    done: bool,
}

impl TempCheckpoint {
    fn create(session_dir: &Path, step: u64) -> Result<Self> {
        let path = temp_checkpoint_path(session_dir, step);
        remove_any(&path)?;
        for sub in [PLANNER_DIR, EXECUTOR_DIR] {
            let p = path.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(TempCheckpoint {
            session_dir: session_dir.to_path_buf(),
            step,
            path,
            done: false,
        })
    }

    /// The step this checkpoint is for.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The temp directory to fill.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<temp>/planner`: where the planner's PEFT adapter goes.
    pub fn planner_dir(&self) -> PathBuf {
        self.path.join(PLANNER_DIR)
    }

    /// `<temp>/executor`: where the executor's PEFT adapter goes.
    pub fn executor_dir(&self) -> PathBuf {
        self.path.join(EXECUTOR_DIR)
    }

    /// Writes `checkpoint.json`, fsyncs every file and directory inside, renames the temp
    /// directory to `checkpoints/step-N` and fsyncs `checkpoints/`.
    ///
    /// If `step-N` already exists (a run resumed from an earlier checkpoint reached N again) it
    /// is replaced: moved to `.old-step-N`, the new one renamed in, the old one deleted; a crash
    /// in between is repaired by the next resume.
    pub fn commit(mut self) -> Result<CheckpointRecord> {
        let record = CheckpointRecord {
            step: self.step,
            path: format!("{CHECKPOINTS_DIR}/{}", checkpoint_name(self.step)),
            created_at: UtcDateTime::now().rfc3339(),
        };
        let meta = self.path.join(CHECKPOINT_META_FILE);
        let mut bytes =
            serde_json::to_vec_pretty(&record).map_err(|source| SessionError::Json {
                path: meta.clone(),
                source,
            })?;
        bytes.push(b'\n');
        fs::write(&meta, &bytes).map_err(io_err(&meta))?;
        sync_tree(&self.path)?;
        let ckdir = self.session_dir.join(CHECKPOINTS_DIR);
        let target = ckdir.join(checkpoint_name(self.step));
        let old = old_checkpoint_path(&self.session_dir, self.step);
        let replacing = target.exists();
        if replacing {
            remove_any(&old)?;
            fs::rename(&target, &old).map_err(io_err(&target))?;
        }
        if let Err(e) = fs::rename(&self.path, &target) {
            if replacing {
                let _ = fs::rename(&old, &target);
            }
            return Err(io_err(&target)(e));
        }
        self.done = true;
        if replacing {
            remove_any(&old)?;
        }
        sync_dir(&ckdir)?;
        Ok(record)
    }

    /// Discards the temp directory.
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        remove_any(&self.path)
    }
}

impl Drop for TempCheckpoint {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

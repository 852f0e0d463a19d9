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

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{io_err, Result, SessionError};
use crate::fsutil::{atomic_write, parent_of, sync_dir, sync_tree};
use crate::jsonl::{self, JsonlRepair};
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

/// What [`SessionWriter::resume`] found and repaired. Print [`ResumeReport::messages`] (one
/// line each; also what `Display` writes, joined by newlines) on the terminal and in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeReport {
    /// Repairs of `metrics.jsonl` and `trajectories.jsonl`, in that order (see
    /// [`jsonl::repair`]); empty when both were intact.
    pub repairs: Vec<JsonlRepair>,
    /// Leftovers of interrupted writes that were removed (or, for a replaced checkpoint whose
    /// replacement never landed, restored).
    pub cleaned: Vec<PathBuf>,
    /// The checkpoint to resume from, if any. Pass its step to
    /// [`SessionWriter::truncate_after_step`] before appending (or call
    /// [`SessionWriter::clear_records`] if there is none and the run starts over). Check
    /// [`ResumeReport::lost_steps`] first.
    pub latest_checkpoint: Option<CheckpointRecord>,
    /// The distinct steps that have a record in `metrics.jsonl` after the repair, ascending.
    pub metrics_steps: Vec<u64>,
    /// The distinct steps that have a record in `trajectories.jsonl` after the repair, ascending.
    pub trajectory_steps: Vec<u64>,
}

impl ResumeReport {
    /// The last step left in `metrics.jsonl`, if any.
    pub fn last_metrics_step(&self) -> Option<u64> {
        self.metrics_steps.last().copied()
    }

    /// The last step left in `trajectories.jsonl`, if any.
    pub fn last_trajectory_step(&self) -> Option<u64> {
        self.trajectory_steps.last().copied()
    }

    /// Training steps `1..=checkpoint_step` (steps a checkpoint at `checkpoint_step` includes)
    /// that have no record left in `metrics.jsonl` or none in `trajectories.jsonl`, ascending.
    /// Non-empty means records of committed steps were lost (torn or unreadable lines at or
    /// before the checkpoint): resuming from that checkpoint would leave those steps out of the
    /// files for good. (Step 0, the optional baseline evaluation, is not counted.)
    pub fn lost_steps(&self, checkpoint_step: u64) -> Vec<u64> {
        let m = missing_steps(&self.metrics_steps, checkpoint_step);
        let t = missing_steps(&self.trajectory_steps, checkpoint_step);
        let mut all: Vec<u64> = m.into_iter().chain(t).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// One line saying which records of steps up to `checkpoint_step` are missing, or `None`
    /// when none are (see [`Self::lost_steps`]).
    pub fn lost_steps_message(&self, checkpoint_step: u64) -> Option<String> {
        let mut parts = Vec::new();
        for (name, steps) in [
            (METRICS_FILE, &self.metrics_steps),
            (TRAJECTORIES_FILE, &self.trajectory_steps),
        ] {
            let missing = missing_steps(steps, checkpoint_step);
            if !missing.is_empty() {
                let n = missing.len();
                let s = if n == 1 { "" } else { "s" };
                parts.push(format!(
                    "{name} has no record of step{s} {}",
                    format_steps(&missing)
                ));
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!(
            "records of committed steps are missing (checkpoint {} includes steps up to {}): {}",
            checkpoint_name(checkpoint_step),
            checkpoint_step,
            parts.join("; ")
        ))
    }

    /// Everything worth telling the user, one line each: each repair, each leftover cleaned,
    /// and the lost steps relative to [`Self::latest_checkpoint`]. Empty when the session was
    /// intact.
    pub fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = self.repairs.iter().map(|r| r.to_string()).collect();
        out.extend(self.cleaned.iter().map(|p| {
            format!(
                "{}: removed the leftover of an interrupted write",
                p.display()
            )
        }));
        if let Some(ck) = &self.latest_checkpoint {
            out.extend(self.lost_steps_message(ck.step));
        }
        out
    }

    /// True if nothing was repaired, nothing cleaned and no committed step is missing.
    pub fn is_clean(&self) -> bool {
        self.messages().is_empty()
    }
}

impl fmt::Display for ResumeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.messages().join("\n"))
    }
}

/// Steps in `1..=upto` that are not in `present` (sorted ascending).
fn missing_steps(present: &[u64], upto: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut it = present.iter().copied().skip_while(|&s| s == 0).peekable();
    for s in 1..=upto {
        while it.next_if(|&p| p < s).is_some() {}
        if it.next_if_eq(&s).is_none() {
            out.push(s);
        }
    }
    out
}

/// `3`, `3-5`, `3-5, 9` for sorted steps.
fn format_steps(steps: &[u64]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &s in steps {
        let s = s as usize;
        match ranges.last_mut() {
            Some((_, b)) if *b + 1 == s => *b = s,
            _ => ranges.push((s, s)),
        }
    }
    jsonl::format_ranges(&ranges)
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
    /// Starts a new session in `dir`, which must not exist yet or be an empty directory (such
    /// as [`crate::new_session_dir`] makes). `config_toml` is the resolved configuration and
    /// must be valid TOML; it is written verbatim to `config.toml`. `info` is written to
    /// `run.json`.
    ///
    /// Creation is atomic: the session (`config.toml`, `run.json`, empty JSONL files,
    /// `checkpoints/`) is built in a hidden sibling folder `.<name>.creating-<pid>`, fsynced,
    /// and renamed to `dir` (replacing an empty `dir`). A kill at any moment leaves either a
    /// complete session at `dir` or none (`dir` as it was), never a half one. The staging
    /// folder a killed creation leaves blocks nothing: the reader and resume never look at it,
    /// a new create of the same `dir` succeeds and removes it once its process is gone (on
    /// Linux), and it is safe to delete by hand.
    ///
    /// Errors: [`SessionError::AlreadyExists`] if `dir` holds a session,
    /// [`SessionError::NotEmpty`] if it holds anything else, [`SessionError::Toml`] for bad
    /// TOML (nothing is created then).
    pub fn create(dir: impl AsRef<Path>, config_toml: &str, info: &RunInfo) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join(CONFIG_FILE);
        config_toml
            .parse::<toml::Table>()
            .map_err(|e| SessionError::Toml {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        layout::check_new_session_target(&dir)?;
        let staging = layout::staging_path(&dir).ok_or_else(|| SessionError::NotEmpty {
            path: dir.clone(),
            found: "the path has no final name".into(),
        })?;
        let parent = parent_of(&dir);
        fs::create_dir_all(parent).map_err(io_err(parent))?;
        layout::remove_dead_staging(&dir)?;
        fs::create_dir(&staging).map_err(io_err(&staging))?;
        let built = fill_new_session(&staging, config_toml, info)
            .and_then(|()| layout::place_staged(&staging, &dir));
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        sync_dir(parent)?;
        let metrics = JsonlAppender::open(dir.join(METRICS_FILE))?;
        let trajectories = JsonlAppender::open(dir.join(TRAJECTORIES_FILE))?;
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
    /// Requires readable `run.json` and `config.toml`. Repairs both JSONL files (see
    /// [`jsonl::repair`]: torn tails cut, unreadable lines removed, an unreadable file backed
    /// up and emptied), removes leftover temp files and checkpoint temp directories, and
    /// reports all of it, the steps left in each file and the latest committed checkpoint in
    /// the [`ResumeReport`]: print its [`ResumeReport::messages`], and check
    /// [`ResumeReport::lost_steps`] against the checkpoint you resume from. It does **not**
    /// drop records after that checkpoint: call [`Self::truncate_after_step`] with its step.
    pub fn resume(dir: impl AsRef<Path>) -> Result<(Self, ResumeReport)> {
        let dir = dir.as_ref().to_path_buf();
        let info_path = dir.join(RUN_INFO_FILE);
        let bytes = fs::read(&info_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SessionError::NotASession {
                    path: dir.clone(),
                    reason: missing_run_info_reason(&dir),
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
        let metrics_check = jsonl::repair(&dir.join(METRICS_FILE))?;
        let trajectories_check = jsonl::repair(&dir.join(TRAJECTORIES_FILE))?;
        let mut repairs = metrics_check.repairs;
        repairs.extend(trajectories_check.repairs);
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
                repairs,
                cleaned,
                latest_checkpoint,
                metrics_steps: metrics_check.steps,
                trajectory_steps: trajectories_check.steps,
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

fn run_info_bytes(path: &Path, info: &RunInfo) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(info).map_err(|source| SessionError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn write_run_info(dir: &Path, info: &RunInfo) -> Result<()> {
    let path = dir.join(RUN_INFO_FILE);
    atomic_write(&path, &run_info_bytes(&path, info)?)
}

/// Why `run.json` is missing, with a hint when a creation was interrupted.
fn missing_run_info_reason(dir: &Path) -> String {
    if dir.join(CONFIG_FILE).exists() {
        format!(
            "{RUN_INFO_FILE} is missing: its creation was interrupted, so there is nothing to \
             resume; delete the directory and start a fresh run"
        )
    } else if !layout::staging_leftovers(dir).is_empty() {
        format!(
            "{RUN_INFO_FILE} is missing: its creation was interrupted, so there is nothing to \
             resume; start a fresh run there instead"
        )
    } else {
        format!("{RUN_INFO_FILE} is missing")
    }
}

/// Writes the files of a new session into the (empty) staging folder and fsyncs them all.
fn fill_new_session(staging: &Path, config_toml: &str, info: &RunInfo) -> Result<()> {
    let config = staging.join(CONFIG_FILE);
    fs::write(&config, config_toml).map_err(io_err(&config))?;
    let run = staging.join(RUN_INFO_FILE);
    fs::write(&run, run_info_bytes(&run, info)?).map_err(io_err(&run))?;
    for name in [METRICS_FILE, TRAJECTORIES_FILE] {
        let p = staging.join(name);
        File::create(&p).map_err(io_err(&p))?;
    }
    let ck = staging.join(CHECKPOINTS_DIR);
    fs::create_dir(&ck).map_err(io_err(&ck))?;
    sync_tree(staging)
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

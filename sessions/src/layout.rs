//! Session directory layout: file names, new-directory naming, checkpoint listing and cleanup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{io_err, Result, SessionError};
use crate::fsutil::parent_of;
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
/// Marks the hidden sibling folder a new session is built in: `.<name>.creating-<pid>`.
const STAGING_INFIX: &str = ".creating-";
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

/// PEFT adapter config inside `planner/` and `executor/` of a checkpoint.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT adapter weights inside `planner/` and `executor/` of a checkpoint.
pub const ADAPTER_MODEL_FILE: &str = "adapter_model.safetensors";

/// Committed checkpoints whose adapters look intact, newest first (see [`checkpoint_defect`]
/// for what is checked). A resume should use the first one and say so when it is not the
/// newest committed checkpoint ([`latest_checkpoint`]).
pub fn intact_checkpoints(session_dir: &Path) -> Result<Vec<CheckpointRecord>> {
    let mut all = list_checkpoints(session_dir)?;
    all.reverse();
    all.retain(|c| checkpoint_defect(session_dir, c).is_none());
    Ok(all)
}

/// Why the committed checkpoint `ck` of the session in `session_dir` cannot be loaded, or
/// `None` if it looks intact: both `planner/` and `executor/` must hold an
/// `adapter_config.json` that parses as JSON and a non-empty `adapter_model.safetensors` whose
/// 8-byte header length fits the file, whose header parses as a JSON object, and whose tensor
/// data ends exactly at the end of the file (a cut file fails). Reads only the headers.
pub fn checkpoint_defect(session_dir: &Path, ck: &CheckpointRecord) -> Option<String> {
    let dir = session_dir.join(&ck.path);
    [PLANNER_DIR, EXECUTOR_DIR].iter().find_map(|sub| {
        let d = dir.join(sub);
        let cfg = d.join(ADAPTER_CONFIG_FILE);
        let defect = match fs::read(&cfg) {
            Err(e) => Some(format!("{}: {e}", cfg.display())),
            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
                .err()
                .map(|e| format!("{}: invalid JSON: {e}", cfg.display())),
        };
        defect.or_else(|| {
            let st = d.join(ADAPTER_MODEL_FILE);
            safetensors_defect(&st).map(|why| format!("{}: {why}", st.display()))
        })
    })
}

/// What is wrong with the safetensors file at `path`, or `None`.
fn safetensors_defect(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    let len = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Some(e.to_string()),
    };
    if len == 0 {
        return Some("empty file".into());
    }
    let mut n = [0u8; 8];
    if f.read_exact(&mut n).is_err() {
        return Some(format!(
            "{len} bytes: shorter than the 8-byte header length"
        ));
    }
    let n = u64::from_le_bytes(n);
    if n == 0 || n > len - 8 {
        return Some(format!("header length {n} does not fit a {len}-byte file"));
    }
    let mut header = vec![0u8; n as usize];
    if let Err(e) = f.read_exact(&mut header) {
        return Some(format!("reading the header: {e}"));
    }
    let header: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&header) {
        Ok(h) => h,
        Err(e) => return Some(format!("header is not a JSON object: {e}")),
    };
    // The tensors' byte ranges must cover the data exactly (as the safetensors loader checks).
    let data_end = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let data_len = len - 8 - n;
    if data_end != data_len {
        return Some(format!(
            "tensor data should be {data_end} bytes, the file holds {data_len}"
        ));
    }
    None
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

/// The hidden sibling folder [`crate::SessionWriter::create`] builds the session for `dir` in,
/// before renaming it to `dir`: `<parent>/.<name>.creating-<pid>`. `None` if `dir` has no
/// final name component (e.g. `..`).
pub(crate) fn staging_path(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    Some(parent_of(dir).join(format!(".{name}{STAGING_INFIX}{}", std::process::id())))
}

/// Staging folders of earlier creations of `dir` (by any process), with the pid in their name.
pub(crate) fn staging_leftovers(dir: &Path) -> Vec<(PathBuf, Option<u32>)> {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let prefix = format!(".{name}{STAGING_INFIX}");
    let Ok(entries) = fs::read_dir(parent_of(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_owned();
            let pid = n.strip_prefix(&prefix)?.parse::<u32>().ok();
            Some((e.path(), pid))
        })
        .collect()
}

/// Removes staging folders of earlier creations of `dir` whose process is gone: this process's
/// own (a pid reused after a kill), and, where `/proc` shows live processes, those of pids
/// that are not running. Others are left alone (they are ignored everywhere anyway).
pub(crate) fn remove_dead_staging(dir: &Path) -> Result<()> {
    let own = std::process::id();
    let procfs = Path::new("/proc/self").exists();
    for (path, pid) in staging_leftovers(dir) {
        let dead = match pid {
            Some(p) if p == own => true,
            Some(p) => procfs && !Path::new("/proc").join(p.to_string()).exists(),
            None => false,
        };
        if dead {
            remove_any(&path)?;
        }
    }
    Ok(())
}

/// Checks that a new session can be created at `dir`: it must not exist, or be an empty
/// directory. Otherwise returns [`SessionError::AlreadyExists`] (a session file is there) or
/// [`SessionError::NotEmpty`].
pub(crate) fn check_new_session_target(dir: &Path) -> Result<()> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    if !meta.is_dir() {
        return Err(SessionError::NotEmpty {
            path: dir.to_path_buf(),
            found: "it is not a directory".into(),
        });
    }
    if dir.join(CONFIG_FILE).exists() && !dir.join(RUN_INFO_FILE).exists() {
        return Err(SessionError::NotEmpty {
            path: dir.to_path_buf(),
            found: format!(
                "{CONFIG_FILE} without {RUN_INFO_FILE}, left by an interrupted creation; \
                 delete the directory"
            ),
        });
    }
    for name in [CONFIG_FILE, RUN_INFO_FILE, METRICS_FILE, TRAJECTORIES_FILE] {
        if dir.join(name).exists() {
            return Err(SessionError::AlreadyExists {
                path: dir.to_path_buf(),
                found: name.to_string(),
            });
        }
    }
    let mut entries = fs::read_dir(dir).map_err(io_err(dir))?;
    if let Some(entry) = entries.next() {
        let entry = entry.map_err(io_err(dir))?;
        return Err(SessionError::NotEmpty {
            path: dir.to_path_buf(),
            found: format!("{} exists", entry.file_name().to_string_lossy()),
        });
    }
    Ok(())
}

/// Renames the filled staging folder to `dir`, which must not exist or be an empty directory
/// (replaced atomically on Unix; removed first elsewhere).
pub(crate) fn place_staged(staging: &Path, dir: &Path) -> Result<()> {
    #[cfg(not(unix))]
    if dir.is_dir() {
        fs::remove_dir(dir).map_err(io_err(dir))?;
    }
    fs::rename(staging, dir).map_err(|e| {
        // Someone filled `dir` since the check: say what is there.
        check_new_session_target(dir)
            .err()
            .unwrap_or_else(|| io_err(dir)(e))
    })
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

//! What the debugger looks up: a built-in task by id, and the session a trace belongs to (its
//! directory, configuration and latest checkpoint; `eval`, `replay` and `train` use these too).
//! Benchmark items by id: [`crate::benchmarks::find_item`].
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::train::TrainConfig;
use crate::worlds::builtin::generate_tasks;
use crate::worlds::{Split, Task};

/// A built-in world task by id (e.g. `builtin-test-0-12`), searched in the first 5,000 tasks of
/// each split (seed 0).
pub fn find_task(id: &str) -> Result<Task> {
    for split in [Split::Train, Split::Dev, Split::Test] {
        let tasks = generate_tasks(split, 5000, 0)?;
        if let Some(t) = tasks.into_iter().find(|t| t.id == id) {
            return Ok(t);
        }
    }
    Err(EngineError::Config(format!(
        "no built-in task with id {id:?} among the first 5,000 of each split (seed 0)"
    )))
}

pub fn session_dir_of(trace: &Path) -> Option<PathBuf> {
    if trace.is_dir() {
        Some(trace.to_path_buf())
    } else {
        trace.parent().map(Path::to_path_buf)
    }
}

/// The training configuration of the session that `trace` belongs to (its `config.toml`), or
/// the defaults when it has none that parses.
pub fn session_config(trace: &Path) -> TrainConfig {
    session_dir_of(trace)
        .and_then(|d| {
            let p = d.join("config.toml");
            let text = std::fs::read_to_string(&p).ok()?;
            TrainConfig::from_toml(&text, &p.display().to_string()).ok()
        })
        .unwrap_or_default()
}

/// The latest checkpoint directory of the session that `trace` (a session directory or one of
/// its JSONL files) belongs to.
pub fn latest_checkpoint_of(trace: &Path) -> Option<PathBuf> {
    let d = session_dir_of(trace)?;
    let ck = cahl_sessions::latest_checkpoint(&d).ok().flatten()?;
    let p = d.join(&ck.path);
    Some(if p.exists() {
        p
    } else {
        PathBuf::from(ck.path)
    })
}

//! What the debugger looks up: a built-in task by id, and the session a trace belongs to (its
//! directory, configuration and latest checkpoint; `eval`, `replay` and `train` use these too).
//! Benchmark items by id: [`crate::benchmarks::find_item`].
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::train::TrainConfig;
use crate::worlds::builtin::generate_tasks;
use crate::worlds::{Split, Task};

/// A built-in world task by id: `builtin-<split>-<seed>-<n>` is the n-th task generated for
/// that split with that seed (as a run with that `seed` generates it); other ids are searched
/// in the first 5,000 tasks of each split with seed 0.
pub fn find_task(id: &str) -> Result<Task> {
    let parts: Vec<&str> = id.split('-').collect();
    if let [w, split, seed, n] = parts[..] {
        let split = match split {
            "train" => Some(Split::Train),
            "dev" => Some(Split::Dev),
            "test" => Some(Split::Test),
            _ => None,
        };
        if let (true, Some(split), Ok(seed), Ok(n)) = (
            w == "builtin",
            split,
            seed.parse::<u64>(),
            n.parse::<usize>(),
        ) {
            if n < 100_000 {
                if let Some(t) = generate_tasks(split, n + 1, seed)?
                    .into_iter()
                    .find(|t| t.id == id)
                {
                    return Ok(t);
                }
            }
        }
    }
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

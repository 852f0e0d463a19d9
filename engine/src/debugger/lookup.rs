//! Lookups the debugger (and `eval`, `replay`, `train`) needs: a task by id, and the
//! configuration and latest checkpoint of the session a trace belongs to.
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::score::{bfcl, Bench};
use crate::train::TrainConfig;
use crate::worlds::builtin::generate_tasks;
use crate::worlds::{bamboogle, benchmarks, Split, Task};

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

/// The benchmark's name as on the command line (and its folder in ../shared/data).
fn bench_name(bench: Bench) -> &'static str {
    match bench {
        Bench::Bfcl => "bfcl",
        Bench::ApiBank => "api-bank",
        Bench::Nestful => "nestful",
        Bench::Bamboogle => "bamboogle",
    }
}

/// The folder of `bench` under `data`: `data` itself, or `data/<bench folder>` when `data` is
/// the parent of the benchmark folders (like ../shared/data).
fn bench_dir(bench: Bench, data: &Path) -> PathBuf {
    let nested = data.join(bench_name(bench));
    if nested.is_dir() {
        nested
    } else {
        data.to_path_buf()
    }
}

/// A benchmark item by id as a task with its tools and gold calls (ids as the scorers use them).
pub fn find_bench_task(bench: Bench, data: &Path, id: &str) -> Result<Task> {
    let dir = bench_dir(bench, data);
    let tasks = match bench {
        Bench::Bfcl => {
            let cats = bfcl::category_files(&dir).map_err(|e| EngineError::Other(e.to_string()))?;
            // the category is the id without its trailing _N; try it first
            let guess = id.rsplit_once('_').map(|(c, _)| c.to_string());
            let mut out = Vec::new();
            let ordered = cats
                .iter()
                .filter(|(c, _)| Some(c) == guess.as_ref())
                .chain(cats.iter().filter(|(c, _)| Some(c) != guess.as_ref()));
            for (cat, _) in ordered {
                let ts = benchmarks::bfcl_tasks(&dir, cat)?;
                if let Some(t) = ts.into_iter().find(|t| t.id == id) {
                    out.push(t);
                    break;
                }
            }
            out
        }
        Bench::ApiBank => benchmarks::apibank_tasks(&dir, None)?,
        Bench::Nestful => benchmarks::nestful_tasks(&dir, None)?,
        Bench::Bamboogle => bamboogle::load_tasks(&dir)?,
    };
    let n = tasks.len();
    tasks.into_iter().find(|t| t.id == id).ok_or_else(|| {
        EngineError::Config(format!(
            "no {} item with id {id:?} in {} ({})",
            bench_name(bench),
            dir.display(),
            if matches!(bench, Bench::Bfcl) {
                "BFCL ids look like simple_python_0, multiple_3; multi-turn categories are not supported".to_string()
            } else {
                format!("{n} items read")
            }
        ))
    })
}


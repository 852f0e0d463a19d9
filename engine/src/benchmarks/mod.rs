//! The benchmarks: one module per benchmark with its task loader, its world and its scorer
//! (BFCL, API-Bank, NESTFUL, Bamboogle; ToolRL is a training source without a scorer), and the
//! [`Bench`] registry that evaluation, scoring, training and the debugger go through.
//!
//! Benchmarks whose tools are not executable (BFCL, API-Bank, NESTFUL, ToolRL) run in a
//! [`StaticWorld`] and are scored statically from the calls made; Bamboogle runs in a
//! [`SearchWorld`] and is scored on its final answer. `worlds/` knows nothing of this module.
//!
//! ```no_run
//! use cahl_engine::benchmarks::{Bench, Prediction};
//! let bench = Bench::parse("api-bank").unwrap();
//! let dir = std::path::Path::new("../shared/data/api-bank");
//! let tasks = bench.load_tasks(Some(dir), Some(20), 0, None).unwrap();
//! let preds: Vec<Prediction> = tasks
//!     .iter()
//!     .map(|t| Prediction::from_calls(t.id.clone(), t.gold_calls.clone()))
//!     .collect();
//! println!("{}", bench.score(dir, None, &preds).unwrap().summary());
//! ```
pub mod apibank;
pub mod bamboogle;
pub mod bfcl;
pub mod nestful;
pub mod score;
pub mod toolrl;
pub mod training;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use score::{
    read_predictions, CategoryScore, Prediction, ScoreError, ScoreReport, Verdict,
    MAX_PREDICTION_LINE,
};
pub use training::{split_held_out, synth_gold_plan, training_world, TrainingWorld};

use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
use crate::worlds::search::{search_tool, Bm25Index, SearchWorld};
use crate::worlds::static_world::StaticWorld;
use crate::worlds::{Split, Task, World, WorldError};

/// Errors of loading benchmark tasks and making their worlds.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    World(#[from] WorldError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A benchmark data file or folder that cannot be read; messages start with the path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} line {line}: {source}", path.display())]
    JsonLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {msg}", path.display())]
    Bad { path: PathBuf, msg: String },
}

impl LoadError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn json(path: &Path) -> impl FnOnce(serde_json::Error) -> Self + '_ {
        move |source| LoadError::Json {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn bad(path: &Path, msg: impl Into<String>) -> Self {
        LoadError::Bad {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

pub(crate) fn data_err(path: &Path, msg: String) -> WorldError {
    WorldError::Data {
        path: path.display().to_string(),
        msg,
    }
}

/// What can be evaluated on: the built-in world's generated tasks and the benchmarks with data
/// folders (`cahl-tui eval --bench`, `score --bench`, `debug --bench`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    /// Generated test-split tasks of the built-in world.
    Builtin,
    Bfcl,
    ApiBank,
    Nestful,
    Bamboogle,
}

impl Bench {
    /// A name as on the command line (case-insensitive; `_` for `-` and `apibank` accepted).
    pub fn parse(s: &str) -> Result<Bench, BenchError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "builtin" => Ok(Bench::Builtin),
            "bfcl" => Ok(Bench::Bfcl),
            "api-bank" | "apibank" => Ok(Bench::ApiBank),
            "nestful" => Ok(Bench::Nestful),
            "bamboogle" => Ok(Bench::Bamboogle),
            _ => Err(BenchError::Input(format!(
                "unknown --bench {s:?} (expected builtin, bfcl, api-bank, nestful or bamboogle)"
            ))),
        }
    }

    /// A benchmark with a scorer (every one but `builtin`), by name.
    pub fn scored(s: &str) -> Result<Bench, ScoreError> {
        match Bench::parse(s) {
            Ok(Bench::Builtin) | Err(_) => Err(ScoreError::UnknownBench(s.to_string())),
            Ok(b) => Ok(b),
        }
    }

    /// The name used in files and as the world name (`builtin`, `bfcl`, `api-bank`, `nestful`,
    /// `bamboogle`); the benchmark's folder under `../shared/data`.
    pub fn name(self) -> &'static str {
        match self {
            Bench::Builtin => crate::worlds::builtin::WORLD_NAME,
            Bench::Bfcl => bfcl::WORLD_NAME,
            Bench::ApiBank => apibank::WORLD_NAME,
            Bench::Nestful => nestful::WORLD_NAME,
            Bench::Bamboogle => bamboogle::WORLD_NAME,
        }
    }

    /// Load the tasks of a benchmark.
    ///
    /// * `builtin`: `limit` (default 100) generated test-split tasks from `seed`;
    /// * benchmarks: every item of `data` (or of `category`), at most `limit` per category, in
    ///   file order.
    pub fn load_tasks(
        self,
        data: Option<&Path>,
        limit: Option<usize>,
        seed: u64,
        category: Option<&str>,
    ) -> Result<Vec<Task>, BenchError> {
        let need_data = || {
            data.ok_or_else(|| {
                BenchError::Input(format!(
                    "--bench {} needs --data DIR (e.g. ../shared/data/{})",
                    self.name(),
                    self.name()
                ))
            })
        };
        let tasks = match self {
            Bench::Builtin => {
                let mut t = generate_tasks(Split::Test, limit.unwrap_or(100), seed)?;
                if let Some(c) = category {
                    t.retain(|x| category_of(x) == c);
                }
                return Ok(t);
            }
            Bench::Bfcl => {
                let dir = need_data()?;
                let cats = bfcl::category_files(dir)?;
                if cats.is_empty() {
                    return Err(BenchError::Input(format!(
                        "{}: no BFCL_v4_*.json category files",
                        dir.display()
                    )));
                }
                let tasks = bfcl::load_tasks(dir, category).map_err(|e| match e {
                    BenchError::Score(ScoreError::UnknownCategory(c)) => {
                        BenchError::Input(format!("no BFCL category {c:?}"))
                    }
                    other => other,
                })?;
                if let (Some(c), true) = (category, tasks.is_empty()) {
                    return Err(BenchError::Input(format!("no BFCL category {c:?}")));
                }
                tasks
            }
            Bench::ApiBank => apibank::load_tasks(need_data()?, category)?,
            Bench::Nestful => nestful::load_tasks(need_data()?, category)?,
            Bench::Bamboogle => bamboogle::load_tasks(need_data()?)?,
        };
        let Some(limit) = limit else {
            return Ok(tasks);
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        Ok(tasks
            .into_iter()
            .filter(|t| {
                let n = seen.entry(category_of(t)).or_default();
                *n += 1;
                *n <= limit
            })
            .collect())
    }

    /// The world this benchmark's tasks run in (see [`world_by_name`]). Bamboogle needs a
    /// search index (a directory written by `cahl-tui index build`), searched 3 hits at a time.
    pub fn world(self, index: Option<&Path>) -> Result<Box<dyn World>, BenchError> {
        let search = match self {
            Bench::Bamboogle => {
                let dir = index.ok_or_else(|| {
                    BenchError::Input(
                        "--bench bamboogle needs --index DIR: a BM25 index of a search corpus \
                         (build one with `cahl-tui index build --corpus FILE --out DIR`)"
                            .into(),
                    )
                })?;
                Some((Arc::new(Bm25Index::open(dir)?), 3))
            }
            _ => None,
        };
        world_by_name(self.name(), search)
    }

    /// Score `predictions` against the benchmark data in `dir`; items with no prediction count
    /// as wrong. `builtin` has no scorer (its episodes are judged by the rollout).
    pub fn score(
        self,
        dir: &Path,
        category: Option<&str>,
        predictions: &[Prediction],
    ) -> Result<ScoreReport, ScoreError> {
        let by_id = score::index_predictions(predictions);
        let (verdicts, partial_label) = match self {
            Bench::Builtin => return Err(ScoreError::UnknownBench(self.name().into())),
            Bench::Bfcl => (bfcl::verdicts(dir, category, &by_id)?, None),
            Bench::ApiBank => (apibank::verdicts(dir, category, &by_id)?, None),
            Bench::Nestful => (
                nestful::verdicts(dir, category, &by_id)?,
                Some("per-call match"),
            ),
            Bench::Bamboogle => (
                bamboogle::verdicts(dir, category, &by_id)?,
                Some("contains (no LLM judge offline)"),
            ),
        };
        let used = verdicts
            .iter()
            .filter(|v| by_id.contains_key(v.id.as_str()))
            .count();
        let unmatched = predictions.len().saturating_sub(used);
        Ok(ScoreReport::from_verdicts(
            self,
            verdicts,
            unmatched,
            partial_label,
        ))
    }

    /// Gold answers of a benchmark as predictions (used to check the scorers score 100% on gold).
    pub fn gold_predictions(
        self,
        dir: &Path,
        category: Option<&str>,
    ) -> Result<Vec<Prediction>, ScoreError> {
        match self {
            Bench::Builtin => Err(ScoreError::UnknownBench(self.name().into())),
            Bench::Bfcl => bfcl::gold_predictions(dir, category),
            Bench::ApiBank => apibank::gold_predictions(dir, category),
            Bench::Nestful => nestful::gold_predictions(dir, category),
            Bench::Bamboogle => bamboogle::gold_predictions(dir),
        }
    }
}

/// The world named `name` (a [`Task::world`]): the built-in world, a [`StaticWorld`] for the
/// benchmarks whose tools are not executable (`bfcl`, `api-bank`, `nestful`, `toolrl`; it takes
/// each task's tools on reset), and for `bamboogle` a [`SearchWorld`] over `search` (an index
/// and the hits per query) or, without one, a static world offering the search tool.
pub fn world_by_name(
    name: &str,
    search: Option<(Arc<Bm25Index>, usize)>,
) -> Result<Box<dyn World>, BenchError> {
    Ok(match name {
        crate::worlds::builtin::WORLD_NAME => Box::new(BuiltinWorld::new()),
        bfcl::WORLD_NAME | apibank::WORLD_NAME | nestful::WORLD_NAME | toolrl::WORLD_NAME => {
            Box::new(StaticWorld::new(name, Vec::new()))
        }
        bamboogle::WORLD_NAME => match search {
            Some((idx, k)) => Box::new(SearchWorld::new(bamboogle::WORLD_NAME, idx, k)),
            None => Box::new(StaticWorld::new(bamboogle::WORLD_NAME, vec![search_tool()])),
        },
        other => return Err(BenchError::Input(format!("unknown world {other:?}"))),
    })
}

/// The folder of `bench` under `data`: `data` itself, or `data/<bench folder>` when `data` is
/// the parent of the benchmark folders (like ../shared/data).
pub fn bench_dir(bench: Bench, data: &Path) -> std::path::PathBuf {
    let nested = data.join(bench.name());
    if nested.is_dir() {
        nested
    } else {
        data.to_path_buf()
    }
}

/// A benchmark item by id (ids as the scorers use them) as a task with its tools and gold
/// calls; the built-in world's tasks by id are [`crate::debugger::lookup::find_task`].
pub fn find_item(bench: Bench, data: &Path, id: &str) -> Result<Task, BenchError> {
    let dir = bench_dir(bench, data);
    let tasks = match bench {
        Bench::Bfcl => {
            // the category is the id without its trailing _N; try it first
            let guess = id.rsplit_once('_').map(|(c, _)| c);
            let first = guess.and_then(|c| bfcl::load_tasks(&dir, Some(c)).ok());
            match first {
                Some(ts) if ts.iter().any(|t| t.id == id) => ts,
                _ => bfcl::load_tasks(&dir, None)?,
            }
        }
        _ => bench.load_tasks(Some(&dir), None, 0, None)?,
    };
    let n = tasks.len();
    tasks.into_iter().find(|t| t.id == id).ok_or_else(|| {
        BenchError::Input(format!(
            "no {} item with id {id:?} in {} ({})",
            bench.name(),
            dir.display(),
            if matches!(bench, Bench::Bfcl) {
                "BFCL ids look like simple_python_0, multiple_3; multi-turn categories are not supported".to_string()
            } else {
                format!("{n} items read")
            }
        ))
    })
}

/// The category of a task in the accuracy table: `calls-N` for built-in tasks, the benchmark's
/// category (BFCL category, API-Bank level, NESTFUL source) otherwise.
pub fn category_of(task: &Task) -> String {
    match task.world.as_str() {
        "builtin" => format!("calls-{}", task.gold_calls.len()),
        "bamboogle" => "bamboogle".into(),
        _ => task.template.clone().unwrap_or_else(|| task.world.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(Bench::parse("builtin").unwrap(), Bench::Builtin);
        assert_eq!(Bench::parse("api-bank").unwrap(), Bench::ApiBank);
        assert_eq!(Bench::parse("BFCL").unwrap(), Bench::Bfcl);
        let e = Bench::parse("nope").unwrap_err().to_string();
        assert!(e.contains("builtin, bfcl"), "{e}");
        assert_eq!(Bench::scored("api-bank").unwrap(), Bench::ApiBank);
        assert!(Bench::scored("x").is_err());
        let e = Bench::scored("builtin").unwrap_err().to_string();
        assert!(e.contains("expected bfcl, api-bank"), "{e}");
        for b in [
            Bench::Builtin,
            Bench::Bfcl,
            Bench::ApiBank,
            Bench::Nestful,
            Bench::Bamboogle,
        ] {
            assert_eq!(Bench::parse(b.name()).unwrap(), b);
            assert_eq!(serde_json::to_value(b).unwrap(), b.name());
        }
    }

    #[test]
    fn builtin_tasks_limit_and_categories() {
        let t = Bench::Builtin.load_tasks(None, Some(7), 3, None).unwrap();
        assert_eq!(t.len(), 7);
        assert!(t.iter().all(|x| x.split == Some(Split::Test)));
        let c = category_of(&t[0]);
        let only = Bench::Builtin
            .load_tasks(None, Some(7), 3, Some(&c))
            .unwrap();
        assert!(!only.is_empty() && only.iter().all(|x| category_of(x) == c));
        let e = Bench::ApiBank
            .load_tasks(None, None, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --data"), "{e}");
        let e = Bench::Bamboogle.world(None).err().unwrap().to_string();
        assert!(e.contains("--index"), "{e}");
    }

    #[test]
    fn worlds_by_name() {
        for n in [
            "builtin",
            "bfcl",
            "api-bank",
            "nestful",
            "toolrl",
            "bamboogle",
        ] {
            assert_eq!(world_by_name(n, None).unwrap().name(), n);
        }
        let w = world_by_name("bamboogle", None).unwrap();
        assert_eq!(w.tools()[0].name, search_tool().name);
        assert!(world_by_name("nope", None).is_err());
    }
}

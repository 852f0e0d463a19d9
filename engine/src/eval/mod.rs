//! Greedy evaluation of an agent (planner then executor, or flat) on the built-in world and on
//! the benchmarks, scored with the benchmarks' own scorers.
//!
//! Every item runs as one greedy episode through the training rollout
//! ([`crate::train::rollout_task`] with one plan, one executor sample per sub-task and argmax
//! decoding). Benchmarks whose tools are not executable (BFCL, API-Bank, NESTFUL) run in a
//! [`StaticWorld`]: each emitted call is checked against the item's tool schemas and answered with
//! a neutral placeholder observation (`{"status": "ok", "note": "simulated…"}`), or an error
//! naming the schema violation; the calls emitted over the whole episode, in order, are the
//! prediction scored by [`crate::score::score_bench`]. Bamboogle runs in a [`SearchWorld`] over
//! a BM25 index, and its prediction is the episode's final `<response>` text. Built-in tasks are
//! judged by the rollout's success criterion (gold calls made in order and the gold final state
//! reached).
//!
//! ```no_run
//! use cahl_engine::eval::{load_tasks, run_eval, EvalBench, EvalOptions};
//! fn evaluate(agent: &mut cahl_engine::train::Agent) {
//!     let bench = EvalBench::Builtin;
//!     let tasks = load_tasks(bench, None, Some(20), 0, None).unwrap();
//!     let run = run_eval(agent, bench, None, None, &tasks, &EvalOptions::default(), &mut |_, _| {}).unwrap();
//!     println!("{}", run.summary.to_text());
//! }
//! ```
pub mod aggregate;
pub mod taxonomy;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cahl_sessions::records::TrajectoryRecord;
use serde::{Deserialize, Serialize};

pub use aggregate::{EvalSummary, ItemResult};
pub use taxonomy::{classify, EpisodeView, Label, Misalignment};

use crate::error::EngineError;
use crate::lanes::Lanes;
use crate::parse::{parse_executor, parse_planner, validate_call, ToolCall, ToolSchema};
use crate::score::{score_bench, Bench, Prediction, ScoreError};
use crate::train::{rollout_task_with, Agent, Mode, Prefixes, TrainConfig};
use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
use crate::worlds::search::{Bm25Index, SearchWorld};
use crate::worlds::static_world::StaticWorld;
use crate::worlds::{bamboogle, benchmarks, Split, Task, World, WorldError};

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    World(#[from] WorldError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;

/// What to evaluate on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalBench {
    /// Generated test-split tasks of the built-in world.
    Builtin,
    Bench(Bench),
}

impl EvalBench {
    pub fn parse(s: &str) -> Result<EvalBench> {
        if s.eq_ignore_ascii_case("builtin") {
            return Ok(EvalBench::Builtin);
        }
        s.parse::<Bench>().map(EvalBench::Bench).map_err(|_| {
            EvalError::Input(format!(
                "unknown --bench {s:?} (expected builtin, bfcl, api-bank, nestful or bamboogle)"
            ))
        })
    }
    /// The name used in files (`builtin`, `bfcl`, `api-bank`, `nestful`, `bamboogle`).
    pub fn name(self) -> &'static str {
        match self {
            EvalBench::Builtin => "builtin",
            EvalBench::Bench(Bench::Bfcl) => "bfcl",
            EvalBench::Bench(Bench::ApiBank) => "api-bank",
            EvalBench::Bench(Bench::Nestful) => "nestful",
            EvalBench::Bench(Bench::Bamboogle) => "bamboogle",
        }
    }
}

/// Hierarchical (planner then executor) or flat (executor alone, turn by turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMode {
    Hierarchical,
    Flat,
}

impl EvalMode {
    pub fn parse(s: &str) -> Result<EvalMode> {
        match s {
            "hierarchical" => Ok(EvalMode::Hierarchical),
            "flat" => Ok(EvalMode::Flat),
            _ => Err(EvalError::Input(format!(
                "unknown --mode {s:?} (expected hierarchical or flat)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            EvalMode::Hierarchical => "hierarchical",
            EvalMode::Flat => "flat",
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    pub mode: EvalMode,
    /// Seed recorded with each episode (greedy decoding does not draw from it).
    pub seed: u64,
    /// At most this many sub-tasks (flat: turns) per episode.
    pub max_subtasks: usize,
    pub planner_max_tokens: usize,
    pub executor_max_tokens: usize,
    /// Episodes run side by side on this many single-threaded lanes (0 = automatic, see
    /// [`crate::lanes::Lanes::auto_count`]); results and per-episode latencies are those of
    /// one thread per episode.
    pub workers: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        let r = TrainConfig::default().rollout;
        EvalOptions {
            mode: EvalMode::Hierarchical,
            seed: 0,
            max_subtasks: r.max_subtasks,
            planner_max_tokens: r.planner.max_tokens,
            executor_max_tokens: r.executor.max_tokens,
            workers: 0,
        }
    }
}

impl EvalOptions {
    /// The rollout configuration of a greedy episode: one plan, one executor sample per
    /// sub-task, argmax decoding.
    pub fn rollout_config(&self) -> TrainConfig {
        let mut c = TrainConfig {
            seed: self.seed,
            mode: match self.mode {
                EvalMode::Hierarchical => Mode::Cahl,
                EvalMode::Flat => Mode::Flat,
            },
            ..Default::default()
        };
        c.rollout.plans_per_task = 1;
        c.rollout.samples_per_step = 1;
        c.rollout.max_subtasks = self.max_subtasks.max(1);
        c.rollout.planner.greedy = true;
        c.rollout.executor.greedy = true;
        c.rollout.planner.max_tokens = self.planner_max_tokens;
        c.rollout.executor.max_tokens = self.executor_max_tokens;
        c
    }
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

/// Load the tasks of a benchmark.
///
/// * `builtin`: `limit` (default 100) generated test-split tasks from `seed`;
/// * benchmarks: every item of `data` (or of `category`), at most `limit` per category, in
///   file order.
pub fn load_tasks(
    bench: EvalBench,
    data: Option<&Path>,
    limit: Option<usize>,
    seed: u64,
    category: Option<&str>,
) -> Result<Vec<Task>> {
    let need_data = || {
        data.ok_or_else(|| {
            EvalError::Input(format!(
                "--bench {} needs --data DIR (e.g. ../shared/data/{})",
                bench.name(),
                bench.name()
            ))
        })
    };
    let tasks = match bench {
        EvalBench::Builtin => {
            let mut t = generate_tasks(Split::Test, limit.unwrap_or(100), seed)?;
            if let Some(c) = category {
                t.retain(|x| category_of(x) == c);
            }
            return Ok(t);
        }
        EvalBench::Bench(Bench::Bfcl) => {
            let dir = need_data()?;
            let cats = crate::score::bfcl::category_files(dir).map_err(EvalError::Input)?;
            if cats.is_empty() {
                return Err(EvalError::Input(format!(
                    "{}: no BFCL_v4_*.json category files",
                    dir.display()
                )));
            }
            let mut out = Vec::new();
            for (c, _) in cats {
                if category.is_none_or(|x| x == c) {
                    out.extend(benchmarks::bfcl_tasks(dir, &c)?);
                }
            }
            out
        }
        EvalBench::Bench(Bench::ApiBank) => benchmarks::apibank_tasks(need_data()?, category)?,
        EvalBench::Bench(Bench::Nestful) => benchmarks::nestful_tasks(need_data()?, category)?,
        EvalBench::Bench(Bench::Bamboogle) => bamboogle::load_tasks(need_data()?)?,
    };
    if let (Some(c), EvalBench::Bench(Bench::Bfcl)) = (category, bench) {
        if tasks.is_empty() {
            return Err(EvalError::Input(format!("no BFCL category {c:?}")));
        }
    }
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

/// What `[world]` gives a training run.
pub struct TrainingWorld {
    pub train: Vec<Task>,
    /// Held-out tasks for `[eval]` (empty when it is off).
    pub held_out: Vec<Task>,
    pub world: Box<dyn World>,
}

/// Training tasks, held-out tasks and the world of a run's `[world]`.
///
/// * `builtin`: `train_tasks` generated train-split tasks; held out: `[eval].tasks` test-split
///   tasks.
/// * `toolrl`, `api-bank`, `bfcl`, `nestful` (`data` = the benchmark's folder): the items with
///   gold calls, shuffled with `seed`; `[eval].tasks` of them are held out (at most half), the
///   rest (at most `train_tasks`) are trained on. Their tools are not executable: a static world
///   answers each valid call with a placeholder observation and rewards compare against the gold
///   calls. Gold plans are synthesized from the gold calls (one sub-task per call).
pub fn training_world(cfg: &TrainConfig) -> Result<TrainingWorld> {
    let kind = cfg.world.kind.as_str();
    let held_n = if cfg.eval.every > 0 {
        cfg.eval.tasks
    } else {
        0
    };
    if kind == "builtin" {
        return Ok(TrainingWorld {
            train: generate_tasks(Split::Train, cfg.world.train_tasks, cfg.seed)?,
            held_out: generate_tasks(Split::Test, held_n, cfg.seed)?,
            world: Box::new(BuiltinWorld::new()),
        });
    }
    if cfg.world.data.is_empty() {
        return Err(EvalError::Input(format!(
            "[world].kind {kind:?} needs a data folder: --data DIR (e.g. ../shared/data/{kind})"
        )));
    }
    let data = Path::new(&cfg.world.data);
    let all =
        match kind {
            "toolrl" => benchmarks::toolrl_tasks(data)?,
            "api-bank" | "bfcl" | "nestful" => {
                load_tasks(EvalBench::parse(kind)?, Some(data), None, cfg.seed, None)?
            }
            "bamboogle" => return Err(EvalError::Input(
                "world \"bamboogle\" is for eval only (it needs a search corpus index): train on \
                 builtin, toolrl, api-bank, bfcl or nestful"
                    .into(),
            )),
            other => {
                return Err(EvalError::Input(format!(
            "unknown [world].kind {other:?} (expected builtin, toolrl, api-bank, bfcl or nestful)"
        )))
            }
        };
    let mut usable: Vec<Task> = all
        .into_iter()
        .filter(|t| !t.gold_calls.is_empty())
        .collect();
    if usable.is_empty() {
        return Err(EvalError::Input(format!(
            "{}: no items with gold calls to train on",
            data.display()
        )));
    }
    for t in &mut usable {
        if t.gold_plan.is_empty() {
            t.gold_plan = benchmarks::synth_gold_plan(t);
        }
    }
    let (mut train, held_out) = benchmarks::split_held_out(usable, held_n, cfg.seed);
    train.truncate(cfg.world.train_tasks.max(1));
    Ok(TrainingWorld {
        train,
        held_out,
        world: Box::new(StaticWorld::new(kind, Vec::new())),
    })
}

/// The world a benchmark's tasks run in. Bamboogle needs a search index (a directory written
/// by `cahl-tui index build`).
pub fn make_world(bench: EvalBench, index: Option<&Path>) -> Result<Box<dyn World>> {
    Ok(match bench {
        EvalBench::Builtin => Box::new(BuiltinWorld::new()),
        EvalBench::Bench(Bench::Bamboogle) => {
            let dir = index.ok_or_else(|| {
                EvalError::Input(
                    "--bench bamboogle needs --index DIR: a BM25 index of a search corpus \
                     (build one with `cahl-tui index build --corpus FILE --out DIR`)"
                        .into(),
                )
            })?;
            let idx = Bm25Index::open(dir)?;
            Box::new(SearchWorld::new(bamboogle::WORLD_NAME, Arc::new(idx), 3))
        }
        EvalBench::Bench(b) => Box::new(StaticWorld::new(
            EvalBench::Bench(b).name(),
            Vec::<ToolSchema>::new(),
        )),
    })
}

/// What the agent produced for one item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionOut {
    /// Every call the executor emitted over the episode, in order.
    pub calls: Vec<ToolCall>,
    /// The final `<response>` text, if any.
    pub text: Option<String>,
}

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    #[serde(flatten)]
    pub result: ItemResult,
    pub prediction: PredictionOut,
    pub trajectory: TrajectoryRecord,
}

/// One finished episode before scoring.
struct Episode {
    category: String,
    record: TrajectoryRecord,
    prediction: PredictionOut,
    /// Built-in world: the rollout's success criterion.
    success: bool,
    step_calls: Vec<Vec<ToolCall>>,
    efficiency: aggregate::Efficiency,
}

fn to_call(c: &cahl_sessions::records::CallRecord) -> ToolCall {
    ToolCall::new(c.name.clone(), c.arguments.clone())
}

/// Calls, attempts and schema failures of the continued samples of an episode.
fn episode_costs(
    record: &TrajectoryRecord,
    task: &Task,
    tools: &[ToolSchema],
    tokens: usize,
    latency_s: f64,
) -> (Vec<Vec<ToolCall>>, aggregate::Efficiency) {
    let mut step_calls = Vec::new();
    let mut e = aggregate::Efficiency {
        tokens,
        latency_s,
        ..Default::default()
    };
    let mut seen: Vec<ToolCall> = Vec::new();
    for plan in record.plans.iter().take(1) {
        for st in &plan.steps {
            let Some(s) = st.samples.get(st.continued) else {
                continue;
            };
            let out = parse_executor(&s.raw_text);
            let mut calls = Vec::new();
            for entry in &out.entries {
                e.call_attempts += 1;
                match &entry.call {
                    None => e.invalid_calls += 1,
                    Some(c) => {
                        if !validate_call(c, tools).is_empty() {
                            e.invalid_calls += 1;
                        }
                        if seen.contains(c) {
                            e.repeated_calls += 1;
                        }
                        seen.push(c.clone());
                        calls.push(c.clone());
                    }
                }
            }
            e.calls += calls.len();
            step_calls.push(calls);
        }
    }
    if !task.gold_calls.is_empty() {
        e.extra_calls = Some(e.calls.saturating_sub(task.gold_calls.len()));
    }
    (step_calls, e)
}

fn run_episode(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    prefixes: &Prefixes,
) -> Result<Episode> {
    let t0 = Instant::now();
    let r = rollout_task_with(agent, world, task, cfg, seed, 0, prefixes)?;
    let latency_s = t0.elapsed().as_secs_f64();
    let mut record = r.record;
    record.mode = if cfg.mode == Mode::Flat {
        "eval-flat".into()
    } else {
        "eval-hierarchical".into()
    };
    let tools = if task.tools.is_empty() {
        world.tools()
    } else {
        task.tools.clone()
    };
    let (step_calls, efficiency) =
        episode_costs(&record, task, &tools, r.generated_tokens, latency_s);
    let plan = record.plans.first();
    let calls: Vec<ToolCall> = plan
        .map(|p| {
            p.steps
                .iter()
                .filter_map(|s| s.samples.get(s.continued))
                .flat_map(|s| s.calls.iter().map(to_call))
                .collect()
        })
        .unwrap_or_default();
    let prediction = PredictionOut {
        calls,
        text: plan.and_then(|p| p.final_response.clone()),
    };
    Ok(Episode {
        category: category_of(task),
        success: record.success,
        record,
        prediction,
        step_calls,
        efficiency,
    })
}

/// What [`run_eval`] returns.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub items: Vec<ItemRecord>,
    pub summary: EvalSummary,
}

/// Evaluate `tasks` greedily with `agent` (which must hold `planner` and `executor` adapters;
/// see [`ensure_adapters`]). `data` is the benchmark folder (scoring reads the gold answers
/// from it), `index` the search index for Bamboogle. `progress(done, total)` is called after
/// each episode. Episodes that fail to run (e.g. a prompt longer than the model's context)
/// are scored as wrong with the error as the reason.
pub fn run_eval(
    agent: &mut Agent,
    bench: EvalBench,
    data: Option<&Path>,
    index: Option<&Path>,
    tasks: &[Task],
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalRun> {
    ensure_adapters(agent)?;
    let cfg = opts.rollout_config();
    let world = make_world(bench, index)?;
    // The system prompts (tool lists) are computed once for all episodes; tasks that bring
    // their own tools share less and prefill more.
    let prefixes = Prefixes::for_rollouts(agent, &world.tools(), cfg.mode)?;
    let lanes = Lanes::new(match opts.workers {
        0 => Lanes::auto_count(agent.model.num_base_params()),
        n => n,
    })?;
    let agent: &Agent = agent;
    let mut episodes: Vec<std::result::Result<Episode, (String, String)>> = Vec::new();
    // Waves of a few episodes per lane, each in its own copy of the world, so progress is
    // reported as they finish; every episode's seed depends only on its index.
    let wave = lanes.len() * 2;
    let mut done = 0;
    while done < tasks.len() {
        let end = (done + wave).min(tasks.len());
        let jobs: Vec<(usize, &Task, Box<dyn World>)> =
            (done..end).map(|i| (i, &tasks[i], world.fork())).collect();
        let (cfg, prefixes) = (&cfg, &prefixes);
        episodes.extend(lanes.map(jobs, |(i, task, mut w)| {
            let seed = crate::train::mix_seed(&[opts.seed, i as u64]);
            run_episode(agent, w.as_mut(), task, cfg, seed, prefixes)
                .map_err(|e| (category_of(task), format!("episode failed: {e}")))
        }));
        done = end;
        progress(done, tasks.len());
    }
    // Scoring
    let mut verdicts: HashMap<String, (bool, Option<String>, Option<f64>)> = HashMap::new();
    match bench {
        EvalBench::Builtin => {
            for (t, ep) in tasks.iter().zip(&episodes) {
                let v = match ep {
                    Ok(ep) if ep.success => (true, None, None),
                    Ok(_) => (
                        false,
                        Some("gold calls not made in order or final state differs".into()),
                        None,
                    ),
                    Err((_, e)) => (false, Some(e.clone()), None),
                };
                verdicts.insert(t.id.clone(), v);
            }
        }
        EvalBench::Bench(b) => {
            let dir = data.ok_or_else(|| {
                EvalError::Input(format!("--bench {} needs --data DIR", bench.name()))
            })?;
            let preds: Vec<Prediction> = tasks
                .iter()
                .zip(&episodes)
                .filter_map(|(t, ep)| ep.as_ref().ok().map(|ep| (t, ep)))
                .map(|(t, ep)| match b {
                    Bench::Bamboogle => Prediction::from_text(
                        t.id.clone(),
                        format!(
                            "<response>{}</response>",
                            ep.prediction.text.clone().unwrap_or_default()
                        ),
                    ),
                    _ => Prediction::from_calls(t.id.clone(), ep.prediction.calls.clone()),
                })
                .collect();
            let report = score_bench(b, dir, None, &preds)?;
            for v in report.verdicts {
                verdicts.insert(v.id.clone(), (v.correct, v.error, v.partial));
            }
            for (t, ep) in tasks.iter().zip(&episodes) {
                if let Err((_, e)) = ep {
                    let partial = verdicts.get(&t.id).and_then(|v| v.2);
                    verdicts.insert(t.id.clone(), (false, Some(e.clone()), partial));
                }
            }
        }
    }
    let mut items = Vec::with_capacity(tasks.len());
    for (t, ep) in tasks.iter().zip(episodes) {
        let (correct, error, partial) = verdicts.get(&t.id).cloned().ok_or_else(|| {
            EvalError::Input(format!(
                "item {} is not in the benchmark data given to the scorer",
                t.id
            ))
        })?;
        let item = match ep {
            Ok(ep) => {
                let taxonomy = (!correct && opts.mode == EvalMode::Hierarchical)
                    .then(|| label_episode(t, &ep.record, &ep.step_calls));
                ItemRecord {
                    result: ItemResult {
                        id: t.id.clone(),
                        category: ep.category,
                        correct,
                        error,
                        partial,
                        taxonomy,
                        efficiency: ep.efficiency,
                    },
                    prediction: ep.prediction,
                    trajectory: ep.record,
                }
            }
            Err((category, _)) => ItemRecord {
                result: ItemResult {
                    id: t.id.clone(),
                    category,
                    correct: false,
                    error,
                    partial,
                    taxonomy: None,
                    efficiency: aggregate::Efficiency::default(),
                },
                prediction: PredictionOut::default(),
                trajectory: TrajectoryRecord {
                    task: crate::train::rollout::task_info(t),
                    mode: format!("eval-{}", opts.mode.name()),
                    ..Default::default()
                },
            },
        };
        items.push(item);
    }
    let results: Vec<ItemResult> = items.iter().map(|i| i.result.clone()).collect();
    let mut summary = EvalSummary::from_items(bench.name(), opts.mode.name(), &results);
    summary.seed = opts.seed;
    summary.model = agent.model_name.clone();
    summary.created_at = cahl_sessions::UtcDateTime::now().rfc3339();
    Ok(EvalRun { items, summary })
}

/// The taxonomy label of a failed hierarchical episode.
pub fn label_episode(
    task: &Task,
    record: &TrajectoryRecord,
    step_calls: &[Vec<ToolCall>],
) -> Label {
    let (parsed, subtasks) = match record.plans.first() {
        Some(p) => {
            let out = parse_planner(&p.raw_text);
            (
                p.parse_error.is_none() && !p.subtasks.is_empty(),
                out.subtasks,
            )
        }
        None => (false, Vec::new()),
    };
    classify(&EpisodeView {
        plan_parsed: parsed,
        subtasks: &subtasks,
        step_calls,
        gold_plan: &task.gold_plan,
        gold_calls: &task.gold_calls,
        gold_derived: &task.gold_derived,
    })
}

/// Add zero-initialised (PEFT init: B = 0, so identical to the base model) `planner` and
/// `executor` adapters where the model lacks them, so the base model can be evaluated.
pub fn ensure_adapters(agent: &mut Agent) -> Result<()> {
    let names = agent.model.adapter_names();
    let lora = crate::model::LoraConfig::default();
    for (i, n) in ["planner", "executor"].into_iter().enumerate() {
        if !names.iter().any(|x| x == n) {
            agent.model.add_adapter(n, &lora, 1000 + i as u64)?;
        }
    }
    Ok(())
}

/// Write `results.jsonl` and `summary.json` into `dir` (created if needed); each file is
/// written to a temporary name and renamed into place.
pub fn write_outputs(dir: &Path, run: &EvalRun) -> Result<()> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| EvalError::Engine(EngineError::Io { path: p, source: e })
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut lines = String::new();
    for it in &run.items {
        let v = serde_json::to_string(it)
            .map_err(|e| EvalError::Input(format!("serializing {}: {e}", it.result.id)))?;
        lines.push_str(&v);
        lines.push('\n');
    }
    crate::util::atomic_write(&dir.join("results.jsonl"), lines.as_bytes())?;
    let s = serde_json::to_string_pretty(&run.summary)
        .map_err(|e| EvalError::Input(format!("serializing the summary: {e}")))?;
    crate::util::atomic_write(&dir.join("summary.json"), s.as_bytes())?;
    Ok(())
}

/// Read `summary.json` of an eval output directory.
pub fn read_summary(dir: &Path) -> Result<EvalSummary> {
    let p = dir.join("summary.json");
    let bytes = std::fs::read(&p).map_err(|e| EngineError::Io {
        path: p.clone(),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EvalError::Input(format!("{}: {e}", p.display())))
}

/// Read the per-item results of `results.jsonl` (the prediction and trajectory are skipped).
pub fn read_results(dir: &Path) -> Result<Vec<ItemResult>> {
    let p = dir.join("results.jsonl");
    let text = std::fs::read_to_string(&p).map_err(|e| EngineError::Io {
        path: p.clone(),
        source: e,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<ItemResult>(l)
                .map_err(|e| EvalError::Input(format!("{} line {}: {e}", p.display(), i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cahl_sessions::records::{CallRecord, ExecSample, PlanRecord, StepRecord};
    use serde_json::json;

    #[test]
    fn names_parse() {
        assert_eq!(EvalBench::parse("builtin").unwrap(), EvalBench::Builtin);
        assert_eq!(
            EvalBench::parse("api-bank").unwrap(),
            EvalBench::Bench(Bench::ApiBank)
        );
        let e = EvalBench::parse("nope").unwrap_err().to_string();
        assert!(e.contains("builtin, bfcl"), "{e}");
        assert!(EvalMode::parse("flat").is_ok());
        assert!(EvalMode::parse("x").is_err());
        let c = EvalOptions::default().rollout_config();
        assert!(c.rollout.planner.greedy && c.rollout.executor.greedy);
        assert_eq!(
            (c.rollout.plans_per_task, c.rollout.samples_per_step),
            (1, 1)
        );
    }

    #[test]
    fn builtin_tasks_limit_and_categories() {
        let t = load_tasks(EvalBench::Builtin, None, Some(7), 3, None).unwrap();
        assert_eq!(t.len(), 7);
        assert!(t.iter().all(|x| x.split == Some(Split::Test)));
        let c = category_of(&t[0]);
        let only = load_tasks(EvalBench::Builtin, None, Some(7), 3, Some(&c)).unwrap();
        assert!(!only.is_empty() && only.iter().all(|x| category_of(x) == c));
        let e = load_tasks(EvalBench::Bench(Bench::ApiBank), None, None, 0, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --data"), "{e}");
        let e = make_world(EvalBench::Bench(Bench::Bamboogle), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--index"), "{e}");
    }

    fn sample(text: &str, calls: Vec<CallRecord>) -> ExecSample {
        ExecSample {
            raw_text: text.into(),
            calls,
            ..Default::default()
        }
    }

    #[test]
    fn costs_count_invalid_repeated_and_extra_calls() {
        let tools = vec![ToolSchema {
            name: "f".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}),
        }];
        let ok = "<think>t</think><tool_call>\n{\"name\": \"f\", \"parameters\": {\"x\": 1}}\n</tool_call>";
        let twice = "<think>t</think><tool_call>\n{\"name\": \"f\", \"parameters\": {\"x\": 1}}\n{\"name\": \"f\", \"parameters\": {\"x\": \"no\"}}\nnot json\n</tool_call>";
        let rec = TrajectoryRecord {
            plans: vec![PlanRecord {
                steps: vec![
                    StepRecord {
                        samples: vec![sample(ok, vec![])],
                        ..Default::default()
                    },
                    StepRecord {
                        samples: vec![sample(twice, vec![])],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let task = Task {
            id: "t".into(),
            world: "bfcl".into(),
            split: None,
            request: String::new(),
            tools: tools.clone(),
            gold_plan: vec![],
            gold_calls: vec![ToolCall::new("f", json!({"x": 1}))],
            gold_derived: vec![vec![]],
            gold_final_state: None,
            gold_answer: None,
            template: None,
        };
        let (steps, e) = episode_costs(&rec, &task, &tools, 42, 0.5);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].len(), 2);
        assert_eq!(e.call_attempts, 4);
        // one wrong type, one unparsable line
        assert_eq!(e.invalid_calls, 2);
        assert_eq!(e.calls, 3);
        assert_eq!(e.repeated_calls, 1);
        assert_eq!(e.extra_calls, Some(2));
        assert_eq!(e.tokens, 42);
    }
}

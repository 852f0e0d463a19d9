//! Greedy evaluation of an agent (planner then executor, or flat) on the built-in world and on
//! the benchmarks, scored with the benchmarks' own scorers.
//!
//! Every item runs as one greedy episode through the training rollout
//! ([`crate::train::rollout_task`] with one plan, one executor sample per sub-task and argmax
//! decoding), in the world of [`Bench::world`]. Benchmarks whose tools are not executable (BFCL,
//! API-Bank, NESTFUL) run in a [`crate::worlds::static_world::StaticWorld`]: each emitted call
//! is checked against the item's tool schemas and answered with a neutral placeholder
//! observation (`{"status": "ok", "note": "simulated…"}`), or an error naming the schema
//! violation; the calls emitted over the whole episode, in order, are the prediction scored by
//! [`Bench::score`]. Bamboogle runs in a [`crate::worlds::search::SearchWorld`] over a BM25
//! index, and its prediction is the episode's final `<response>` text. Built-in tasks are judged
//! by the rollout's success criterion (gold calls made in order and the gold final state
//! reached).
//!
//! ```no_run
//! use cahl_engine::benchmarks::Bench;
//! use cahl_engine::eval::{run_eval, EvalOptions};
//! fn evaluate(agent: &mut cahl_engine::train::Agent) {
//!     let bench = Bench::Builtin;
//!     let tasks = bench.load_tasks(None, Some(20), 0, None).unwrap();
//!     let run = run_eval(agent, bench, None, None, &tasks, &EvalOptions::default(), &mut |_, _| {}).unwrap();
//!     println!("{}", run.summary.to_text());
//! }
//! ```
pub mod aggregate;
pub mod taxonomy;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use cahl_sessions::records::TrajectoryRecord;
use serde::{Deserialize, Serialize};

pub use aggregate::{EvalSummary, ItemResult};
pub use taxonomy::{classify, EpisodeView, Label, Misalignment};

use crate::benchmarks::{category_of, Bench, BenchError, Prediction, ScoreError};
use crate::error::EngineError;
use crate::lanes::Lanes;
use crate::parse::{
    parse_executor, parse_planner, tool_call, validate_call, CallEntry, ExecutorOutput, ToolCall,
    ToolSchema,
};
use crate::train::{rollout_task_with, Agent, Mode, Prefixes, TrainConfig};
use crate::worlds::{Task, World, WorldError};
use cahl_sessions::fsutil::atomic_write;

/// Errors of evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    World(#[from] WorldError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    Session(#[from] cahl_sessions::SessionError),
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;

/// Hierarchical (planner then executor) or flat (executor alone, turn by turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMode {
    Hierarchical,
    Flat,
    /// `ih-grpo`'s agent: the plan and every call in one completion, run afterwards.
    #[serde(rename = "ih-grpo")]
    IhGrpo,
}

impl EvalMode {
    pub fn parse(s: &str) -> Result<EvalMode> {
        match s {
            "hierarchical" => Ok(EvalMode::Hierarchical),
            "flat" => Ok(EvalMode::Flat),
            "ih-grpo" => Ok(EvalMode::IhGrpo),
            _ => Err(EvalError::Input(format!(
                "unknown --mode {s:?} (expected hierarchical, flat or ih-grpo)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            EvalMode::Hierarchical => "hierarchical",
            EvalMode::Flat => "flat",
            EvalMode::IhGrpo => "ih-grpo",
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
    /// `ih-grpo`: tokens of the one completion (plan and calls).
    pub ih_max_tokens: usize,
    /// Episodes run side by side on this many single-threaded lanes (0 = automatic, see
    /// [`crate::lanes::Lanes::auto_count`]); results and per-episode latencies are those of
    /// one thread per episode.
    pub workers: usize,
    /// Whether the episodes of a wave of `batch_rows` decode together ([`crate::wave`]);
    /// then an episode's latency is that of its wave.
    pub batch: crate::train::BatchMode,
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
            ih_max_tokens: TrainConfig::default().ih_grpo.max_tokens,
            workers: 0,
            batch: crate::train::BatchMode::Auto,
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
                EvalMode::IhGrpo => Mode::IhGrpo,
            },
            ..Default::default()
        };
        c.rollout.plans_per_task = 1;
        c.rollout.samples_per_step = 1;
        // Greedy decoding: one execution (a second would repeat it, and be counted twice).
        c.rollout.executions_per_plan = 1;
        c.rollout.max_subtasks = self.max_subtasks.max(1);
        c.rollout.planner.greedy = true;
        c.rollout.executor.greedy = true;
        c.rollout.planner.max_tokens = self.planner_max_tokens;
        c.rollout.executor.max_tokens = self.executor_max_tokens;
        c.ih_grpo.max_tokens = self.ih_max_tokens;
        c.rollout.batch = self.batch;
        c
    }
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

/// Calls, attempts and schema failures of the continued samples of an episode.
pub(crate) fn episode_costs(
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
            // An ih-grpo step is one call entry, recorded as it ran (references resolved);
            // its raw text is the bare call line.
            let out = if record.mode.ends_with("ih-grpo") {
                ExecutorOutput {
                    entries: vec![CallEntry {
                        block: 0,
                        line: 1,
                        call: s.calls.first().map(tool_call),
                        issues: Vec::new(),
                    }],
                    ..Default::default()
                }
            } else {
                parse_executor(&s.raw_text)
            };
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
    record.mode = match cfg.mode {
        Mode::Flat => "eval-flat".into(),
        Mode::IhGrpo => "eval-ih-grpo".into(),
        _ => "eval-hierarchical".into(),
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
                .flat_map(|s| s.calls.iter().map(tool_call))
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
    bench: Bench,
    data: Option<&Path>,
    index: Option<&Path>,
    tasks: &[Task],
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalRun> {
    ensure_adapters(agent)?;
    let cfg = opts.rollout_config();
    let world = bench.world(index)?;
    // The system prompts (tool lists) are computed once for all episodes; tasks that bring
    // their own tools share less and prefill more.
    let prefixes = Prefixes::for_rollouts(agent, &world.tools(), cfg.mode)?;
    let lanes = Lanes::new(match opts.workers {
        0 => Lanes::auto_count(agent.model.num_base_params()),
        n => n,
    })?;
    let agent: &Agent = agent;
    let mut episodes: Vec<std::result::Result<Episode, (String, String)>> = Vec::new();
    // Waves of a few episodes per lane (or, batched, of `batch_rows` episodes decoded
    // together), each in its own copy of the world, so progress is reported as they finish;
    // every episode's seed depends only on its index.
    let batched = cfg.rollout.batch.applies(agent.model.num_base_params());
    let wave = if batched {
        cfg.rollout.batch_rows
    } else {
        lanes.len() * 2
    };
    let mut done = 0;
    while done < tasks.len() {
        let end = (done + wave).min(tasks.len());
        let jobs: Vec<(usize, &Task, Box<dyn World>)> =
            (done..end).map(|i| (i, &tasks[i], world.fork())).collect();
        let (cfg, prefixes) = (&cfg, &prefixes);
        let job = |(i, task, mut w): (usize, &Task, Box<dyn World>)| {
            let seed = crate::train::mix_seed(&[opts.seed, i as u64]);
            run_episode(agent, w.as_mut(), task, cfg, seed, prefixes)
                .map_err(|e| (category_of(task), format!("episode failed: {e}")))
        };
        episodes.extend(if batched {
            crate::wave::run(agent, cfg.rollout.batch_rows, jobs, job).0
        } else {
            lanes.map(jobs, job)
        });
        done = end;
        progress(done, tasks.len());
    }
    // Scoring
    let mut verdicts: HashMap<String, (bool, Option<String>, Option<f64>)> = HashMap::new();
    match bench {
        Bench::Builtin => {
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
        b => {
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
            let report = b.score(dir, None, &preds)?;
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
                let taxonomy = (!correct && opts.mode != EvalMode::Flat)
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
        // An ih-grpo completion holds its calls after the plan: its parsed plan is recorded.
        Some(p) if record.mode.ends_with("ih-grpo") => (!p.subtasks.is_empty(), p.subtasks.clone()),
        Some(p) => {
            let out = parse_planner(&p.raw_text);
            (!p.subtasks.is_empty(), out.subtasks)
        }
        None => (false, Vec::new()),
    };
    classify(&EpisodeView {
        plan_parsed: parsed,
        subtasks: &subtasks,
        step_calls,
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

/// Make sure `dir` can take the outputs before an evaluation runs (creating it, writing and
/// removing a probe file), so a read-only or impossible place fails at once, not after the run.
pub fn check_writable(dir: &Path) -> Result<()> {
    let fail = |p: &Path, e: std::io::Error| {
        EvalError::Engine(EngineError::Io {
            path: p.to_path_buf(),
            source: e,
        })
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let probe = dir.join(".write-probe");
    std::fs::File::create(&probe).map_err(|e| fail(&probe, e))?;
    std::fs::remove_file(&probe).map_err(|e| fail(&probe, e))
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
    atomic_write(&dir.join("results.jsonl"), lines.as_bytes())?;
    let s = serde_json::to_string_pretty(&run.summary)
        .map_err(|e| EvalError::Input(format!("serializing the summary: {e}")))?;
    atomic_write(&dir.join("summary.json"), s.as_bytes())?;
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

    /// #23: an output place that cannot be written is refused before the evaluation runs.
    #[test]
    fn outputs_that_cannot_be_written_are_refused_up_front() {
        let tmp = tempfile::tempdir().unwrap();
        check_writable(&tmp.path().join("a/b")).unwrap();
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let e = check_writable(&tmp.path().join("file/out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("file"), "{e}");
    }
    use cahl_sessions::records::{CallRecord, ExecSample, PlanRecord, StepRecord};
    use serde_json::json;

    #[test]
    fn names_parse() {
        assert!(EvalMode::parse("flat").is_ok());
        assert!(EvalMode::parse("x").is_err());
        let c = EvalOptions::default().rollout_config();
        assert!(c.rollout.planner.greedy && c.rollout.executor.greedy);
        assert_eq!(
            (c.rollout.plans_per_task, c.rollout.samples_per_step),
            (1, 1)
        );
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

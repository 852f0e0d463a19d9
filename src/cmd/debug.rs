//! `cahl-tui debug`: the plan-editing debugger, with the executor run by the engine.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cahl_engine::benchmarks::{bamboogle, bfcl, world_by_name, Bench};
use cahl_engine::load::embedded;
use cahl_engine::model::{LoraAdapter, Model};
use cahl_engine::parse::{parse_executor, parse_planner, ToolCall, ToolSchema};
use cahl_engine::rewards::executor_step_reward_parsed;
use cahl_engine::sampling::sample_group;
use cahl_engine::train::prompts::{self, HistoryItem};
use cahl_engine::train::{mix_seed, Agent, TrainConfig};
use cahl_engine::worlds::builtin::generate_tasks;
use cahl_engine::worlds::search::Bm25Index;
use cahl_engine::worlds::{Split, Task, World};
use cahl_sessions::{CallRecord, RewardBreakdown, SessionReader};
use cahl_ui::{
    BackendLoader, DebugInitial, DebugStepOutcome, DebugStepRequest, DebugTask, ExecutorBackend,
    PlanRequest,
};
use candle_core::{DType, Device};

#[derive(clap::Args, Debug)]
pub struct DebugArgs {
    /// A session directory or trajectories.jsonl to take a trajectory from (see --index).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Which trajectory of --trace (0-based; default: the last one).
    #[arg(long)]
    pub index: Option<usize>,
    /// A task by id: a built-in world task (e.g. builtin-test-0-12, searched in the first 5,000
    /// tasks of each split), or with --bench a benchmark item (API-Bank level-1-0, BFCL
    /// simple_python_0, NESTFUL non-executable-glaive-data-0, Bamboogle bamboogle-3).
    #[arg(long)]
    pub task_id: Option<String>,
    /// Benchmark of --task-id: bfcl, api-bank, nestful or bamboogle (needs --data).
    #[arg(long, requires_all = ["task_id", "data"])]
    pub bench: Option<String>,
    /// Benchmark data folder (e.g. ../shared/data/api-bank, or ../shared/data itself).
    #[arg(long, requires = "bench")]
    pub data: Option<PathBuf>,
    /// BM25 index (`cahl-tui index build`) behind Bamboogle's search tool; without it a search
    /// returns a labelled placeholder instead of passages.
    #[arg(long, requires = "bench")]
    pub search_index: Option<PathBuf>,
    /// A typed request (no gold trajectory). With --task-id it replaces that task's request and
    /// keeps its tools and gold calls.
    #[arg(long)]
    pub task: Option<String>,
    /// Reopen a saved debugger session (JSON written by `S` in the debugger).
    #[arg(long)]
    pub open: Option<PathBuf>,
    /// Model for running the planner/executor (HF folder, .gguf, or "embedded" for the default
    /// model). Without it, --trace uses its session's model when that is found from here;
    /// otherwise the debugger edits plans and compares branches but cannot run them.
    #[arg(long)]
    pub model: Option<String>,
    /// Checkpoint with planner/ and executor/ PEFT adapters (default: the latest of --trace's session).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Seed of the first branch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where `S` saves debugger sessions (default: <session>/debug with --trace, the folder of
    /// --open, else ./debug).
    #[arg(long)]
    pub debug_dir: Option<PathBuf>,
}

/// Runs the executor (and planner) of a model for the debugger, in the task's world: the
/// built-in world, a BM25 search world for Bamboogle (with an index), or for BFCL, API-Bank and
/// NESTFUL (whose tools are not executable) a [`StaticWorld`] that checks each call against its
/// schema and answers with a labelled placeholder. Each step starts from a fresh world, replays
/// the earlier calls and samples with a seed derived from the request, so re-running a branch
/// reproduces it. Steps are scored against the gold call of the same index with the training
/// rewards.
pub struct EngineBackend {
    agent: Agent,
    cfg: TrainConfig,
    /// Adapters loaded from the checkpoint (`planner`, `executor`).
    loaded: Vec<&'static str>,
    /// Where the adapters came from, for [`ExecutorBackend::describe`].
    adapters: String,
    search: Option<Arc<Bm25Index>>,
}

fn to_call(c: &CallRecord) -> ToolCall {
    ToolCall::new(c.name.clone(), c.arguments.clone())
}

fn record(c: &ToolCall) -> CallRecord {
    CallRecord {
        name: c.name.clone(),
        arguments: serde_json::Value::Object(c.arguments.clone()),
    }
}

/// The engine task behind a debugger task. Tool schemas that do not parse are an error.
fn task_of(t: &DebugTask) -> Result<Task, String> {
    let tools = t
        .tools
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ToolSchema>(v.clone())
                .map_err(|e| format!("tool schema {} of task {}: {e}", i + 1, t.id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Task {
        id: t.id.clone(),
        world: if t.world.is_empty() {
            "builtin".into()
        } else {
            t.world.clone()
        },
        split: None,
        request: t.text.clone(),
        tools,
        gold_plan: t.gold_plan.clone(),
        gold_calls: t.gold_calls.iter().map(to_call).collect(),
        gold_derived: vec![],
        gold_final_state: None,
        gold_answer: t.gold_answer.clone(),
        template: None,
    })
}

/// The debugger task of an engine task (world, tools, gold plan, calls and answer).
pub fn debug_task_of(t: &Task) -> DebugTask {
    DebugTask {
        id: t.id.clone(),
        text: t.request.clone(),
        gold_plan: t.gold_plan.clone(),
        gold_calls: t.gold_calls.iter().map(record).collect(),
        world: t.world.clone(),
        tools: t
            .tools
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .collect(),
        gold_answer: t.gold_answer.clone(),
    }
}

/// Note put on placeholder results of Bamboogle searches when there is no index.
const NO_INDEX_NOTE: &str =
    "simulated: no search index was given (--search-index DIR), so the search did not run";

impl EngineBackend {
    fn adapter(&self, name: &'static str) -> Option<&'static str> {
        self.loaded.contains(&name).then_some(name)
    }

    /// A fresh world for `task`, reset to it.
    fn world_for(&self, task: &Task) -> Result<Box<dyn World>, String> {
        let mut w = world_by_name(&task.world, self.search.clone().map(|idx| (idx, 5)))
            .map_err(|e| format!("{e} of task {}", task.id))?;
        w.reset(task).map_err(|e| e.to_string())?;
        Ok(w)
    }

    fn execute(&self, world: &mut dyn World, call: &ToolCall) -> cahl_engine::worlds::Observation {
        let mut obs = world.execute(call);
        if world.name() == bamboogle::WORLD_NAME && self.search.is_none() && obs.ok {
            obs.content["note"] = NO_INDEX_NOTE.into();
        }
        obs
    }
}

impl ExecutorBackend for EngineBackend {
    fn describe(&self) -> String {
        let name = Path::new(&self.agent.model_name)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| self.agent.model_name.clone());
        format!("{name} · {}", self.adapters)
    }

    fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, String> {
        let task = task_of(&req.task)?;
        let tools = self.world_for(&task)?.tools();
        let ids = self
            .agent
            .prompt_ids(&prompts::planner_system(&tools), &task.request)
            .map_err(|e| e.to_string())?;
        let mut p = self.cfg.rollout.planner.clone();
        p.seed = mix_seed(&[req.seed, 1]);
        let out = sample_group(
            &self.agent.model,
            self.adapter("planner"),
            &ids,
            1,
            0,
            &p,
            &self.agent.tok,
        )
        .map_err(|e| e.to_string())?;
        let plan = parse_planner(&out[0].text);
        if plan.subtasks.is_empty() {
            let why = plan
                .issues
                .first()
                .map(|i| i.message())
                .unwrap_or_else(|| "empty plan".into());
            return Err(format!("the planner's output has no sub-tasks ({why})"));
        }
        Ok(plan.subtasks)
    }

    fn run_step(&mut self, req: DebugStepRequest) -> Result<DebugStepOutcome, String> {
        let task = task_of(&req.task)?;
        let mut world = self.world_for(&task)?;
        let mut history = Vec::new();
        for prior in &req.previous {
            for c in &prior.calls {
                let call = to_call(c);
                let observation = self.execute(world.as_mut(), &call);
                history.push(HistoryItem { call, observation });
            }
        }
        let tools = world.tools();
        let user = prompts::executor_user(&task.request, &req.subtasks, req.index, &history);
        let system = prompts::executor_system(&tools);
        let ids = self
            .agent
            .prompt_ids(&system, &user)
            .map_err(|e| e.to_string())?;
        let mut p = self.cfg.rollout.executor.clone();
        p.seed = mix_seed(&[req.seed, 2, req.index as u64]);
        let out = sample_group(
            &self.agent.model,
            self.adapter("executor"),
            &ids,
            1,
            0,
            &p,
            &self.agent.tok,
        )
        .map_err(|e| e.to_string())?;
        let text = out[0].text.clone();
        let parsed = parse_executor(&text);
        let gold: Vec<ToolCall> = task
            .gold_calls
            .get(req.index)
            .cloned()
            .into_iter()
            .collect();
        let rb = executor_step_reward_parsed(&parsed, &tools, &gold, &self.cfg.rewards);
        let calls = parsed.calls();
        let mut results: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| self.execute(world.as_mut(), c).content)
            .collect();
        let tool_result = match results.len() {
            0 => None,
            1 => results.pop(),
            _ => Some(serde_json::Value::Array(results)),
        };
        let mut reasons = rb.reasons.clone();
        if let (Some(gold), Some(resp)) = (&task.gold_answer, &parsed.response) {
            let answer = bamboogle::extract_answer(resp);
            let verdict = if bamboogle::exact_match(&answer, gold) {
                "exact match"
            } else if bamboogle::contains_match(&answer, gold) {
                "contains the gold answer"
            } else {
                "does not match"
            };
            reasons.push(format!(
                "answer {answer:?} vs gold {gold:?}: {verdict} (not part of the step reward)"
            ));
        }
        Ok(DebugStepOutcome {
            prompt: format!("[system]\n{system}\n[user]\n{user}"),
            raw_output: text,
            calls: calls.iter().map(record).collect(),
            parse_error: parsed.issues.first().map(|i| i.message()),
            tool_result,
            reward: RewardBreakdown {
                total: rb.total,
                components: rb
                    .components
                    .iter()
                    .map(|c| (c.name.clone(), c.value))
                    .collect(),
                reasons,
            },
        })
    }
}

fn session_dir_of(trace: &Path) -> Option<PathBuf> {
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

/// Load a model (`""`/`"embedded"` = the embedded default model) on the CPU as an [`Agent`],
/// with those of the `planner` and `executor` PEFT adapters of `checkpoint` that exist (none is
/// an error). Returns the adapters loaded.
fn load_agent_in(
    model: &str,
    checkpoint: Option<&Path>,
    dtype: DType,
) -> Result<(Agent, Vec<&'static str>)> {
    let lm = embedded::load_spec(model)?;
    let tok = lm.require_tokenizer()?.clone();
    let template = lm.chat_template_or_fallback()?;
    let mut m = Model::new(&lm.config, &lm.weights, dtype, &Device::Cpu)?;
    drop(lm);
    let mut loaded = Vec::new();
    if let Some(ck) = checkpoint {
        for name in ["planner", "executor"] {
            let dir = ck.join(name);
            if !dir.exists() {
                continue;
            }
            let a = LoraAdapter::load_peft(name, &dir, m.config(), dtype, &Device::Cpu)
                .with_context(|| format!("loading the {name} adapter from {}", ck.display()))?;
            m.insert_adapter(a);
            loaded.push(name);
        }
        if loaded.is_empty() {
            bail!(
                "{} holds neither a planner/ nor an executor/ adapter",
                ck.display()
            );
        }
    }
    let agent = Agent {
        model: m,
        tok,
        template,
        model_name: if embedded::is_embedded(model) {
            embedded::EMBEDDED.to_string()
        } else {
            model.to_string()
        },
    };
    Ok((agent, loaded))
}

/// Load a model (`""`/`"embedded"` = the embedded default model) as an [`Agent`], with the
/// `planner` and `executor` PEFT adapters of `checkpoint` when given. Returns whether adapters
/// were loaded.
pub fn load_agent(model: &str, checkpoint: Option<&Path>) -> Result<(Agent, bool)> {
    let (agent, loaded) = load_agent_in(model, checkpoint, DType::F32)?;
    Ok((agent, !loaded.is_empty()))
}

/// Build the engine backend (on the CPU) from a model spec (path, or ""/"embedded" for the
/// embedded default model) and optionally a checkpoint's adapters; sampling and reward settings
/// come from `cfg` (and the dtype from `[model].dtype` when the run is on the CPU, else f32).
pub fn engine_backend(
    model: &str,
    checkpoint: Option<&Path>,
    cfg: TrainConfig,
) -> Result<EngineBackend> {
    let dtype = if cfg.model.device == "cpu" {
        cahl_engine::device::parse_dtype(&cfg.model.dtype).unwrap_or(DType::F32)
    } else {
        DType::F32
    };
    let (agent, loaded) = load_agent_in(model, checkpoint, dtype)?;
    let adapters = match checkpoint {
        Some(ck) => {
            let name = ck
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_else(|| ck.display().to_string());
            format!("{} adapters of {name}", loaded.join("+"))
        }
        None => "base model (no adapters)".to_string(),
    };
    Ok(EngineBackend {
        agent,
        cfg,
        loaded,
        adapters,
        search: None,
    })
}

/// Loads the model a training run trains, as a second copy for the debugger, when the debugger
/// first needs it (on the UI's backend worker thread, so neither the trainer nor the UI waits).
///
/// Memory: the copy holds the base weights again in the run's dtype (f32 on CPU: 4 bytes per
/// parameter, e.g. ~0.54 GB for SmolLM2-135M, ~2 GB for Qwen2.5-0.5B) plus the adapters; it is
/// only loaded on demand and replaced (not added to) on reload.
pub struct SessionModelLoader {
    /// Model spec (path, or "" / "embedded").
    pub model: String,
    /// The run's configuration (sampling, rewards, dtype).
    pub cfg: TrainConfig,
    /// Base parameter count when known (training: the trainer's copy), for the memory
    /// estimate of the second copy.
    pub params: Option<u64>,
}

impl SessionModelLoader {
    fn bytes(&self) -> Option<u64> {
        let per = match self.cfg.model.dtype.as_str() {
            "f16" | "bf16" => 2,
            _ => 4,
        };
        self.params.map(|p| p * per)
    }

    /// The model of a recorded session (its `config.toml`, else `run.json`), when it can be
    /// loaded from here: for the debugger of `replay`, loaded on demand.
    pub fn of_session(trace: &Path) -> Option<Self> {
        let cfg = session_config(trace);
        let spec = if cfg.model.path.is_empty() {
            SessionReader::open(trace)
                .ok()
                .and_then(|r| r.run_info().map(|i| i.model.clone()))
                .unwrap_or_default()
        } else {
            cfg.model.path.clone()
        };
        let loadable = if embedded::is_embedded(&spec) {
            embedded::available()
        } else {
            Path::new(&spec).exists()
        };
        loadable.then_some(SessionModelLoader {
            model: spec,
            cfg,
            params: None,
        })
    }
}

impl BackendLoader for SessionModelLoader {
    fn describe(&self) -> String {
        let name = Path::new(&self.model)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| embedded::EMBEDDED.to_string());
        match self.bytes() {
            Some(b) => format!("{name} (second copy, ~{:.0} MB)", b as f64 / 1e6),
            None => format!("{name} (the session's model)"),
        }
    }

    fn load(&mut self, checkpoint: Option<&Path>) -> Result<Box<dyn ExecutorBackend>, String> {
        let mut b = engine_backend(&self.model, checkpoint, self.cfg.clone())
            .map_err(|e| format!("{e:#}"))?;
        if checkpoint.is_none() {
            b.adapters =
                "base model + fresh adapters (no checkpoint yet; fresh LoRA = the base model)"
                    .into();
        }
        Ok(Box::new(b))
    }
}

fn find_task(id: &str) -> Result<Task> {
    for split in [Split::Train, Split::Dev, Split::Test] {
        let tasks = generate_tasks(split, 5000, 0)?;
        if let Some(t) = tasks.into_iter().find(|t| t.id == id) {
            return Ok(t);
        }
    }
    bail!("no built-in task with id {id:?} among the first 5,000 of each split (seed 0)")
}

/// The folder of `bench` under `data`: `data` itself, or `data/<bench folder>` when `data` is
/// the parent of the benchmark folders (like ../shared/data).
fn bench_dir(bench: Bench, data: &Path) -> PathBuf {
    let nested = data.join(bench.name());
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
    tasks.into_iter().find(|t| t.id == id).with_context(|| {
        format!(
            "no {} item with id {id:?} in {} ({})",
            bench.name(),
            dir.display(),
            if matches!(bench, Bench::Bfcl) {
                "BFCL ids look like simple_python_0, multiple_3; multi-turn categories are not supported".to_string()
            } else {
                format!("{n} items read")
            }
        )
    })
}

pub fn run(args: DebugArgs) -> Result<()> {
    let with_model = args.model.is_some();
    let initial = if let Some(p) = &args.open {
        DebugInitial::from_saved_file(p).map_err(|e| anyhow::anyhow!(e))?
    } else if let Some(trace) = &args.trace {
        let reader = SessionReader::open(trace)?;
        let n = reader.entries().len();
        if n == 0 {
            bail!("{} holds no readable trajectory", trace.display());
        }
        let i = args.index.unwrap_or(n - 1);
        if i >= n {
            bail!(
                "--index {i} is out of range: {} holds {n} trajectories",
                trace.display()
            );
        }
        let rec = reader.trajectory(i).map_err(|p| anyhow::anyhow!("{p}"))?;
        DebugInitial::Trajectory {
            record: Box::new(rec),
            plan_index: None,
        }
    } else if let Some(id) = &args.task_id {
        let t = match (&args.bench, &args.data) {
            (Some(b), Some(d)) => {
                let bench = Bench::scored(b)?;
                find_bench_task(bench, d, id)?
            }
            _ => find_task(id)?,
        };
        let mut task = debug_task_of(&t);
        if let Some(text) = &args.task {
            task.text = text.clone();
        }
        // With a model the original branch is the planner's plan (asked on start); without one,
        // it starts as a copy of the gold plan to edit.
        let plan = if with_model {
            vec![]
        } else {
            t.gold_plan.clone()
        };
        DebugInitial::Task {
            task,
            plan,
            seed: args.seed,
        }
    } else if let Some(text) = &args.task {
        let task = DebugTask {
            id: "typed".into(),
            text: text.clone(),
            ..Default::default()
        };
        DebugInitial::Task {
            task,
            plan: vec![],
            seed: args.seed,
        }
    } else {
        bail!("say what to debug: --trace SESSION [--index N], --task-id ID [--bench B --data DIR], --task TEXT or --open FILE");
    };
    let checkpoint = match (&args.checkpoint, &args.trace) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(t)) => latest_checkpoint_of(t),
        _ => None,
    };
    // Without --model, a trace's session model is used when it can be found from here.
    let model = args.model.clone().or_else(|| {
        let l = SessionModelLoader::of_session(args.trace.as_deref()?)?;
        eprintln!("using the session's model {} (--model overrides)", l.model);
        Some(l.model)
    });
    let backend: Option<Box<dyn ExecutorBackend>> = match &model {
        Some(m) => {
            eprintln!("loading {m}…");
            let cfg = args
                .trace
                .as_deref()
                .map(session_config)
                .unwrap_or_default();
            let mut b = engine_backend(m, checkpoint.as_deref(), cfg)?;
            if let Some(dir) = &args.search_index {
                let idx = Bm25Index::open(dir)
                    .with_context(|| format!("opening the search index {}", dir.display()))?;
                b.search = Some(Arc::new(idx));
            }
            Some(Box::new(b))
        }
        None => None,
    };
    let debug_dir = args
        .debug_dir
        .clone()
        .or_else(|| {
            args.trace
                .as_deref()
                .and_then(session_dir_of)
                .map(|d| d.join("debug"))
        })
        .or_else(|| {
            args.open
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("debug"));
    let opts = cahl_ui::UiOptions {
        debug_dir: Some(debug_dir),
        ..cahl_ui::UiOptions::default()
    };
    cahl_ui::run_debugger(initial, backend, opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cahl_engine::model::{LoraConfig, ModelConfig};

    /// Writes a tiny random HF model folder (word-level tokenizer, ChatML fallback template)
    /// whose vocabulary covers the executor prompt's markup and a few tool names.
    fn write_tiny_model(dir: &Path) {
        let words = "Task Plan Done so far nothing Current sub-task <think> </think> <tool_call> \
                     </tool_call> <response> </response> { } [ ] \" : , . - ( ) / name parameters \
                     ModifyRegistration appointment_id new_appointment_date search query Dr Lee \
                     34567890 2023 03 26 answer the a to of";
        let mut vocab = serde_json::Map::new();
        for (i, w) in ["[UNK]", "<|im_start|>", "<|im_end|>"]
            .iter()
            .chain(words.split_whitespace().collect::<Vec<_>>().iter())
            .enumerate()
        {
            vocab.insert(w.to_string(), serde_json::json!(i));
        }
        let n = vocab.len();
        let added = |id: usize, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [added(1, "<|im_start|>"), added(2, "<|im_end|>")],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).expect("tokenizer");
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"eos_token": "<|im_end|>"}"#,
        )
        .expect("tokenizer config");
        let config = format!(
            r#"{{"model_type": "qwen2", "vocab_size": {n}, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "tie_word_embeddings": true}}"#
        );
        std::fs::write(dir.join("config.json"), &config).expect("config");
        let cfg = ModelConfig::from_json_str(&config, "tiny").expect("config parses");
        let w = Model::random_weights(&cfg, 7).expect("weights");
        candle_core::safetensors::save(&w, dir.join("model.safetensors")).expect("weights");
    }

    fn quick_config() -> TrainConfig {
        let mut c = TrainConfig::default();
        c.rollout.planner.max_tokens = 12;
        c.rollout.executor.max_tokens = 12;
        c
    }

    fn shared_data() -> Option<PathBuf> {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
        if d.is_dir() {
            Some(d)
        } else {
            println!("SKIP: {} is absent (benchmark data)", d.display());
            None
        }
    }

    #[test]
    fn benchmark_items_load_by_id_and_run_on_a_tiny_model() {
        let Some(data) = shared_data() else { return };
        // Each benchmark by its scorer's ids (the data folder itself or its parent).
        let t = find_bench_task(Bench::ApiBank, &data, "level-1-0").expect("api-bank");
        assert_eq!(t.world, "api-bank");
        assert!(t.tools.iter().any(|s| s.name == "ModifyRegistration"));
        assert_eq!(t.gold_calls[0].name, "ModifyRegistration");
        let b = find_bench_task(Bench::Bfcl, &data.join("bfcl"), "simple_python_0").expect("bfcl");
        assert_eq!((b.world.as_str(), b.gold_calls.len()), ("bfcl", 1));
        assert!(!b.tools.is_empty());
        let m = find_bench_task(Bench::Bfcl, &data, "multiple_3").expect("bfcl multiple");
        assert_eq!(m.template.as_deref(), Some("multiple"));
        let n = find_bench_task(Bench::Nestful, &data, "non-executable-glaive-data-0")
            .expect("nestful");
        assert!(!n.gold_calls.is_empty() && !n.tools.is_empty());
        let q = find_bench_task(Bench::Bamboogle, &data, "bamboogle-0").expect("bamboogle");
        assert!(q.gold_answer.is_some());
        let err = find_bench_task(Bench::ApiBank, &data, "level-9-9").unwrap_err();
        assert!(
            err.to_string()
                .contains("no api-bank item with id \"level-9-9\""),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path());
        let spec = dir.path().display().to_string();
        let mut backend = engine_backend(&spec, None, quick_config()).expect("tiny model loads");
        assert!(backend.describe().contains("base model (no adapters)"));
        let task = debug_task_of(&t);
        let plan = vec![
            "Modify appointment 34567890".to_string(),
            "Confirm".to_string(),
        ];
        let req = |index: usize, previous: Vec<cahl_ui::PriorStep>| DebugStepRequest {
            task: task.clone(),
            subtasks: plan.clone(),
            index,
            previous,
            seed: 11,
        };
        let first = backend.run_step(req(0, vec![])).expect("step runs");
        assert!(
            first.prompt.contains("ModifyRegistration("),
            "{}",
            first.prompt
        );
        for k in ["format", "syntax", "semantics"] {
            assert!(
                first.reward.components.contains_key(k),
                "{k} in {:?}",
                first.reward
            );
        }
        assert!(first.reward.total.is_finite());
        assert_eq!(
            backend.run_step(req(0, vec![])).expect("again"),
            first,
            "seeded"
        );
        // The gold call as an earlier step: the world answers with the labelled placeholder.
        let prior = cahl_ui::PriorStep {
            subtask: plan[0].clone(),
            calls: task.gold_calls.clone(),
            observation: None,
        };
        let second = backend.run_step(req(1, vec![prior])).expect("second step");
        assert!(
            second
                .prompt
                .contains("simulated: this benchmark's tools are not executable"),
            "{}",
            second.prompt
        );
        // Bamboogle without an index: searches are answered with a placeholder that says so.
        let qt = debug_task_of(&q);
        let search = cahl_ui::PriorStep {
            subtask: "search".into(),
            calls: vec![CallRecord {
                name: "search".into(),
                arguments: serde_json::json!({"query": "Titan IIIE"}),
            }],
            observation: None,
        };
        let out = backend
            .run_step(DebugStepRequest {
                task: qt,
                subtasks: vec!["Search".into(), "Answer".into()],
                index: 1,
                previous: vec![search],
                seed: 0,
            })
            .expect("bamboogle step");
        assert!(out.prompt.contains(NO_INDEX_NOTE), "{}", out.prompt);
    }

    #[test]
    fn session_loader_loads_fresh_or_checkpoint_adapters() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_model(dir.path());
        let spec = dir.path().display().to_string();
        let mut loader = SessionModelLoader {
            model: spec.clone(),
            cfg: quick_config(),
            params: Some(1_000_000),
        };
        assert!(
            loader.describe().contains("second copy, ~4 MB"),
            "{}",
            loader.describe()
        );
        let fresh = loader.load(None).expect("fresh");
        assert!(
            fresh.describe().contains("fresh adapters"),
            "{}",
            fresh.describe()
        );
        // A checkpoint with both adapters.
        let ck = dir.path().join("checkpoints").join("step-1");
        let lm = embedded::load_spec(&spec).expect("load");
        for name in ["planner", "executor"] {
            LoraAdapter::new_random(
                name,
                &LoraConfig::default(),
                &lm.config,
                DType::F32,
                &Device::Cpu,
                1,
            )
            .expect("adapter")
            .save_peft(&ck.join(name), &spec)
            .expect("save");
        }
        let mut b = loader.load(Some(&ck)).expect("checkpoint loads");
        assert!(
            b.describe()
                .ends_with("planner+executor adapters of step-1"),
            "{}",
            b.describe()
        );
        let plan = b.plan(PlanRequest {
            task: DebugTask {
                text: "list my alarms".into(),
                ..DebugTask::default()
            },
            seed: 3,
        });
        // A random model rarely writes a plan: either way the answer is a result, not a panic.
        if let Err(e) = plan {
            assert!(e.contains("no sub-tasks"), "{e}");
        }
        let empty = dir.path().join("checkpoints").join("step-2");
        std::fs::create_dir_all(&empty).expect("mkdir");
        let err = loader
            .load(Some(&empty))
            .err()
            .expect("no adapters is an error");
        assert!(
            err.contains("neither a planner/ nor an executor/ adapter"),
            "{err}"
        );
    }

    #[test]
    fn debug_tasks_round_trip_world_tools_and_gold() {
        let t = Task {
            id: "level-1-0".into(),
            world: "api-bank".into(),
            split: None,
            request: "modify my appointment".into(),
            tools: vec![ToolSchema {
                name: "ModifyRegistration".into(),
                description: "Modifies an appointment.".into(),
                parameters: serde_json::json!({"type": "object", "properties": {"appointment_id": {"type": "string"}}, "required": []}),
            }],
            gold_plan: vec![],
            gold_calls: vec![ToolCall::new(
                "ModifyRegistration",
                serde_json::json!({"appointment_id": "34567890"}),
            )],
            gold_derived: vec![vec![]],
            gold_final_state: None,
            gold_answer: None,
            template: Some("level-1".into()),
        };
        let d = debug_task_of(&t);
        assert_eq!(d.world, "api-bank");
        assert_eq!(d.tools.len(), 1);
        assert_eq!(d.gold_calls[0].name, "ModifyRegistration");
        let back = task_of(&d).expect("tools parse");
        assert_eq!(back.tools, t.tools);
        assert_eq!(back.gold_calls, t.gold_calls);
        assert_eq!(back.world, "api-bank");
        let typed = task_of(&DebugTask::default()).expect("typed");
        assert_eq!(typed.world, "builtin");
        let bad = DebugTask {
            tools: vec![serde_json::json!(42)],
            ..DebugTask::default()
        };
        assert!(task_of(&bad).unwrap_err().contains("tool schema 1"));
    }
}

//! `cahl-tui debug`: the plan-editing debugger, with the executor run by the engine.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cahl_engine::model::{LoraAdapter, Model};
use cahl_engine::parse::{parse_executor, parse_planner, ToolCall};
use cahl_engine::rewards::executor_step_reward_parsed;
use cahl_engine::sampling::sample_group;
use cahl_engine::train::prompts::{self, HistoryItem};
use cahl_engine::train::{mix_seed, Agent, TrainConfig};
use cahl_engine::worlds::builtin::{generate_tasks, BuiltinWorld};
use cahl_engine::worlds::{Split, Task, World};
use cahl_sessions::{CallRecord, RewardBreakdown, SessionReader};
use cahl_ui::{
    DebugInitial, DebugStepOutcome, DebugStepRequest, DebugTask, ExecutorBackend, PlanRequest,
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
    /// A built-in world task by id (e.g. builtin-test-0-12), searched in the first 5,000 tasks of each split.
    #[arg(long)]
    pub task_id: Option<String>,
    /// A typed request (no gold trajectory).
    #[arg(long)]
    pub task: Option<String>,
    /// Reopen a saved debugger session (JSON written by `S` in the debugger).
    #[arg(long)]
    pub open: Option<PathBuf>,
    /// Model for running the planner/executor (HF folder or .gguf). Without it the debugger edits
    /// plans and compares branches but cannot run the executor.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Checkpoint with planner/ and executor/ PEFT adapters (default: the latest of --trace's session).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Seed of the first branch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the executor (and planner) of a model for the debugger, on the built-in world. Each step
/// starts from a fresh world, replays the earlier calls and samples with a seed derived from the
/// request, so re-running a branch reproduces it.
pub struct EngineBackend {
    agent: Agent,
    cfg: TrainConfig,
    world: BuiltinWorld,
    adapters: bool,
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

fn task_of(t: &DebugTask) -> Task {
    Task {
        id: t.id.clone(),
        world: "builtin".into(),
        split: None,
        request: t.text.clone(),
        tools: vec![],
        gold_plan: t.gold_plan.clone(),
        gold_calls: t.gold_calls.iter().map(to_call).collect(),
        gold_derived: vec![],
        gold_final_state: None,
        gold_answer: None,
        template: None,
    }
}

impl EngineBackend {
    fn adapter(&self, name: &'static str) -> Option<&'static str> {
        self.adapters.then_some(name)
    }
}

impl ExecutorBackend for EngineBackend {
    fn describe(&self) -> String {
        format!(
            "{}{}",
            self.agent.model_name,
            if self.adapters {
                " + checkpoint adapters"
            } else {
                " (base model, no adapters)"
            }
        )
    }

    fn plan(&mut self, req: PlanRequest) -> Result<Vec<String>, String> {
        let tools = self.world.tools();
        let ids = self
            .agent
            .prompt_ids(&prompts::planner_system(&tools), &req.task.text)
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
        let task = task_of(&req.task);
        self.world.reset(&task).map_err(|e| e.to_string())?;
        let mut history = Vec::new();
        for prior in &req.previous {
            for c in &prior.calls {
                let call = to_call(c);
                let observation = self.world.execute(&call);
                history.push(HistoryItem { call, observation });
            }
        }
        let tools = self.world.tools();
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
            .map(|c| self.world.execute(c).content)
            .collect();
        let tool_result = match results.len() {
            0 => None,
            1 => results.pop(),
            _ => Some(serde_json::Value::Array(results)),
        };
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
                reasons: rb.reasons.clone(),
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

/// Load a model (`""`/`"embedded"` = the embedded default model) as an [`Agent`], with the
/// `planner` and `executor` PEFT adapters of `checkpoint` when given. Returns whether adapters
/// were loaded.
pub fn load_agent(model: &str, checkpoint: Option<&Path>) -> Result<(Agent, bool)> {
    let lm = cahl_engine::load::embedded::load_spec(model)?;
    let tok = lm.require_tokenizer()?.clone();
    let template = lm.chat_template_or_fallback()?;
    let mut m = Model::new(&lm.config, &lm.weights, DType::F32, &Device::Cpu)?;
    drop(lm);
    let mut adapters = false;
    if let Some(ck) = checkpoint {
        for name in ["planner", "executor"] {
            let a =
                LoraAdapter::load_peft(name, &ck.join(name), m.config(), DType::F32, &Device::Cpu)
                    .with_context(|| format!("loading the {name} adapter from {}", ck.display()))?;
            m.insert_adapter(a);
        }
        adapters = true;
    }
    let model_name = if cahl_engine::load::embedded::is_embedded(model) {
        cahl_engine::load::embedded::EMBEDDED.to_string()
    } else {
        model.to_string()
    };
    let agent = Agent {
        model: m,
        tok,
        template,
        model_name,
    };
    Ok((agent, adapters))
}

/// Build the engine backend from a model and (optionally) a checkpoint's adapters.
pub fn engine_backend(model: &Path, checkpoint: Option<&Path>) -> Result<EngineBackend> {
    let (agent, adapters) = load_agent(&model.display().to_string(), checkpoint)?;
    Ok(EngineBackend {
        agent,
        cfg: TrainConfig::default(),
        world: BuiltinWorld::new(),
        adapters,
    })
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

pub fn run(args: DebugArgs) -> Result<()> {
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
        let t = find_task(id)?;
        let task = DebugTask {
            id: t.id.clone(),
            text: t.request.clone(),
            gold_plan: t.gold_plan.clone(),
            gold_calls: t.gold_calls.iter().map(record).collect(),
        };
        DebugInitial::Task {
            task,
            plan: t.gold_plan.clone(),
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
        bail!("say what to debug: --trace SESSION [--index N], --task-id ID, --task TEXT or --open FILE");
    };
    let checkpoint = match (&args.checkpoint, &args.trace) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(t)) => latest_checkpoint_of(t),
        _ => None,
    };
    let backend: Option<Box<dyn ExecutorBackend>> = match &args.model {
        Some(m) => Some(Box::new(engine_backend(m, checkpoint.as_deref())?)),
        None => None,
    };
    let mut opts = cahl_ui::UiOptions::default();
    if let Some(d) = args.trace.as_deref().and_then(session_dir_of) {
        opts.debug_dir = Some(d.join("debug"));
    }
    cahl_ui::run_debugger(initial, backend, opts)?;
    Ok(())
}

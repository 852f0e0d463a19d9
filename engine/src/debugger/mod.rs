//! The debugger's backend: runs a plan's sub-tasks with the executor (and asks the planner for
//! plans) on a model loaded on demand, in the task's world, scored with the training rewards.
//! It implements the protocol the UI speaks ([`cahl_sessions::debug`]); the binary hands it
//! to the UI.
//!
//! - [`EngineBackend`]: one loaded model with a checkpoint's adapters ([`engine_backend`]).
//! - [`SessionModelLoader`]: loads the model of a run on the UI's worker when first needed.
//! - [`lookup`]: tasks by id (built-in and benchmark items) and a session's config/checkpoint.
use std::path::Path;
use std::sync::Arc;

use cahl_sessions::debug::{
    BackendError, DebugStepOutcome, DebugStepRequest, DebugTask, ExecutorBackend, JudgeRequest,
    MeasureRequest, PlanMeasurement, PlanRequest, PlanRun,
};
use cahl_sessions::RewardBreakdown;

use crate::agent::Agent;
use crate::backend::openai::OpenAiBackend;
use crate::backend::{BackendKind, BackendSection};
use crate::benchmarks::{bamboogle, world_by_name};
use crate::error::Result;
use crate::parse::{call_record, parse_executor, parse_planner, tool_call, ToolCall, ToolSchema};
use crate::rewards::align::{mark_made, step_gold};
use crate::rewards::{align_plan, executor_step_reward_parsed};
use crate::sampling::{sample_group, SamplingParams};
use crate::train::config::Continue;
use crate::train::config::ModelSection;
use crate::train::prompts::{self, HistoryItem};
use crate::train::rollout::Policy;
use crate::train::rollout::{execute_plan, run_calls, tools_of, Prefixes};
use crate::train::{mix_seed, TrainConfig};
use crate::worlds::builtin::BuiltinWorld;
use crate::worlds::search::Bm25Index;
use crate::worlds::{Task, World};

pub mod cases;
mod loader;
pub mod lookup;
pub mod measure;
#[cfg(test)]
mod tests;

pub use loader::SessionModelLoader;

fn backend_err(e: impl std::fmt::Display) -> BackendError {
    BackendError(e.to_string())
}

/// Runs the executor (and planner) of a model for the debugger, in the task's world: the
/// built-in world, a BM25 search world for Bamboogle (with an index), or for BFCL, API-Bank and
/// NESTFUL (whose tools are not executable) a [`StaticWorld`] that checks each call against its
/// schema and answers with a labelled placeholder. Each step starts from a fresh world, replays
/// the earlier calls and samples with a seed derived from the request, so re-running a branch
/// reproduces it. Steps are scored with the training rewards against their content-aligned gold
/// (the gold calls the sub-task describes, less those the earlier steps made).
pub struct EngineBackend {
    runner: Runner,
    cfg: TrainConfig,
    /// Adapters loaded from the checkpoint (`planner`, `executor`).
    loaded: Vec<&'static str>,
    /// Where the adapters came from, for [`ExecutorBackend::describe`].
    adapters: String,
    /// The BM25 index behind Bamboogle's search tool, if any ([`EngineBackend::set_search_index`]).
    search: Option<Arc<Bm25Index>>,
    /// The last built-in task looked up by id for [`EngineBackend::full_task`], and what was
    /// found (a lookup regenerates tasks: ~0.1 s for a generated id, several for an id that is
    /// not one; once per task rather than once per step).
    found: Option<(String, Option<Task>)>,
}

/// What runs the planner and the executor.
enum Runner {
    /// A model in this process.
    Local(Box<Agent>),
    /// A served model (`debug --endpoint`): chat completions of the same prompts, rendered by
    /// the server's chat template, under a model name per role.
    Served {
        client: Box<OpenAiBackend>,
        planner: String,
        executor: String,
    },
}

/// The engine task behind a debugger task. Tool schemas that do not parse are an error.
pub fn task_of(t: &DebugTask) -> std::result::Result<Task, BackendError> {
    let tools = t
        .tools
        .iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value::<ToolSchema>(v.clone())
                .map_err(|e| BackendError(format!("tool schema {} of task {}: {e}", i + 1, t.id)))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
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
        gold_calls: t.gold_calls.iter().map(tool_call).collect(),
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
        gold_calls: t.gold_calls.iter().map(call_record).collect(),
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

    /// One completion of `role` for a system + user conversation, as text.
    fn sample_text(
        &self,
        role: Policy,
        system: &str,
        user: &str,
        p: &SamplingParams,
    ) -> std::result::Result<String, BackendError> {
        match &self.runner {
            Runner::Local(agent) => {
                let ids = agent.prompt_ids(system, user).map_err(backend_err)?;
                let out = sample_group(
                    &agent.model,
                    self.adapter(role.adapter()),
                    &ids,
                    1,
                    0,
                    p,
                    &agent.tok,
                )
                .map_err(backend_err)?;
                Ok(out.into_iter().next().map(|c| c.text).unwrap_or_default())
            }
            Runner::Served {
                client,
                planner,
                executor,
            } => {
                let model = match role {
                    Policy::Planner => planner,
                    Policy::Executor => executor,
                };
                client
                    .chat_text(model, system, user, p)
                    .map_err(backend_err)
            }
        }
    }

    /// Run `r` of a plan on a served model: what [`execute_plan`] does for a local one (one
    /// executor sample per sub-task with the rollout's seeds, continued as sampled, each step
    /// scored against its content-aligned gold), judged as training judges an execution.
    fn served_run(
        &self,
        task: &Task,
        world: &mut dyn World,
        req: &MeasureRequest,
        r: usize,
    ) -> std::result::Result<PlanRun, BackendError> {
        world.reset(task).map_err(backend_err)?;
        let tools = tools_of(world, task);
        let system = prompts::executor_system(&tools);
        let align = align_plan(&req.subtasks, &task.gold_calls, &task.gold_derived);
        let mut made = vec![false; task.gold_calls.len()];
        let (mut history, mut step_calls, mut rewards) = (Vec::new(), Vec::new(), Vec::new());
        let mut answered = false;
        let mut p = self.cfg.rollout.executor.clone();
        p.greedy = req.greedy;
        for k in 0..req.subtasks.len().min(self.cfg.rollout.max_subtasks) {
            let user = prompts::executor_user(&task.request, &req.subtasks, k, &history);
            p.seed = mix_seed(&[req.seed, 2, r as u64, k as u64]);
            let text = self.sample_text(Policy::Executor, &system, &user, &p)?;
            let parsed = parse_executor(&text);
            let mut gold = step_gold(&align, &task.gold_calls, &made, k);
            gold.truncate(world.calls_per_step().unwrap_or(usize::MAX));
            rewards
                .push(executor_step_reward_parsed(&parsed, &tools, &gold, &self.cfg.rewards).total);
            let (ran, _) = self.run_step_calls(world, parsed.calls(), &mut history);
            mark_made(&ran, &task.gold_calls, &mut made);
            step_calls.push(ran);
            answered |= parsed.response.is_some();
        }
        let final_state = world.final_state();
        Ok(measure::judge_run(
            &measure::Judged {
                task,
                subtasks: &req.subtasks,
                step_calls: &step_calls,
                final_state: final_state.as_ref(),
                step_rewards: &rewards,
                answered,
            },
            &self.cfg,
        ))
    }

    /// A fresh world for `task`, reset to it. A built-in task in a run of the
    /// capability-boundary testbed (`[world].kind = "builtin-one-call"`) gets the testbed's
    /// executor limit, as in training.
    fn world_for(&self, task: &Task) -> std::result::Result<Box<dyn World>, BackendError> {
        let mut w: Box<dyn World> = if task.world == crate::worlds::builtin::WORLD_NAME
            && self.cfg.world.kind == "builtin-one-call"
        {
            Box::new(BuiltinWorld::one_call_per_step())
        } else {
            world_by_name(&task.world, self.search.clone().map(|idx| (idx, 5)))
                .map_err(|e| BackendError(format!("{e} of task {}", task.id)))?
        };
        w.reset(task).map_err(backend_err)?;
        Ok(w)
    }

    /// The engine task of a debugger task, completed where it can be: a built-in task found
    /// by its id (with the same request) brings its gold final state and derived arguments,
    /// which the debugger protocol does not carry, so success is judged as in training.
    fn full_task(&mut self, t: &DebugTask) -> std::result::Result<Task, BackendError> {
        let mut task = task_of(t)?;
        if task.world == crate::worlds::builtin::WORLD_NAME && !task.id.is_empty() {
            if self.found.as_ref().is_none_or(|(id, _)| *id != task.id) {
                self.found = Some((task.id.clone(), lookup::find_task(&task.id).ok()));
            }
            if let Some((_, Some(found))) = self.found.clone() {
                if found.request == task.request {
                    task.gold_final_state = found.gold_final_state;
                    if found.gold_calls == task.gold_calls {
                        task.gold_derived = found.gold_derived;
                    }
                }
            }
        }
        Ok(task)
    }

    /// Runs one step's calls as training does (a world that carries out at most N calls per
    /// step refuses the rest), appending them to `history`; returns the calls run and every
    /// observation. Bamboogle searches without an index get a note on their placeholder.
    fn run_step_calls(
        &self,
        world: &mut dyn World,
        calls: Vec<ToolCall>,
        history: &mut Vec<HistoryItem>,
    ) -> (Vec<ToolCall>, Vec<serde_json::Value>) {
        let start = history.len();
        let (ran, mut observations) = run_calls(world, calls, history);
        if world.name() == bamboogle::WORLD_NAME && self.search.is_none() {
            for (h, o) in history[start..].iter_mut().zip(observations.iter_mut()) {
                if h.observation.ok {
                    h.observation.content["note"] = NO_INDEX_NOTE.into();
                    o["note"] = NO_INDEX_NOTE.into();
                }
            }
        }
        (ran, observations)
    }
}

impl ExecutorBackend for EngineBackend {
    fn describe(&self) -> String {
        match &self.runner {
            Runner::Local(agent) => {
                let name = Path::new(&agent.model_name)
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_else(|| agent.model_name.clone());
                format!("{name} · {}", self.adapters)
            }
            Runner::Served {
                client,
                planner,
                executor,
            } => format!(
                "served {planner} / {executor} at {}",
                client.endpoints().join(", ")
            ),
        }
    }

    fn plan(&mut self, req: PlanRequest) -> std::result::Result<Vec<String>, BackendError> {
        let task = task_of(&req.task)?;
        let tools = tools_of(self.world_for(&task)?.as_ref(), &task);
        let mut p = self.cfg.rollout.planner.clone();
        p.seed = mix_seed(&[req.seed, 1]);
        let text = self.sample_text(
            Policy::Planner,
            &prompts::planner_system(&tools),
            &task.request,
            &p,
        )?;
        let plan = parse_planner(&text);
        if plan.subtasks.is_empty() {
            let why = plan
                .issues
                .first()
                .map(|i| i.message())
                .unwrap_or_else(|| "empty plan".into());
            return Err(BackendError(format!(
                "the planner's output has no sub-tasks ({why})"
            )));
        }
        Ok(plan.subtasks)
    }

    fn run_step(
        &mut self,
        req: DebugStepRequest,
    ) -> std::result::Result<DebugStepOutcome, BackendError> {
        let task = self.full_task(&req.task)?;
        let mut world = self.world_for(&task)?;
        let mut history = Vec::new();
        let mut prior_calls = Vec::new();
        for prior in &req.previous {
            let calls: Vec<ToolCall> = prior.calls.iter().map(tool_call).collect();
            let (ran, _) = self.run_step_calls(world.as_mut(), calls, &mut history);
            prior_calls.push(ran);
        }
        let tools = tools_of(world.as_ref(), &task);
        let user = prompts::executor_user(&task.request, &req.subtasks, req.index, &history);
        let system = prompts::executor_system(&tools);
        let mut p = self.cfg.rollout.executor.clone();
        // The rollout's seed of this sub-task in a plan's first execution (`execute_plan`): a
        // branch with a recorded trajectory's seed reproduces its recorded steps.
        p.seed = mix_seed(&[req.seed, 2, 0, req.index as u64]);
        let text = self.sample_text(Policy::Executor, &system, &user, &p)?;
        let parsed = parse_executor(&text);
        // The step's gold by content: the gold calls this sub-task describes, less those the
        // earlier steps made (as in training).
        let align = align_plan(&req.subtasks, &task.gold_calls, &task.gold_derived);
        let mut made = vec![false; task.gold_calls.len()];
        for calls in &prior_calls {
            mark_made(calls, &task.gold_calls, &mut made);
        }
        let mut gold = step_gold(&align, &task.gold_calls, &made, req.index);
        // No reward for calls the world would refuse (as in training).
        gold.truncate(world.calls_per_step().unwrap_or(usize::MAX));
        let rb = executor_step_reward_parsed(&parsed, &tools, &gold, &self.cfg.rewards);
        let calls = parsed.calls();
        let (_, mut results) = self.run_step_calls(world.as_mut(), calls.clone(), &mut history);
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
            calls: calls.iter().map(call_record).collect(),
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
                weights: rb
                    .components
                    .iter()
                    .map(|c| (c.name.clone(), c.weight))
                    .collect(),
            },
        })
    }

    fn measure(
        &mut self,
        req: MeasureRequest,
    ) -> std::result::Result<PlanMeasurement, BackendError> {
        if req.subtasks.is_empty() {
            return Err(BackendError::from("the plan is empty: nothing to measure"));
        }
        let task = self.full_task(&req.task)?;
        let mut world = self.world_for(&task)?;
        let tools = tools_of(world.as_ref(), &task);
        let n = if req.greedy { 1 } else { req.samples.max(1) };
        let agent = match &mut self.runner {
            Runner::Local(agent) => agent,
            Runner::Served { .. } => {
                let runs = (0..n)
                    .map(|r| self.served_run(&task, world.as_mut(), &req, r))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                return Ok(PlanMeasurement {
                    greedy: req.greedy,
                    seed: req.seed,
                    model: self.describe(),
                    runs,
                });
            }
        };
        // A role without a loaded adapter runs as the base model (as `run_step` does): a
        // fresh PEFT adapter (B = 0) is exactly that.
        crate::eval::ensure_adapters(agent).map_err(backend_err)?;
        // One executor sample per sub-task, continued as sampled: run r is what a plan's
        // execution r meets in training (run 0 with the branch's seed is the branch's own run).
        let mut cfg = self.cfg.clone();
        cfg.rollout.samples_per_step = 1;
        cfg.rollout.continue_with = Continue::Sampled;
        cfg.rollout.executor.greedy = req.greedy;
        let mut runs = Vec::with_capacity(n);
        for r in 0..n {
            let ex = execute_plan(
                agent,
                world.as_mut(),
                &task,
                &tools,
                &req.subtasks,
                &cfg,
                req.seed,
                (0, r),
                &Prefixes::default(),
            )
            .map_err(backend_err)?;
            runs.push(measure::judge_run(
                &measure::Judged {
                    task: &task,
                    subtasks: &req.subtasks,
                    step_calls: &ex.step_calls,
                    final_state: ex.final_state.as_ref(),
                    step_rewards: &ex.rewards,
                    answered: ex.final_response.is_some(),
                },
                &self.cfg,
            ));
        }
        Ok(PlanMeasurement {
            greedy: req.greedy,
            seed: req.seed,
            model: self.describe(),
            runs,
        })
    }

    fn judge(&mut self, req: JudgeRequest) -> std::result::Result<PlanRun, BackendError> {
        let task = self.full_task(&req.task)?;
        let mut world = self.world_for(&task)?;
        let mut history = Vec::new();
        let mut step_calls = Vec::new();
        for calls in &req.step_calls {
            let calls: Vec<ToolCall> = calls.iter().map(tool_call).collect();
            let (ran, _) = self.run_step_calls(world.as_mut(), calls, &mut history);
            step_calls.push(ran);
        }
        let final_state = world.final_state();
        Ok(measure::judge_run(
            &measure::Judged {
                task: &task,
                subtasks: &req.subtasks,
                step_calls: &step_calls,
                final_state: final_state.as_ref(),
                step_rewards: &[],
                answered: req.answered,
            },
            &self.cfg,
        ))
    }
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
        cfg.model.dtype.clone()
    } else {
        "f32".to_string()
    };
    let mut agent = Agent::load(&ModelSection {
        dtype,
        ..ModelSection::cpu_f32(model)
    })?;
    let (loaded, adapters) = match checkpoint {
        Some(ck) => {
            let loaded = agent.load_adapters(ck, false)?;
            let name = ck
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_else(|| ck.display().to_string());
            let desc = format!("{} adapters of {name}", loaded.join("+"));
            (loaded, desc)
        }
        None => (Vec::new(), "base model (no adapters)".to_string()),
    };
    Ok(EngineBackend {
        runner: Runner::Local(Box::new(agent)),
        cfg,
        loaded,
        adapters,
        search: None,
        found: None,
    })
}

/// Build the debugger's backend on a served model (`debug --endpoint`): the planner and the
/// executor are the server's models `planner` and `executor` (adapter names or the base
/// model; `None`: the base). Names the server does not list are refused, naming those it does.
pub fn endpoint_backend(
    url: &str,
    planner: Option<&str>,
    executor: Option<&str>,
    cfg: TrainConfig,
) -> Result<EngineBackend> {
    let section = BackendSection {
        kind: BackendKind::OpenAi,
        endpoints: vec![url.to_string()],
        ..cfg.backend.clone()
    };
    let client = OpenAiBackend::connect(&section, Path::new(""))?;
    let served = client.model_ids().to_vec();
    let pick = |name: Option<&str>, flag: &str| -> Result<String> {
        let name = name.unwrap_or(client.base_model()).to_string();
        if served.contains(&name) {
            Ok(name)
        } else {
            Err(crate::EngineError::Config(format!(
                "{flag} {name:?} is not served by {url} (it serves: {})",
                served.join(", ")
            )))
        }
    };
    let planner = pick(planner, "--planner-model")?;
    let executor = pick(executor, "--executor-model")?;
    Ok(EngineBackend {
        runner: Runner::Served {
            client: Box::new(client),
            planner,
            executor,
        },
        cfg,
        loaded: Vec::new(),
        adapters: String::new(),
        search: None,
        found: None,
    })
}

impl EngineBackend {
    /// The local model (tests of the local runner).
    #[cfg(test)]
    pub(crate) fn local_agent(&mut self) -> &mut Agent {
        match &mut self.runner {
            Runner::Local(a) => a,
            Runner::Served { .. } => panic!("a served runner has no local agent"),
        }
    }

    /// Answer Bamboogle's search tool from `index` instead of a placeholder.
    pub fn set_search_index(&mut self, index: Arc<Bm25Index>) {
        self.search = Some(index);
    }

    /// Say where the adapters came from in [`ExecutorBackend::describe`].
    pub fn set_adapters_label(&mut self, label: impl Into<String>) {
        self.adapters = label.into();
    }
}

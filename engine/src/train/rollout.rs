//! Hierarchical rollout: planner -> plan -> per sub-task an executor group -> tool execution ->
//! observation -> next sub-task; and the flat baseline. Produces GRPO groups plus the trace record.
use cahl_sessions::records::{
    ExecSample, PlanRecord, RewardBreakdown as RecBreakdown, StepRecord, TaskInfo, TrajectoryRecord,
};
use serde_json::Value;

use crate::agent::Agent;
use crate::backend::SampleRequest;
use crate::error::Result;
use crate::eval::taxonomy::{classify, EpisodeView, Misalignment, Side};
use crate::grpo::SeqAdvantage;
use crate::model::Prefix;
use crate::parse::{call_record, parse_executor, parse_planner, ToolCall, ToolSchema};
use crate::rewards::align::{gold_turns, mark_made, step_gold, turn_gold};
use crate::rewards::{
    align_plan, executor_step_reward_parsed, planner_reward_parsed, toolrl_reward, PlanEpisode,
    RewardBreakdown, ToolRlGold,
};
use crate::sampling::{Completion, SamplingParams};
use crate::train::config::{Continue, Mode, TrainConfig};
use crate::train::prompts::{self, HistoryItem};
use crate::worlds::{Observation, Task, World};

/// Which adapter a group trains (as an index: planner 0, executor 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Planner = 0,
    Executor = 1,
}

impl Policy {
    pub fn adapter(self) -> &'static str {
        match self {
            Policy::Planner => "planner",
            Policy::Executor => "executor",
        }
    }
}

/// Shared system-prompt prefixes of one batch of rollouts (see [`crate::model::prefix`]),
/// computed under the adapters' current weights. Empty: every prompt prefills in full.
#[derive(Debug, Default)]
pub struct Prefixes {
    pub planner: Option<Prefix>,
    pub executor: Option<Prefix>,
}

/// Token ids of the system-prompt part that every prompt of `policy` shares for `tools`: the
/// prompt rendered with an empty user message (the longest common prefix with a real prompt
/// decides what is reused).
pub fn shared_prompt_ids(
    agent: &Agent,
    tools: &[ToolSchema],
    policy: Policy,
    mode: Mode,
) -> Result<Vec<u32>> {
    let system = match (policy, mode) {
        (Policy::Planner, _) => prompts::planner_system(tools),
        (Policy::Executor, Mode::Flat | Mode::StepTool) => prompts::flat_system(tools),
        (Policy::Executor, Mode::IhGrpo) => prompts::ih_system(tools),
        (Policy::Executor, _) => prompts::executor_system(tools),
    };
    agent.prompt_ids(&system, "")
}

impl Prefixes {
    /// The planner's and the executor's shared prefixes for the world's tools, under their
    /// adapters (flat mode: the executor's only).
    pub fn for_rollouts(agent: &Agent, tools: &[ToolSchema], mode: Mode) -> Result<Prefixes> {
        if agent.remote.is_some() {
            // The servers sample (and cache prompt prefixes on their own).
            return Ok(Prefixes::default());
        }
        let build = |policy: Policy| -> Result<Option<Prefix>> {
            let ids = shared_prompt_ids(agent, tools, policy, mode)?;
            if ids.len() < crate::model::prefix::MIN_PREFIX {
                return Ok(None);
            }
            Ok(Some(Prefix::build(
                &agent.model,
                Some(policy.adapter()),
                &ids,
                false,
            )?))
        };
        Ok(Prefixes {
            planner: if mode.single_policy() {
                None
            } else {
                build(Policy::Planner)?
            },
            executor: build(Policy::Executor)?,
        })
    }
}

/// One GRPO group: a shared prompt and its sampled completions with rewards.
#[derive(Debug, Clone)]
pub struct Group {
    pub policy: Policy,
    pub prompt: Vec<u32>,
    pub completions: Vec<Completion>,
    pub rewards: Vec<f64>,
    /// Where the group's advantages go in the trace: (plan index, step index) for executor
    /// groups, plan indices for the planner group.
    pub at: (usize, Option<usize>),
    /// Advantages the rollout computed itself (StepTool's per-step returns, IH-GRPO's
    /// segments), already written into the trace; `None`: the trainer normalises `rewards`
    /// within the group.
    pub advantages: Option<Vec<SeqAdvantage>>,
}

/// Everything one task's rollout produced.
#[derive(Debug, Clone)]
pub struct TaskRollout {
    pub record: TrajectoryRecord,
    pub groups: Vec<Group>,
    pub generated_tokens: usize,
    /// Mean reward components keyed `"<policy>/<name>"` with their counts, for metrics.
    pub components: Vec<(String, f64)>,
    /// The plans' executions by outcome side (none in `flat` mode).
    pub sides: SideCounts,
}

/// A 64-bit mix of several integers (splitmix64 steps), for per-call seeds.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for &p in parts {
        x ^= p
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(x << 6)
            .wrapping_add(x >> 2);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x = z ^ (z >> 31);
    }
    x
}

pub(crate) fn to_record_breakdown(b: &RewardBreakdown) -> RecBreakdown {
    RecBreakdown {
        total: b.total,
        components: b
            .components
            .iter()
            .map(|c| (c.name.clone(), c.value))
            .collect(),
        reasons: b.reasons.clone(),
        weights: b
            .components
            .iter()
            .map(|c| (c.name.clone(), c.weight))
            .collect(),
    }
}

/// Gold calls form an ordered subsequence of the executed calls (extra calls are allowed).
pub fn gold_is_subsequence(executed: &[ToolCall], gold: &[ToolCall]) -> bool {
    let mut it = executed.iter();
    gold.iter().all(|g| it.any(|e| e == g))
}

/// Episode success: the gold calls were made (in order) and, where the world has state, the
/// final state equals the gold state. A ToolRL item whose gold is a final answer only is solved
/// when no tool was called and the episode ended with an answer (`answered`; ToolRL scores such
/// items on their format, which the rewards check; the answer's wording is not compared).
pub fn episode_success(
    task: &Task,
    executed: &[ToolCall],
    final_state: Option<&Value>,
    answered: bool,
) -> bool {
    if task.gold_calls.is_empty()
        && task.gold_answer.is_some()
        && task.world == crate::benchmarks::toolrl::WORLD_NAME
    {
        return executed.is_empty() && answered;
    }
    let calls_ok = gold_is_subsequence(executed, &task.gold_calls);
    let state_ok = match (&task.gold_final_state, final_state) {
        (Some(g), Some(f)) => g == f,
        (Some(_), None) => false,
        _ => true,
    };
    calls_ok && state_ok
}

pub(crate) fn tools_of(world: &dyn World, task: &Task) -> Vec<ToolSchema> {
    if task.tools.is_empty() {
        world.tools()
    } else {
        task.tools.clone()
    }
}

pub(super) fn params_with_seed(p: &SamplingParams, seed: u64) -> SamplingParams {
    SamplingParams { seed, ..p.clone() }
}

fn pick_continued(rewards: &[f64], how: Continue) -> usize {
    match how {
        Continue::Sampled => 0,
        Continue::OracleBest => {
            let mut best = 0;
            for (i, r) in rewards.iter().enumerate() {
                if *r > rewards[best] {
                    best = i;
                }
            }
            best
        }
    }
}

struct StepOutcome {
    record: StepRecord,
    group: Group,
    executed: Vec<ToolCall>,
    response: Option<String>,
    tokens: usize,
}

/// Run one executor group for a prompt, score each sample, execute the continued one.
#[allow(clippy::too_many_arguments)]
fn executor_step(
    agent: &Agent,
    world: &mut dyn World,
    tools: &[ToolSchema],
    system: &str,
    user: String,
    subtask: (usize, String),
    gold: &[ToolCall],
    cfg: &TrainConfig,
    seed: u64,
    flat: bool,
    history: &mut Vec<HistoryItem>,
    prefix: Option<&Prefix>,
) -> Result<StepOutcome> {
    let prompt = agent.prompt_ids(system, &user)?;
    let params = params_with_seed(&cfg.rollout.executor, seed);
    let g = cfg.rollout.samples_per_step;
    let comps = agent.sample(&SampleRequest {
        adapter: Some("executor"),
        prefix,
        prompt: &prompt,
        g,
        first_stream: 0,
        params: &params,
    })?;
    let mut rewards = Vec::with_capacity(g);
    let mut samples = Vec::with_capacity(g);
    let mut parsed = Vec::with_capacity(g);
    for c in &comps {
        let out = parse_executor(&c.text);
        let rb = if flat {
            toolrl_reward(
                &c.text,
                &ToolRlGold::from_calls(gold.to_vec()),
                &cfg.rewards,
            )
        } else {
            executor_step_reward_parsed(&out, tools, gold, &cfg.rewards)
        };
        rewards.push(rb.total);
        let calls = out.calls();
        samples.push(ExecSample {
            raw_text: c.text.clone(),
            calls: calls.iter().map(call_record).collect(),
            parse_error: out.issues.first().map(|i| i.message()),
            observation: None,
            reward: to_record_breakdown(&rb),
            advantage: None,
            step_return: None,
            tokens: c.tokens.len(),
        });
        parsed.push((out, rb));
    }
    let k = pick_continued(&rewards, cfg.rollout.continue_with);
    let (out, _) = &parsed[k];
    let (calls, mut observations) = run_calls(world, out.calls(), history);
    samples[k].observation = match observations.len() {
        0 => None,
        1 => observations.pop(),
        _ => Some(Value::Array(observations)),
    };
    let tokens = comps.iter().map(|c| c.tokens.len()).sum();
    Ok(StepOutcome {
        record: StepRecord {
            subtask_index: subtask.0,
            subtask: subtask.1,
            prompt: Some(user),
            samples,
            continued: k,
            execution: 0,
        },
        group: Group {
            policy: Policy::Executor,
            prompt,
            completions: comps,
            rewards,
            at: (0, Some(subtask.0)),
            advantages: None,
        },
        executed: calls,
        response: out.response.clone(),
        tokens,
    })
}

/// Run a step's calls in `world`, in order, appending each with its observation to `history`.
/// A world whose agent carries out at most N calls per step ([`World::calls_per_step`])
/// refuses the rest: they get an error observation and are not run. Returns the calls run and
/// every observation.
pub(crate) fn run_calls(
    world: &mut dyn World,
    mut calls: Vec<ToolCall>,
    history: &mut Vec<HistoryItem>,
) -> (Vec<ToolCall>, Vec<Value>) {
    let limit = world.calls_per_step().unwrap_or(usize::MAX);
    let refused = calls.split_off(limit.min(calls.len()));
    let mut observations = Vec::new();
    for call in &calls {
        let obs = world.execute(call);
        observations.push(obs.content.clone());
        history.push(HistoryItem {
            call: call.clone(),
            observation: obs,
        });
    }
    for call in refused {
        let obs = Observation::error(format!(
            "not run: this executor carries out {limit} call(s) per step"
        ));
        observations.push(obs.content.clone());
        history.push(HistoryItem {
            call,
            observation: obs,
        });
    }
    (calls, observations)
}

/// Book-keeping shared by the hierarchical and flat loops: fold one executor step into the
/// episode's accumulators. Returns whether the continued sample made any call.
#[allow(clippy::too_many_arguments)]
fn absorb_step(
    so: StepOutcome,
    plan_index: usize,
    tokens: &mut usize,
    rewards: &mut Vec<f64>,
    components: &mut Vec<(String, f64)>,
    executed: &mut Vec<ToolCall>,
    final_response: &mut Option<String>,
    groups: &mut Vec<Group>,
    steps: &mut Vec<StepRecord>,
) -> bool {
    *tokens += so.tokens;
    for s in &so.record.samples {
        rewards.push(s.reward.total);
        for (n, v) in &s.reward.components {
            components.push((format!("executor/{n}"), *v));
        }
    }
    let made_calls = !so.executed.is_empty();
    executed.extend(so.executed);
    if so.response.is_some() {
        *final_response = so.response;
    }
    let mut grp = so.group;
    grp.at = (plan_index, Some(steps.len()));
    groups.push(grp);
    steps.push(so.record);
    made_calls
}

/// The misalignment label and side of a failed plan (see [`crate::eval::taxonomy`]).
pub(super) fn failure_of(
    task: &Task,
    parsed: bool,
    subtasks: &[String],
    step_calls: &[Vec<ToolCall>],
) -> (Option<String>, Option<String>) {
    let l = classify(&EpisodeView {
        plan_parsed: parsed,
        subtasks,
        step_calls,
        gold_calls: &task.gold_calls,
        gold_derived: &task.gold_derived,
    });
    (
        Some(l.label.name().to_string()),
        l.label.side().map(|s| s.name().to_string()),
    )
}

fn component_list(prefix: &str, b: &RewardBreakdown, out: &mut Vec<(String, f64)>) {
    for c in &b.components {
        out.push((format!("{prefix}/{}", c.name), c.value));
    }
}

/// Hierarchical rollout of one task (all modes but `flat`).
pub fn rollout_task(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    step: u64,
) -> Result<TaskRollout> {
    rollout_task_with(agent, world, task, cfg, seed, step, &Prefixes::default())
}

/// One execution of a plan: the executor through its sub-tasks, each step's gold aligned by
/// content (see [`step_gold`]).
#[derive(Debug)]
pub struct Execution {
    /// The step records (with their executor groups' samples).
    pub steps: Vec<StepRecord>,
    /// The calls each step made (its continued sample's).
    pub step_calls: Vec<Vec<ToolCall>>,
    /// All calls made, in order.
    pub executed: Vec<ToolCall>,
    pub final_state: Option<Value>,
    pub final_response: Option<String>,
    /// The executor's GRPO groups, one per step.
    pub groups: Vec<Group>,
    /// Every executor sample's reward.
    pub rewards: Vec<f64>,
    pub components: Vec<(String, f64)>,
    /// Tokens generated.
    pub tokens: usize,
}

/// Run the executor through `subtasks` once (execution `r` of plan `pi`). The executor's seeds
/// depend on the task seed, `r` and the step, not on the plan: every plan of a task meets the
/// same executor randomness.
#[allow(clippy::too_many_arguments)]
pub fn execute_plan(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    tools: &[ToolSchema],
    subtasks: &[String],
    cfg: &TrainConfig,
    seed: u64,
    (pi, r): (usize, usize),
    prefixes: &Prefixes,
) -> Result<Execution> {
    let esys = prompts::executor_system(tools);
    world.reset(task)?;
    let mut history = Vec::new();
    let mut ex = Execution {
        steps: Vec::new(),
        step_calls: Vec::new(),
        executed: Vec::new(),
        final_state: None,
        final_response: None,
        groups: Vec::new(),
        rewards: Vec::new(),
        components: Vec::new(),
        tokens: 0,
    };
    let align = align_plan(subtasks, &task.gold_calls, &task.gold_derived);
    let mut made = vec![false; task.gold_calls.len()];
    for (k, st) in subtasks.iter().take(cfg.rollout.max_subtasks).enumerate() {
        let user = prompts::executor_user(&task.request, subtasks, k, &history);
        let mut gold = step_gold(&align, &task.gold_calls, &made, k);
        // No reward for calls the world would refuse (see `World::calls_per_step`).
        gold.truncate(world.calls_per_step().unwrap_or(usize::MAX));
        let mut so = executor_step(
            agent,
            world,
            tools,
            &esys,
            user,
            (k, st.clone()),
            &gold,
            cfg,
            mix_seed(&[seed, 2, r as u64, k as u64]),
            false,
            &mut history,
            prefixes.executor.as_ref(),
        )?;
        so.record.execution = r;
        mark_made(&so.executed, &task.gold_calls, &mut made);
        ex.step_calls.push(so.executed.clone());
        absorb_step(
            so,
            pi,
            &mut ex.tokens,
            &mut ex.rewards,
            &mut ex.components,
            &mut ex.executed,
            &mut ex.final_response,
            &mut ex.groups,
            &mut ex.steps,
        );
    }
    ex.final_state = world.final_state();
    Ok(ex)
}

/// The component-wise mean of several reward breakdowns (reasons: the first one's).
fn mean_breakdown(all: &[RewardBreakdown]) -> RewardBreakdown {
    let Some(first) = all.first() else {
        return RewardBreakdown::default();
    };
    let n = all.len() as f64;
    let mut out = first.clone();
    for (i, c) in out.components.iter_mut().enumerate() {
        c.value = all.iter().map(|b| b.components[i].value).sum::<f64>() / n;
    }
    out.total = all.iter().map(|b| b.total).sum::<f64>() / n;
    if all.len() > 1 {
        out.reasons
            .push(format!("execution level: mean of {} executions", all.len()));
    }
    out
}

/// [`rollout_task`] reusing the shared system-prompt prefixes in `prefixes`.
pub fn rollout_task_with(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    step: u64,
    prefixes: &Prefixes,
) -> Result<TaskRollout> {
    match cfg.mode {
        Mode::Flat => return rollout_flat(agent, world, task, cfg, seed, step, prefixes),
        Mode::StepTool => {
            return super::steptool::rollout_steptool(agent, world, task, cfg, seed, step, prefixes)
        }
        Mode::IhGrpo => {
            return super::ih_grpo::rollout_ih_grpo(agent, world, task, cfg, seed, step, prefixes)
        }
        _ => {}
    }
    world.reset(task)?;
    let tools = tools_of(world, task);
    let psys = prompts::planner_system(&tools);
    let pprompt = agent.prompt_ids(&psys, &task.request)?;
    let gh = cfg.rollout.plans_per_task;
    let pparams = params_with_seed(&cfg.rollout.planner, mix_seed(&[seed, 1]));
    let plans = agent.sample(&SampleRequest {
        adapter: Some("planner"),
        prefix: prefixes.planner.as_ref(),
        prompt: &pprompt,
        g: gh,
        first_stream: 0,
        params: &pparams,
    })?;
    let mut groups = Vec::new();
    let mut plan_records = Vec::new();
    let mut plan_rewards = Vec::new();
    let mut components = Vec::new();
    let mut tokens: usize = plans.iter().map(|p| p.tokens.len()).sum();
    let mut exec_rewards = Vec::new();
    let mut any_success = false;
    let mut planner_side_failure = false;
    let mut sides = SideCounts::default();
    // In `separate` mode the executor works on the gold sub-tasks (under plan 0 only) and the
    // planner is rewarded on parameter-level accuracy only.
    let mut planner_rcfg = cfg.rewards.clone();
    if cfg.mode == Mode::Separate {
        planner_rcfg.planner.execution_level = 0.0;
    }
    let k_exec = cfg.rollout.executions_per_plan.max(1);
    let parsed_plans: Vec<_> = plans.iter().map(|p| parse_planner(&p.text)).collect();
    let plan_subtasks: Vec<Vec<String>> = parsed_plans
        .iter()
        .map(|parsed| {
            if cfg.mode == Mode::Separate {
                task.gold_plan.clone()
            } else {
                parsed.subtasks.clone()
            }
        })
        .collect();
    // Every execution of every plan; in a wave (crate::wave) each runs on its own copy of the
    // world and their executor steps decode together.
    let runs: Vec<(usize, usize)> = (0..plans.len())
        .filter(|&pi| cfg.mode != Mode::Separate || pi == 0)
        .flat_map(|pi| (0..k_exec).map(move |r| (pi, r)))
        .collect();
    let run_one = |world: &mut dyn World, (pi, r): (usize, usize)| {
        execute_plan(
            agent,
            world,
            task,
            &tools,
            &plan_subtasks[pi],
            cfg,
            seed,
            (pi, r),
            prefixes,
        )
    };
    let mut all_executions: Vec<Execution> = if crate::wave::in_wave() && runs.len() > 1 {
        let items: Vec<_> = runs.iter().map(|&run| (run, world.fork())).collect();
        crate::wave::map(items, |(run, mut w)| run_one(w.as_mut(), run))
            .into_iter()
            .collect::<Result<_>>()?
    } else {
        runs.iter()
            .map(|&run| run_one(&mut *world, run))
            .collect::<Result<_>>()?
    };
    let mut by_plan: Vec<Vec<Execution>> = (0..plans.len()).map(|_| Vec::new()).collect();
    for (&(pi, _), ex) in runs.iter().zip(all_executions.drain(..)) {
        by_plan[pi].push(ex);
    }
    for (((pi, plan), parsed), (subtasks, executions)) in plans
        .iter()
        .enumerate()
        .zip(parsed_plans)
        .zip(plan_subtasks.iter().cloned().zip(by_plan))
    {
        // The planner's reward: format and parameter level from the plan, execution level the
        // mean over its executions.
        let breakdowns: Vec<RewardBreakdown> = if executions.is_empty() {
            vec![planner_reward_parsed(
                &parsed,
                &PlanEpisode {
                    plan_text: &plan.text,
                    executed: &[],
                    final_state: None,
                    gold_calls: &task.gold_calls,
                    gold_derived: &task.gold_derived,
                    gold_state: task.gold_final_state.as_ref(),
                },
                &planner_rcfg,
            )]
        } else {
            executions
                .iter()
                .map(|ex| {
                    planner_reward_parsed(
                        &parsed,
                        &PlanEpisode {
                            plan_text: &plan.text,
                            executed: &ex.executed,
                            final_state: ex.final_state.as_ref(),
                            gold_calls: &task.gold_calls,
                            gold_derived: &task.gold_derived,
                            gold_state: task.gold_final_state.as_ref(),
                        },
                        &planner_rcfg,
                    )
                })
                .collect()
        };
        let prb = mean_breakdown(&breakdowns);
        component_list("planner", &prb, &mut components);
        let mut solved = Vec::new();
        let mut first_failure = (None, None);
        for (r, ex) in executions.iter().enumerate() {
            let ok = episode_success(
                task,
                &ex.executed,
                ex.final_state.as_ref(),
                ex.final_response.is_some(),
            );
            solved.push(ok);
            if !ok {
                // The sub-tasks that ran (at most `max_subtasks`); a plan counts as parsed when it
                // gave sub-tasks (format issues are the format reward's business).
                let ran = &subtasks[..subtasks.len().min(cfg.rollout.max_subtasks)];
                let (label, side) = failure_of(task, !ran.is_empty(), ran, &ex.step_calls);
                sides.count(side.as_deref());
                if side.as_deref() == Some(Side::Planner.name())
                    && label.as_deref() != Some(Misalignment::PlanUnparsable.name())
                {
                    planner_side_failure = true;
                }
                if r == 0 {
                    first_failure = (label, side);
                }
            } else {
                sides.count(None);
            }
        }
        let success = solved.first().copied().unwrap_or(false);
        any_success |= solved.iter().any(|&b| b);
        let success_rate = if solved.is_empty() {
            f64::NAN
        } else {
            solved.iter().filter(|&&b| b).count() as f64 / solved.len() as f64
        };
        let mut steps = Vec::new();
        let mut final_response = None;
        for ex in executions {
            tokens += ex.tokens;
            exec_rewards.extend(ex.rewards);
            components.extend(ex.components);
            // The groups point at their step in the plan record, where the executions' steps
            // follow one another.
            let offset = steps.len();
            groups.extend(ex.groups.into_iter().map(|mut g| {
                g.at.1 = g.at.1.map(|k| k + offset);
                g
            }));
            steps.extend(ex.steps);
            if final_response.is_none() {
                final_response = ex.final_response;
            }
        }
        plan_rewards.push(prb.total);
        plan_records.push(PlanRecord {
            index: pi,
            raw_text: plan.text.clone(),
            subtasks,
            parse_error: parsed.issues.first().map(|i| i.message()),
            reward: to_record_breakdown(&prb),
            advantage: None,
            tokens: plan.tokens.len(),
            steps,
            final_response,
            success,
            success_rate,
            failure: first_failure.0,
            failure_side: first_failure.1,
        });
    }
    groups.push(Group {
        policy: Policy::Planner,
        prompt: pprompt,
        completions: plans,
        rewards: plan_rewards.clone(),
        at: (0, None),
        advantages: None,
    });
    let n_plans = plan_records.len().max(1) as f64;
    let record = TrajectoryRecord {
        step,
        task: task_info(task),
        seed,
        plans: plan_records,
        success: any_success,
        planner_reward: plan_rewards.iter().sum::<f64>() / n_plans,
        executor_reward: mean(&exec_rewards),
        misaligned: !any_success && planner_side_failure,
        mode: cfg.mode.name().to_string(),
        policy_version: None,
    };
    Ok(TaskRollout {
        record,
        groups,
        generated_tokens: tokens,
        components,
        sides,
    })
}

/// Executions of a step's plans by outcome: solved, failed on the planner side, failed on the
/// executor side (for the metrics' rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideCounts {
    pub executions: usize,
    pub planner: usize,
    pub executor: usize,
}

impl SideCounts {
    pub(super) fn count(&mut self, side: Option<&str>) {
        self.executions += 1;
        match side {
            Some("planner") => self.planner += 1,
            Some("executor") => self.executor += 1,
            _ => {}
        }
    }
}

pub(super) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub(crate) fn task_info(task: &Task) -> TaskInfo {
    TaskInfo {
        id: task.id.clone(),
        split: task
            .split
            .map(|s| {
                serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
        text: task.request.clone(),
        gold_plan: task.gold_plan.clone(),
        gold_calls: task.gold_calls.iter().map(call_record).collect(),
    }
}

/// Flat baseline: one adapter (`executor`) calls tools turn by turn with ToolRL's reward.
pub fn rollout_flat(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    step: u64,
    prefixes: &Prefixes,
) -> Result<TaskRollout> {
    world.reset(task)?;
    let tools = tools_of(world, task);
    let sys = prompts::flat_system(&tools);
    let mut history = Vec::new();
    let mut executed = Vec::new();
    let mut steps = Vec::new();
    let mut groups = Vec::new();
    let mut tokens = 0;
    let mut rewards = Vec::new();
    let mut components = Vec::new();
    let mut final_response = None;
    let max_turns = cfg.rollout.max_subtasks;
    // Per-turn gold as ToolRL has it: the calls of the next gold turn not made yet (several
    // when they need no earlier result), by content, not by turn index.
    let turns = gold_turns(&task.gold_calls, &task.gold_derived);
    let mut made = vec![false; task.gold_calls.len()];
    for k in 0..max_turns {
        let user = prompts::flat_user(&task.request, &history);
        let mut gold = turn_gold(&task.gold_calls, &turns, &made);
        gold.truncate(world.calls_per_step().unwrap_or(usize::MAX));
        let so = executor_step(
            agent,
            world,
            &tools,
            &sys,
            user,
            (k, format!("turn {}", k + 1)),
            &gold,
            cfg,
            mix_seed(&[seed, 3, k as u64]),
            true,
            &mut history,
            prefixes.executor.as_ref(),
        )?;
        mark_made(&so.executed, &task.gold_calls, &mut made);
        let made_calls = absorb_step(
            so,
            0,
            &mut tokens,
            &mut rewards,
            &mut components,
            &mut executed,
            &mut final_response,
            &mut groups,
            &mut steps,
        );
        if !made_calls {
            break;
        }
    }
    let final_state = world.final_state();
    let success = episode_success(
        task,
        &executed,
        final_state.as_ref(),
        final_response.is_some(),
    );
    let plan = PlanRecord {
        index: 0,
        raw_text: String::new(),
        subtasks: Vec::new(),
        parse_error: None,
        reward: RecBreakdown::default(),
        advantage: None,
        tokens: 0,
        steps,
        final_response,
        success,
        success_rate: if success { 1.0 } else { 0.0 },
        failure: None,
        failure_side: None,
    };
    let record = TrajectoryRecord {
        step,
        task: task_info(task),
        seed,
        plans: vec![plan],
        success,
        planner_reward: f64::NAN,
        executor_reward: mean(&rewards),
        misaligned: false,
        mode: cfg.mode.name().to_string(),
        policy_version: None,
    };
    Ok(TaskRollout {
        record,
        groups,
        generated_tokens: tokens,
        components,
        sides: SideCounts::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewards::{executor_step_reward, RewardConfig};
    use crate::worlds::builtin::{builtin_tools, generate_tasks};
    use crate::worlds::Split;

    /// A "transfer" task: login, then transfer (the token derived from the login).
    fn transfer_task() -> Task {
        generate_tasks(Split::Train, 300, 4)
            .unwrap()
            .into_iter()
            .find(|t| t.template.as_deref() == Some("transfer"))
            .unwrap()
    }

    fn calls_text(calls: &[ToolCall]) -> String {
        let lines: Vec<String> = calls.iter().map(ToolCall::to_toolrl_json).collect();
        format!(
            "<think>do it</think>\n<tool_call>\n{}\n</tool_call>",
            lines.join("\n")
        )
    }

    fn semantics(task: &Task, subtasks: &[String], made: &[bool], k: usize, out: &str) -> f64 {
        let a = align_plan(subtasks, &task.gold_calls, &task.gold_derived);
        let gold = step_gold(&a, &task.gold_calls, made, k);
        executor_step_reward(out, builtin_tools(), &gold, &RewardConfig::default())
            .component("semantics")
            .unwrap()
    }

    #[test]
    fn a_merged_subtask_carried_out_whole_gets_full_semantics() {
        let t = transfer_task();
        let merged = vec![format!("{}, then {}", t.gold_plan[0], t.gold_plan[1])];
        let s = semantics(&t, &merged, &[false, false], 0, &calls_text(&t.gold_calls));
        assert_eq!(s, 1.0, "both calls the merged sub-task asks for");
        // Half of it is half the semantics.
        let s = semantics(
            &t,
            &merged,
            &[false, false],
            0,
            &calls_text(&t.gold_calls[..1]),
        );
        assert!((s - 0.5).abs() < 1e-9, "{s}");
    }

    #[test]
    fn reordered_split_and_extra_subtasks_are_scored_for_what_they_say() {
        let t = transfer_task();
        let (login, transfer) = (&t.gold_calls[0], &t.gold_calls[1]);
        let none = [false, false];
        // Reordered: sub-task 0 asks for the transfer, so the transfer is its gold.
        let rev = vec![t.gold_plan[1].clone(), t.gold_plan[0].clone()];
        let s = semantics(
            &t,
            &rev,
            &none,
            0,
            &calls_text(std::slice::from_ref(transfer)),
        );
        assert_eq!(s, 1.0);
        let s = semantics(&t, &rev, &none, 1, &calls_text(std::slice::from_ref(login)));
        assert_eq!(s, 1.0);
        // Extra: a sub-task that describes no gold call wants no call.
        let extra = vec![
            "say hello to the user".to_string(),
            t.gold_plan[0].clone(),
            t.gold_plan[1].clone(),
        ];
        let s = semantics(
            &t,
            &extra,
            &none,
            0,
            "<think>x</think>\n<response>\nhi\n</response>",
        );
        assert_eq!(s, 1.0);
        let s = semantics(
            &t,
            &extra,
            &none,
            1,
            &calls_text(std::slice::from_ref(login)),
        );
        assert_eq!(
            s, 1.0,
            "the login is still sub-task 1's, not shifted by the extra one"
        );
        // A call made early is not asked for again.
        let s = semantics(
            &t,
            &extra,
            &[true, false],
            1,
            "<think>x</think>\n<response>\ndone\n</response>",
        );
        assert_eq!(s, 1.0);
    }

    #[test]
    fn made_calls_are_marked_once_each() {
        let t = transfer_task();
        let mut made = vec![false; 2];
        mark_made(
            std::slice::from_ref(&t.gold_calls[1]),
            &t.gold_calls,
            &mut made,
        );
        assert_eq!(made, vec![false, true]);
        mark_made(&t.gold_calls, &t.gold_calls, &mut made);
        assert_eq!(made, vec![true, true]);
    }

    /// The testbed's executor runs one call per sub-task: a merged sub-task's second call is
    /// refused (an error observation, nothing run); the plain world runs both.
    #[test]
    fn the_one_call_world_refuses_a_second_call_per_step() {
        use crate::worlds::builtin::BuiltinWorld;
        let t = transfer_task();
        let mut limited = BuiltinWorld::one_call_per_step();
        limited.reset(&t).unwrap();
        let mut history = Vec::new();
        let (ran, obs) = run_calls(&mut limited, t.gold_calls.clone(), &mut history);
        assert_eq!(ran, t.gold_calls[..1].to_vec());
        assert_eq!(obs.len(), 2);
        assert!(
            obs[1]["error"].as_str().unwrap().starts_with("not run"),
            "{obs:?}"
        );
        assert_eq!(history.len(), 2, "the refusal is in the executor's history");
        let mut plain = BuiltinWorld::new();
        plain.reset(&t).unwrap();
        let (ran, _) = run_calls(&mut plain, t.gold_calls.clone(), &mut Vec::new());
        assert_eq!(ran.len(), 2);
    }

    /// By construction a planner reward without the execution term cannot tell a merged plan
    /// from the split one: both state every value in the sub-task carrying its call, and every
    /// sub-task carries a call.
    #[test]
    fn merged_and_split_plans_are_equal_without_the_execution_term() {
        let t = transfer_task();
        let mut cfg = crate::rewards::RewardConfig::default();
        cfg.planner.execution_level = 0.0;
        let reward = |subtasks: &[String]| {
            let text = format!(
                "<think>x</think>\n<plan>\n{}\n</plan>",
                crate::worlds::builtin::render_plan(subtasks)
            );
            let plan = parse_planner(&text);
            let ep = PlanEpisode {
                plan_text: &text,
                executed: &[],
                final_state: None,
                gold_calls: &t.gold_calls,
                gold_derived: &t.gold_derived,
                gold_state: t.gold_final_state.as_ref(),
            };
            planner_reward_parsed(&plan, &ep, &cfg)
        };
        let split = reward(&t.gold_plan);
        let merged = reward(&[format!("{}, then {}", t.gold_plan[0], t.gold_plan[1])]);
        assert_eq!(split.component("param_level"), Some(1.0));
        assert_eq!(merged.component("param_level"), Some(1.0));
        assert_eq!(split.total, merged.total);
    }
}

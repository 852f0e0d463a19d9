//! `--mode steptool`: StepTool's step-grained reinforcement learning (Yu et al. 2024) on this
//! tool's worlds. One adapter (the executor's) calls tools turn by turn with the flat prompt;
//! each task gets G = `rollout.samples_per_step` whole trajectories, each turn rewarded with
//! [`steptool_step_reward`], the returns normalised per step index across the G trajectories
//! ([`crate::grpo::per_index_advantages`]), and every token of turn t carries A_t. A trajectory is recorded
//! as one "plan" of the trace (no plan text), its turns as steps of one sample each, with the
//! step's reward, return and advantage.
use cahl_sessions::records::TrajectoryRecord;
use cahl_sessions::records::{ExecSample, PlanRecord, RewardBreakdown as RecBreakdown, StepRecord};

use crate::agent::Agent;
use crate::backend::SampleRequest;
use crate::error::Result;
use crate::grpo::{per_index_advantages, SeqAdvantage};
use crate::parse::{call_record, parse_executor, ExecutorOutput, ToolCall};
use crate::rewards::align::mark_made;
use crate::rewards::steptool::{discounted_returns, steptool_step_reward, TurnView};
use crate::sampling::Completion;
use crate::train::config::TrainConfig;
use crate::train::prompts;
use crate::worlds::{Task, World};

use super::rollout::{
    episode_success, mean, mix_seed, params_with_seed, run_calls, task_info, to_record_breakdown,
    tools_of, Group, Policy, Prefixes, SideCounts, TaskRollout,
};

/// One turn of a trajectory as sampled, before its reward (which needs the later turns).
struct Turn {
    prompt: Vec<u32>,
    user: String,
    completion: Completion,
    output: ExecutorOutput,
    /// Every call entry the world saw, with whether it was accepted and its observation.
    ran: Vec<(ToolCall, bool, serde_json::Value)>,
    made_before: Vec<bool>,
}

/// One sampled trajectory of the flat agent.
struct Trajectory {
    turns: Vec<Turn>,
    executed: Vec<ToolCall>,
    final_state: Option<serde_json::Value>,
    final_response: Option<String>,
    success: bool,
}

/// Roll the flat agent through `task` once (trajectory `i` of the group).
#[allow(clippy::too_many_arguments)]
fn sample_trajectory(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    i: usize,
    prefixes: &Prefixes,
) -> Result<Trajectory> {
    world.reset(task)?;
    let tools = tools_of(world, task);
    let sys = prompts::flat_system(&tools);
    let mut history = Vec::new();
    let mut made = vec![false; task.gold_calls.len()];
    let mut tr = Trajectory {
        turns: Vec::new(),
        executed: Vec::new(),
        final_state: None,
        final_response: None,
        success: false,
    };
    for t in 0..cfg.rollout.max_subtasks {
        let user = prompts::flat_user(&task.request, &history);
        let prompt = agent.prompt_ids(&sys, &user)?;
        let params = params_with_seed(
            &cfg.rollout.executor,
            mix_seed(&[seed, 4, i as u64, t as u64]),
        );
        let completion = agent
            .sample(&SampleRequest {
                adapter: Some("executor"),
                prefix: prefixes.executor.as_ref(),
                prompt: &prompt,
                g: 1,
                first_stream: 0,
                params: &params,
            })?
            .pop()
            .ok_or_else(|| {
                crate::EngineError::Invalid("the sampler returned no completion".into())
            })?;
        let output = parse_executor(&completion.text);
        let before = history.len();
        let (calls, _) = run_calls(world, output.calls(), &mut history);
        let ran = history[before..]
            .iter()
            .map(|h| {
                (
                    h.call.clone(),
                    h.observation.ok,
                    h.observation.content.clone(),
                )
            })
            .collect();
        let made_before = made.clone();
        mark_made(&calls, &task.gold_calls, &mut made);
        let made_calls = !calls.is_empty();
        tr.executed.extend(calls);
        if output.response.is_some() {
            tr.final_response = output.response.clone();
        }
        tr.turns.push(Turn {
            prompt,
            user,
            completion,
            output,
            ran,
            made_before,
        });
        if !made_calls {
            break;
        }
    }
    tr.final_state = world.final_state();
    tr.success = episode_success(
        task,
        &tr.executed,
        tr.final_state.as_ref(),
        tr.final_response.is_some(),
    );
    Ok(tr)
}

/// StepTool's rollout of one task: G trajectories, their step rewards, returns and advantages.
pub fn rollout_steptool(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    step: u64,
    prefixes: &Prefixes,
) -> Result<TaskRollout> {
    let tools = tools_of(world, task);
    let scfg = &cfg.rewards.steptool;
    let g = cfg.rollout.samples_per_step.max(1);
    let mut trajs = Vec::with_capacity(g);
    for i in 0..g {
        trajs.push(sample_trajectory(
            agent, world, task, cfg, seed, i, prefixes,
        )?);
    }
    // Step rewards (each needs the later turns of its trajectory), then returns.
    let mut rewards: Vec<Vec<crate::rewards::RewardBreakdown>> = Vec::with_capacity(g);
    for tr in &trajs {
        let n = tr.turns.len();
        let mut rs = Vec::with_capacity(n);
        for (t, turn) in tr.turns.iter().enumerate() {
            let later: Vec<ToolCall> = tr.turns[t + 1..]
                .iter()
                .flat_map(|u| u.ran.iter().filter(|r| r.1).map(|r| r.0.clone()))
                .collect();
            let view = TurnView {
                output: &turn.output,
                ran: &turn.ran,
                made_before: &turn.made_before,
            };
            rs.push(steptool_step_reward(
                &view,
                &tools,
                &task.gold_calls,
                &later,
                tr.final_response.as_deref(),
                (t + 1 == n).then_some(tr.success),
                scfg,
            ));
        }
        rewards.push(rs);
    }
    let returns: Vec<Vec<f64>> = rewards
        .iter()
        .map(|rs| {
            let r: Vec<f64> = rs.iter().map(|b| b.total).collect();
            discounted_returns(&r, scfg.gamma)
        })
        .collect();
    let advs = per_index_advantages(&returns, cfg.grpo.scale_rewards);
    let mut groups = Vec::new();
    let mut plans = Vec::with_capacity(g);
    let mut components = Vec::new();
    let mut all_r = Vec::new();
    let mut tokens = 0;
    let mut any_success = false;
    for (i, tr) in trajs.into_iter().enumerate() {
        let mut steps = Vec::with_capacity(tr.turns.len());
        for (t, turn) in tr.turns.into_iter().enumerate() {
            let rb = &rewards[i][t];
            all_r.push(rb.total);
            for c in &rb.components {
                components.push((format!("executor/{}", c.name), c.value));
            }
            tokens += turn.completion.tokens.len();
            let obs: Vec<serde_json::Value> = turn.ran.iter().map(|r| r.2.clone()).collect();
            steps.push(StepRecord {
                subtask_index: t,
                subtask: format!("turn {}", t + 1),
                prompt: Some(turn.user),
                samples: vec![ExecSample {
                    raw_text: turn.completion.text.clone(),
                    calls: turn.output.calls().iter().map(call_record).collect(),
                    parse_error: turn.output.issues.first().map(|e| e.message()),
                    observation: match obs.len() {
                        0 => None,
                        1 => obs.into_iter().next(),
                        _ => Some(serde_json::Value::Array(obs)),
                    },
                    reward: to_record_breakdown(rb),
                    advantage: Some(advs[i][t]),
                    step_return: Some(returns[i][t]),
                    tokens: turn.completion.tokens.len(),
                }],
                continued: 0,
                execution: 0,
            });
            groups.push(Group {
                policy: Policy::Executor,
                prompt: turn.prompt,
                completions: vec![turn.completion],
                rewards: vec![rb.total],
                at: (i, Some(t)),
                advantages: Some(vec![SeqAdvantage::Uniform(advs[i][t])]),
            });
        }
        any_success |= tr.success;
        let ret0 = returns[i].first().copied().unwrap_or(0.0);
        plans.push(PlanRecord {
            index: i,
            raw_text: String::new(),
            subtasks: Vec::new(),
            parse_error: None,
            reward: RecBreakdown {
                total: ret0,
                components: [("return".to_string(), ret0)].into_iter().collect(),
                reasons: vec![format!(
                    "trajectory {} of {g}: return from its first step (gamma {})",
                    i + 1,
                    scfg.gamma
                )],
                ..Default::default()
            },
            advantage: None,
            tokens: 0,
            steps,
            final_response: tr.final_response,
            success: tr.success,
            success_rate: if tr.success { 1.0 } else { 0.0 },
            failure: None,
            failure_side: None,
        });
    }
    let record = TrajectoryRecord {
        step,
        task: task_info(task),
        seed,
        plans,
        success: any_success,
        planner_reward: f64::NAN,
        executor_reward: mean(&all_r),
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

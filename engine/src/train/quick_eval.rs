//! The quick held-out evaluation that `[eval]` runs during training (and `pretrain` during
//! pre-training): greedy, one plan, one executor sample per sub-task.
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::error::Result;
use crate::lanes::Lanes;
use crate::worlds::{Task, World};

use super::config::TrainConfig;
use super::rollout::{mix_seed, rollout_task_with, Prefixes};

/// Greedy success of the current adapters on held-out tasks (one plan, one executor sample per
/// sub-task), as `[eval]` reports it during training and `pretrain` during pre-training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QuickEval {
    pub tasks: usize,
    pub successes: usize,
    pub planner_reward: f64,
    pub executor_reward: f64,
    /// Call entries of the continued samples that do not parse or that the tool schemas
    /// reject, and all call entries (the invalid-invocation rate is their ratio).
    pub invalid_calls: usize,
    pub call_attempts: usize,
    /// Failed tasks by side (hierarchical modes; see `eval::taxonomy`).
    pub planner_side: usize,
    pub executor_side: usize,
}

impl QuickEval {
    pub fn success_rate(&self) -> f64 {
        if self.tasks == 0 {
            0.0
        } else {
            self.successes as f64 / self.tasks as f64
        }
    }
}

/// Roll out `tasks` greedily in `cfg.mode` and count successes (see [`QuickEval`]).
pub fn quick_eval(
    agent: &Agent,
    world: &dyn World,
    tasks: &[Task],
    cfg: &TrainConfig,
) -> Result<QuickEval> {
    quick_eval_on(agent, world, tasks, cfg, &Lanes::new(1)?)
}

/// [`quick_eval`] with the tasks spread over `lanes` (same result for any lane count).
pub fn quick_eval_on(
    agent: &Agent,
    world: &dyn World,
    tasks: &[Task],
    cfg: &TrainConfig,
    lanes: &Lanes,
) -> Result<QuickEval> {
    let mut c = cfg.clone();
    // The modes differ in what they train, not in the agent: every hierarchical mode is
    // evaluated as the planner-then-executor agent (`separate` trains its executor on gold
    // sub-tasks, but its held-out tasks are run on its planner's plans).
    // `steptool` trains the flat agent; `ih-grpo` is evaluated with its own one-completion
    // protocol.
    use crate::train::Mode;
    c.mode = match c.mode {
        Mode::Flat | Mode::StepTool => Mode::Flat,
        Mode::IhGrpo => Mode::IhGrpo,
        _ => Mode::Cahl,
    };
    c.rollout.planner.greedy = true;
    c.rollout.executor.greedy = true;
    c.rollout.plans_per_task = 1;
    c.rollout.samples_per_step = 1;
    // Greedy: a second execution would repeat the first.
    c.rollout.executions_per_plan = 1;
    let mut out = QuickEval::default();
    let (mut pr, mut er, mut np, mut ne) = (0.0, 0.0, 0usize, 0usize);
    let jobs: Vec<(usize, &Task, Box<dyn World>)> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (i, t, world.fork()))
        .collect();
    let c = &c;
    let prefixes = Prefixes::for_rollouts(agent, &world.tools(), c.mode)?;
    let prefixes = &prefixes;
    let job = |(i, t, mut w): (usize, &Task, Box<dyn World>)| {
        rollout_task_with(
            agent,
            w.as_mut(),
            t,
            c,
            mix_seed(&[c.seed, 7, i as u64]),
            0,
            prefixes,
        )
    };
    let results = if c.rollout.batch.applies(agent.model.num_base_params()) {
        crate::wave::run(agent, c.rollout.batch_rows, jobs, job).0
    } else {
        lanes.map(jobs, job)
    };
    for r in results {
        let r = r?;
        let i = out.tasks;
        out.tasks += 1;
        out.successes += r.record.success as usize;
        let tools = if tasks[i].tools.is_empty() {
            world.tools()
        } else {
            tasks[i].tools.clone()
        };
        let (_, e) = crate::eval::episode_costs(&r.record, &tasks[i], &tools, 0, 0.0);
        out.invalid_calls += e.invalid_calls;
        out.call_attempts += e.call_attempts;
        out.planner_side += r.sides.planner;
        out.executor_side += r.sides.executor;
        if r.record.planner_reward.is_finite() {
            pr += r.record.planner_reward;
            np += 1;
        }
        if r.record.executor_reward.is_finite() {
            er += r.record.executor_reward;
            ne += 1;
        }
    }
    out.planner_reward = if np > 0 { pr / np as f64 } else { f64::NAN };
    out.executor_reward = if ne > 0 { er / ne as f64 } else { f64::NAN };
    Ok(out)
}

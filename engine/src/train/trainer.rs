//! The algorithm: a [`Trainer`] owns the model with its two adapters, one AdamW per adapter,
//! the world and the task list; [`Trainer::step`] rolls out `tasks_per_step` tasks
//! hierarchically, turns the planner's and the executor's samples into GRPO groups and updates
//! each trained adapter ([`Trainer::update`], in `update.rs`). All randomness of step `s` derives
//! from `(seed, s)`, so a run resumed from a checkpoint replays the same steps as an
//! uninterrupted run.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use cahl_sessions::records::{HeldOutEval, MetricsRecord, PolicyStats, TrajectoryRecord};
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::error::{EngineError, Result};
use crate::grpo::{group_advantages, reference_adapter_name, KlReference, SeqAdvantage};
use crate::lanes::Lanes;
use crate::model::{Model, Prefix};
use crate::optim::AdamW;
use crate::worlds::{Task, World};
use cahl_sessions::fsutil::atomic_write;

use super::config::{Mode, TrainConfig};
use super::health::UpdateCounts;
use super::quick_eval::quick_eval_on;
use super::rollout::{mix_seed, rollout_task_with, Policy, Prefixes, SideCounts, TaskRollout};

/// What one step produced.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub metrics: MetricsRecord,
    pub trajectories: Vec<TrajectoryRecord>,
    pub warnings: Vec<String>,
    /// What the batched rollout did (`None`: tasks rolled out on lanes, unbatched).
    pub waves: Option<crate::wave::WaveStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    elapsed_s: f64,
    mode: String,
    seed: u64,
}

/// Sequence-level advantages (one per completion).
fn uniform(adv: &[f64]) -> Vec<SeqAdvantage> {
    adv.iter().map(|&a| SeqAdvantage::Uniform(a)).collect()
}

/// `n` of `tasks` as a rate; NaN in `flat` mode (no plans) or without tasks.
fn side_rate(n: usize, tasks: usize, mode: Mode) -> f64 {
    if !mode.has_plans() || tasks == 0 {
        f64::NAN
    } else {
        n as f64 / tasks as f64
    }
}

/// Add the `planner` and `executor` adapters of `cfg.lora` with their seeded PEFT init
/// (derived from `cfg.seed`) where the model does not have them yet. `Trainer::new` and
/// `cahl-tui sft` both start from this, so an SFT warm start and a run without one begin from
/// the same initial adapters.
pub fn add_missing_adapters(model: &mut Model, cfg: &TrainConfig) -> Result<()> {
    let names = model.adapter_names();
    for (name, lora, k) in [
        ("planner", &cfg.lora.planner, 11),
        ("executor", &cfg.lora.executor, 12),
    ] {
        if !names.iter().any(|n| n == name) {
            model.add_adapter(name, lora, mix_seed(&[cfg.seed, k]))?;
        }
    }
    Ok(())
}

/// Joint GRPO trainer.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub agent: Agent,
    pub(super) world: Box<dyn World>,
    pub(super) tasks: Vec<Task>,
    pub(super) opt_planner: AdamW,
    pub(super) opt_executor: AdamW,
    pub(super) step: u64,
    pub(super) elapsed_s: f64,
    pub(super) eval_tasks: Vec<Task>,
    pub(super) lanes: Lanes,
    /// The reference policy's shared-prompt prefixes, by (policy, token ids).
    pub(super) reference_prefixes: HashMap<(String, Vec<u32>), Prefix>,
    /// Optimizer steps applied and rolled back in this process.
    /// Per policy (planner, executor).
    pub(super) updates: [UpdateCounts; 2],
}

/// The number of side-by-side workers for `cfg` (see [`TrainConfig::workers`]).
pub fn worker_count(cfg: &TrainConfig, model: &Model) -> usize {
    // The adapters' own settings count (a warm start or checkpoint may bring its dropout).
    let dropout = ["planner", "executor"]
        .iter()
        .any(|n| model.adapter(n).is_ok_and(|a| a.config.lora_dropout > 0.0));
    if dropout || cfg.lora.planner.lora_dropout > 0.0 || cfg.lora.executor.lora_dropout > 0.0 {
        // Dropout masks come from one RNG per adapter: concurrent draws would reorder them.
        return 1;
    }
    match cfg.workers {
        0 => Lanes::auto_count(model.num_base_params()),
        n => n,
    }
}

impl Trainer {
    /// Adds the `planner` and `executor` adapters (seeded PEFT init) unless the model already
    /// has them (e.g. from an SFT warm start), and one optimizer per adapter.
    pub fn new(
        cfg: TrainConfig,
        mut agent: Agent,
        world: Box<dyn World>,
        tasks: Vec<Task>,
    ) -> Result<Self> {
        cfg.validate()?;
        if tasks.is_empty() {
            return Err(EngineError::Config("no training tasks".into()));
        }
        add_missing_adapters(&mut agent.model, &cfg)?;
        if cfg.grpo.reference == KlReference::Init {
            // The KL reference: each adapter as the run starts, frozen (no optimizer holds it).
            for name in ["planner", "executor"] {
                let ref_name = reference_adapter_name(name);
                if agent.model.adapter(&ref_name).is_err() {
                    let lora = agent.model.adapter(name)?.config.clone();
                    agent.model.add_adapter(&ref_name, &lora, 0)?;
                    let model = &agent.model;
                    model.adapter(&ref_name)?.copy_from(model.adapter(name)?)?;
                }
            }
        }
        let named = |n: &str| -> Result<Vec<(String, candle_core::Var)>> {
            Ok(agent
                .model
                .adapter(n)?
                .named_vars()
                .into_iter()
                .map(|(k, v)| (k, v.clone()))
                .collect())
        };
        let opt_planner = AdamW::new(named("planner")?, cfg.optim.planner.clone())?;
        let opt_executor = AdamW::new(named("executor")?, cfg.optim.executor.clone())?;
        let lanes = Lanes::new(worker_count(&cfg, &agent.model))?;
        Ok(Trainer {
            cfg,
            agent,
            world,
            tasks,
            opt_planner,
            opt_executor,
            step: 0,
            elapsed_s: 0.0,
            eval_tasks: Vec::new(),
            lanes,
            reference_prefixes: HashMap::new(),
            updates: [UpdateCounts::default(); 2],
        })
    }

    /// Optimizer steps applied and rolled back so far in this process.
    pub fn update_counts(&self) -> [UpdateCounts; 2] {
        self.updates
    }

    /// The largest absolute weight of the planner and executor adapters.
    pub fn adapter_max_abs(&self) -> Result<[f64; 2]> {
        Ok([
            crate::optim::max_abs(self.opt_planner.vars())?,
            crate::optim::max_abs(self.opt_executor.vars())?,
        ])
    }

    /// Side-by-side workers in use (see [`TrainConfig::workers`]).
    pub fn workers(&self) -> usize {
        self.lanes.len()
    }

    /// Held-out tasks for `[eval]` (none: no evaluation).
    pub fn set_eval_tasks(&mut self, tasks: Vec<Task>) {
        self.eval_tasks = tasks;
    }

    /// Whether `[eval]` is on and has tasks.
    pub fn eval_enabled(&self) -> bool {
        self.cfg.eval.every > 0 && !self.eval_tasks.is_empty()
    }

    /// True once `max_minutes` of training time are used up.
    pub fn budget_exhausted(&self) -> bool {
        self.cfg.max_minutes > 0.0 && self.elapsed_s >= self.cfg.max_minutes * 60.0
    }

    /// Have a remote rollout backend sample with the current adapters (the version after
    /// `steps_done()` updates); nothing for the local backend.
    pub fn publish_adapters(&self) -> Result<()> {
        if let Some(b) = &self.agent.remote {
            b.publish(self.step, &self.agent.model, &self.agent.model_name)?;
        }
        Ok(())
    }

    /// The policy version rollouts sample with now: the remote backend's published one, or
    /// (local) the number of updates applied.
    pub fn policy_version(&self) -> u64 {
        self.agent
            .remote
            .as_ref()
            .and_then(|b| b.policy_version())
            .unwrap_or(self.step)
    }

    /// Greedy evaluation on the held-out tasks (`None` without any).
    pub fn evaluate(&mut self) -> Result<Option<HeldOutEval>> {
        if self.eval_tasks.is_empty() {
            return Ok(None);
        }
        self.publish_adapters()?;
        let q = quick_eval_on(
            &self.agent,
            self.world.as_ref(),
            &self.eval_tasks,
            &self.cfg,
            &self.lanes,
        )?;
        let split = self.eval_tasks[0]
            .split
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| "held-out".into());
        Ok(Some(HeldOutEval {
            split,
            tasks: q.tasks,
            success_rate: q.success_rate(),
            planner_reward: q.planner_reward,
            executor_reward: q.executor_reward,
            invalid_rate: if q.call_attempts == 0 {
                f64::NAN
            } else {
                q.invalid_calls as f64 / q.call_attempts as f64
            },
            planner_side_rate: side_rate(q.planner_side, q.tasks, self.cfg.mode),
            executor_side_rate: side_rate(q.executor_side, q.tasks, self.cfg.mode),
        }))
    }

    /// Steps completed so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Indices of the tasks of step `s` (1-based), a pure function of (seed, s).
    pub fn tasks_for_step(&self, s: u64) -> Vec<usize> {
        (0..self.cfg.tasks_per_step as u64)
            .map(|i| (mix_seed(&[self.cfg.seed, 100, s, i]) % self.tasks.len() as u64) as usize)
            .collect()
    }

    /// Run one training step: rollouts, then one update per trained adapter.
    pub fn step(&mut self) -> Result<StepResult> {
        let t0 = Instant::now();
        let s = self.step + 1;
        let mut warnings = Vec::new();
        let mut rollouts = Vec::new();
        // Tasks roll out side by side, each in its own copy of the world; every task's seed
        // depends only on (seed, step, index), so the results do not depend on the lanes.
        let jobs: Vec<(usize, Task, Box<dyn World>)> = self
            .tasks_for_step(s)
            .into_iter()
            .enumerate()
            .map(|(i, ti)| (i, self.tasks[ti].clone(), self.world.fork()))
            .collect();
        // A remote backend samples with the adapters after `self.step` updates.
        self.publish_adapters()?;
        let version = self.policy_version();
        let tools = self.world.tools();
        let prefixes = Prefixes::for_rollouts(&self.agent, &tools, self.cfg.mode)?;
        let (agent, cfg, prefixes) = (&self.agent, &self.cfg, &prefixes);
        let job = |(i, task, mut world): (usize, Task, Box<dyn World>)| {
            let seed = mix_seed(&[cfg.seed, s, i as u64]);
            (
                task.id.clone(),
                rollout_task_with(agent, world.as_mut(), &task, cfg, seed, s, prefixes),
            )
        };
        // Batched: every task on its own thread, their samples decoded together in waves;
        // otherwise tasks side by side on the lanes.
        let mut waves = None;
        let results = if cfg.rollout.batch.applies(agent.model.num_base_params()) {
            let (results, w) = crate::wave::run(agent, cfg.rollout.batch_rows, jobs, job);
            waves = Some(w);
            tracing::info!(
                step = s,
                requests = w.requests,
                rows = w.rows,
                steps = w.steps,
                mean_rows = w.row_steps as f64 / w.steps.max(1) as f64,
                max_rows = w.max_rows,
                prefill_s = w.timing.prefill_s,
                prefill_tokens = w.timing.prefill_tokens,
                decode_s = w.timing.decode_s,
                decode_steps = w.timing.decode_steps,
                "rollout waves"
            );
            results
        } else {
            self.lanes.map(jobs, job)
        };
        for (id, r) in results {
            match r {
                Ok(mut r) => {
                    r.record.policy_version = Some(version);
                    rollouts.push(r)
                }
                // A server that failed after its retries fails the step: the step's other
                // tasks would otherwise train on a silently smaller batch.
                Err(e @ EngineError::Endpoint { .. }) => return Err(e),
                Err(e) => warnings.push(format!("task {id}: rollout failed: {e}")),
            }
        }
        let rollout_s = t0.elapsed().as_secs_f64();
        let gen_tokens: usize = rollouts.iter().map(|r| r.generated_tokens).sum();
        // Advantages, written into the trace records as well.
        let scale = self.cfg.grpo.scale_rewards;
        let mut planner_groups = Vec::new();
        let mut executor_groups = Vec::new();
        for r in rollouts.iter_mut() {
            for g in &r.groups {
                if let Some(adv) = &g.advantages {
                    // Computed by the rollout (and written into its trace) already.
                    let dest = match g.policy {
                        Policy::Planner => &mut planner_groups,
                        Policy::Executor => &mut executor_groups,
                    };
                    dest.push((g.clone(), adv.clone()));
                    continue;
                }
                let adv = group_advantages(&g.rewards, scale);
                match g.policy {
                    Policy::Planner => {
                        for (pi, a) in adv.iter().enumerate() {
                            if let Some(p) = r.record.plans.get_mut(pi) {
                                p.advantage = Some(*a);
                            }
                        }
                        planner_groups.push((g.clone(), uniform(&adv)));
                    }
                    Policy::Executor => {
                        let (pi, si) = g.at;
                        if let Some(st) = r
                            .record
                            .plans
                            .get_mut(pi)
                            .and_then(|p| si.and_then(|si| p.steps.get_mut(si)))
                        {
                            for (k, a) in adv.iter().enumerate() {
                                if let Some(smp) = st.samples.get_mut(k) {
                                    smp.advantage = Some(*a);
                                }
                            }
                        }
                        executor_groups.push((g.clone(), uniform(&adv)));
                    }
                }
            }
        }
        let mode = self.cfg.mode;
        crate::memory::log_memory(s, "after rollouts");
        let planner_stats = if mode.trains_planner() {
            let temp = self.cfg.rollout.planner.temperature;
            self.update_iterations(Policy::Planner, &planner_groups, temp, &mut warnings)?
        } else {
            PolicyStats {
                lr: 0.0,
                ..PolicyStats::default()
            }
        };
        crate::memory::log_memory(s, "after the planner update");
        let executor_stats = if mode.trains_executor() {
            let temp = self.cfg.rollout.executor.temperature;
            let st =
                self.update_iterations(Policy::Executor, &executor_groups, temp, &mut warnings)?;
            crate::memory::log_memory(s, "after the executor update");
            st
        } else {
            PolicyStats {
                lr: 0.0,
                ..PolicyStats::default()
            }
        };
        self.step = s;
        let dt = t0.elapsed().as_secs_f64();
        self.elapsed_s += dt;
        let mut metrics = self.metrics(
            s,
            &rollouts,
            planner_stats,
            executor_stats,
            gen_tokens,
            rollout_s,
            dt,
        );
        let every = self.cfg.eval.every;
        if self.eval_enabled()
            && (s.is_multiple_of(every) || s == self.cfg.steps || self.budget_exhausted())
        {
            let te = Instant::now();
            match self.evaluate() {
                Ok(e) => metrics.eval = e,
                Err(e) => warnings.push(format!("held-out evaluation failed: {e}")),
            }
            // Evaluation time counts toward the run's time (and `max_minutes`).
            self.elapsed_s += te.elapsed().as_secs_f64();
            metrics.elapsed_s = self.elapsed_s;
        }
        Ok(StepResult {
            metrics,
            trajectories: rollouts.into_iter().map(|r| r.record).collect(),
            warnings,
            waves,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn metrics(
        &self,
        s: u64,
        rollouts: &[TaskRollout],
        planner: PolicyStats,
        executor: PolicyStats,
        gen_tokens: usize,
        rollout_s: f64,
        dt: f64,
    ) -> MetricsRecord {
        let mut plan_r = Vec::new();
        let mut exec_r = Vec::new();
        let mut succ = Vec::new();
        let mut mis = Vec::new();
        let mut sides = SideCounts::default();
        let mut comps: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for r in rollouts {
            mis.push(if r.record.misaligned { 1.0 } else { 0.0 });
            sides.executions += r.sides.executions;
            sides.planner += r.sides.planner;
            sides.executor += r.sides.executor;
            for (pi, p) in r.record.plans.iter().enumerate() {
                if self.cfg.mode.has_plans() {
                    plan_r.push(p.reward.total);
                }
                // In `separate` mode only plan 0 is executed (on the gold sub-tasks).
                if self.cfg.mode == Mode::Separate && pi > 0 {
                    continue;
                }
                // Every execution of the plan counts (`rollout.executions_per_plan`).
                succ.push(if p.success_rate.is_finite() {
                    p.success_rate
                } else if p.success {
                    1.0
                } else {
                    0.0
                });
                for st in &p.steps {
                    for smp in &st.samples {
                        exec_r.push(smp.reward.total);
                    }
                }
            }
            for (k, v) in &r.components {
                let e = comps.entry(k.clone()).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let rate = |n: usize, of: usize| {
            if of == 0 {
                f64::NAN
            } else {
                n as f64 / of as f64
            }
        };
        MetricsRecord {
            step: s,
            planner_reward: mean(&plan_r),
            executor_reward: mean(&exec_r),
            success_rate: mean(&succ),
            misaligned_rate: mean(&mis),
            planner_side_rate: rate(sides.planner, sides.executions),
            executor_side_rate: rate(sides.executor, sides.executions),
            planner,
            executor,
            components: comps
                .into_iter()
                .map(|(k, (s, n))| (k, s / n.max(1) as f64))
                .collect(),
            tokens_per_s: gen_tokens as f64 / rollout_s.max(1e-9),
            elapsed_s: self.elapsed_s,
            step_time_s: dt,
            rollout_s,
            eval: None,
        }
    }

    /// Write both adapters (PEFT), optimizer states and the trainer state into `dir`.
    pub fn save_checkpoint(
        &self,
        dir: &Path,
        planner_dir: &Path,
        executor_dir: &Path,
    ) -> Result<()> {
        let base = self.agent.model_name.as_str();
        self.agent
            .model
            .adapter("planner")?
            .save_peft(planner_dir, base)?;
        self.agent
            .model
            .adapter("executor")?
            .save_peft(executor_dir, base)?;
        self.opt_planner.save(planner_dir)?;
        self.opt_executor.save(executor_dir)?;
        let st = TrainerState {
            step: self.step,
            elapsed_s: self.elapsed_s,
            mode: self.cfg.mode.name().into(),
            seed: self.cfg.seed,
        };
        let text = serde_json::to_string_pretty(&st)?;
        atomic_write(&dir.join("trainer_state.json"), text.as_bytes())?;
        Ok(())
    }

    /// With `[grpo] reference = "init"`: write the frozen reference adapters into
    /// `session/reference/{planner,executor}` (PEFT), so a resumed run compares with the same
    /// policy. Nothing otherwise.
    pub fn save_reference(&self, session: &Path) -> Result<()> {
        if self.cfg.grpo.reference != KlReference::Init {
            return Ok(());
        }
        let dest = session.join("reference");
        let tmp = session.join("reference.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        for name in ["planner", "executor"] {
            self.agent
                .model
                .adapter(&reference_adapter_name(name))?
                .save_peft(&tmp.join(name), &self.agent.model_name)?;
        }
        let io = |path: &Path, source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        };
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
        }
        std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
        Ok(())
    }

    /// With `[grpo] reference = "init"`: load the reference adapters a run saved
    /// ([`Trainer::save_reference`]) from `session/reference`.
    pub fn load_reference(&mut self, session: &Path) -> Result<()> {
        if self.cfg.grpo.reference != KlReference::Init {
            return Ok(());
        }
        for name in ["planner", "executor"] {
            let dir = session.join("reference").join(name);
            self.load_adapter_values(&reference_adapter_name(name), &dir)
                .map_err(|e| {
                    EngineError::load(
                        &dir,
                        format!("the run's KL reference (grpo.reference = \"init\") cannot be restored: {e}"),
                    )
                })?;
        }
        self.reference_prefixes.clear();
        Ok(())
    }

    /// Set the values of the model's adapter `name` from the PEFT folder `dir` (same layout).
    fn load_adapter_values(&self, name: &str, dir: &Path) -> Result<()> {
        let model = &self.agent.model;
        let loaded = crate::model::LoraAdapter::load_peft(
            name,
            dir,
            model.config(),
            model.dtype(),
            model.device(),
        )?;
        model.adapter(name)?.copy_from(&loaded)
    }

    /// Restore adapters, optimizers and the step counter from a checkpoint directory.
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let sp = dir.join("trainer_state.json");
        let text = std::fs::read_to_string(&sp).map_err(|e| EngineError::Io {
            path: sp.clone(),
            source: e,
        })?;
        let st: TrainerState =
            serde_json::from_str(&text).map_err(|e| EngineError::load(&sp, e.to_string()))?;
        let dev = self.agent.model.device().clone();
        for name in ["planner", "executor"] {
            self.load_adapter_values(name, &dir.join(name))?;
        }
        for (name, opt) in [
            ("planner", &mut self.opt_planner),
            ("executor", &mut self.opt_executor),
        ] {
            opt.load(&dir.join(name), &dev)?;
        }
        self.step = st.step;
        self.elapsed_s = st.elapsed_s;
        Ok(())
    }
}

//! Joint GRPO training of planner and executor (CAHL) and its ablations.
//!
//! A [`Trainer`] owns the model with its two adapters, one AdamW per adapter, the world and the
//! task list. Each [`Trainer::step`] rolls out `tasks_per_step` tasks hierarchically, turns the
//! planner's and the executor's samples into GRPO groups, and updates each trained adapter once.
//! All randomness of step `s` derives from `(seed, s)`, so a run resumed from a checkpoint
//! replays the same steps as an uninterrupted run. [`run`] drives a trainer on a background
//! thread, emitting [`TrainEvent`]s and obeying [`TrainCommand`]s.
pub mod config;
pub mod prompts;
pub mod rollout;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use cahl_sessions::events::{RunState, TrainCommand, TrainEvent};
use cahl_sessions::records::{HeldOutEval, MetricsRecord, PolicyStats, TrajectoryRecord};
use cahl_sessions::SessionWriter;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::grpo::{
    completion_logprobs_with, group_advantages, grpo_loss, pack_micro_batches, GrpoBatch,
    GrpoConfig, LossAgg,
};
use crate::lanes::Lanes;
use crate::model::prefix::add_leaf_grads;
use crate::model::{Model, Prefix};
use crate::optim::{AdamW, GradAccum};
use crate::tokenizer::Tokenizer;
use crate::worlds::{Task, World};

pub use config::{Continue, EvalSection, Mode, TrainConfig};
pub use rollout::{
    mix_seed, rollout_task, rollout_task_with, shared_prompt_ids, Group, Policy, Prefixes,
    TaskRollout,
};

/// The model with its tokenizer and chat template.
pub struct Agent {
    pub model: Model,
    pub tok: Tokenizer,
    pub template: ChatTemplate,
    /// Where the model came from (for run info and PEFT's base_model_name_or_path).
    pub model_name: String,
}

impl Agent {
    /// Token ids of a system + user conversation with the generation prompt appended.
    pub fn prompt_ids(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        let text =
            self.template
                .render(&[Message::system(system), Message::user(user)], None, true)?;
        self.tok.encode(&text, false)
    }
}

/// What one step produced.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub metrics: MetricsRecord,
    pub trajectories: Vec<TrajectoryRecord>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    elapsed_s: f64,
    mode: String,
    seed: u64,
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
    world: Box<dyn World>,
    tasks: Vec<Task>,
    opt_planner: AdamW,
    opt_executor: AdamW,
    step: u64,
    elapsed_s: f64,
    eval_tasks: Vec<Task>,
    lanes: Lanes,
    /// The base model's (reference policy's) shared-prompt prefixes, by token ids.
    reference_prefixes: HashMap<Vec<u32>, Prefix>,
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

/// One micro-batch of an update: a group's completions `idx` with their advantages.
struct MicroBatch<'a> {
    group: &'a Group,
    idx: Vec<usize>,
    advs: Vec<f64>,
}

/// What one micro-batch contributes: its gradients and loss statistics (or a skip).
struct MicroOut {
    /// The adapter variables' gradients (see [`GradAccum::pick`]); `None` for a skipped batch.
    grads: Option<Vec<Option<Tensor>>>,
    /// Gradients on the shared prefix's leaves (see [`crate::model::prefix`]).
    leaf_grads: Vec<Option<(Tensor, Tensor)>>,
    loss: f64,
    kl_sum: f64,
    clipped: f64,
    tokens: f64,
}

/// Shared prompt prefixes of one update: the policy's (detached leaves; the graph they came from
/// is dropped and recomputed for the one backward through it at the end of the update, so it is
/// never alive beside a micro-batch's) and the reference model's.
struct UpdatePrefixes<'a> {
    leaves: Prefix,
    reference: Option<&'a Prefix>,
}

/// Forward, GRPO loss and backward of one micro-batch.
#[allow(clippy::too_many_arguments)]
fn micro_batch_grads(
    agent: &Agent,
    adapter: &str,
    gcfg: &GrpoConfig,
    mb: &MicroBatch,
    temperature: f64,
    norm: f64,
    prefixes: Option<&UpdatePrefixes<'_>>,
    vars: &[candle_core::Var],
) -> Result<MicroOut> {
    let g = mb.group;
    let dev = agent.model.device().clone();
    let comps: Vec<&[u32]> = mb
        .idx
        .iter()
        .map(|&i| g.completions[i].tokens.as_slice())
        .collect();
    let l = comps.iter().map(|c| c.len()).max().unwrap_or(0);
    let old: Vec<f32> = mb
        .idx
        .iter()
        .flat_map(|&i| {
            let lp = &g.completions[i].logprobs;
            (0..l).map(move |j| lp.get(j).copied().unwrap_or(0.0))
        })
        .collect();
    // The reference pass first: its activations are freed before the policy's graph is built,
    // so the two never add up in the peak.
    let reference = if gcfg.beta > 0.0 {
        Some(
            completion_logprobs_with(
                &agent.model,
                None,
                prefixes.and_then(|p| p.reference),
                &g.prompt,
                &comps,
                temperature,
                false,
            )?
            .0,
        )
    } else {
        None
    };
    let (lp, mask) = completion_logprobs_with(
        &agent.model,
        Some(adapter),
        prefixes.map(|p| &p.leaves),
        &g.prompt,
        &comps,
        temperature,
        true,
    )?;
    let old = Tensor::from_vec(old, (mb.idx.len(), l), &dev)?.to_dtype(lp.dtype())?;
    let batch = GrpoBatch {
        logprobs: &lp,
        old_logprobs: &old,
        ref_logprobs: reference.as_ref(),
        advantages: &mb.advs,
        mask: &mask,
    };
    let out = grpo_loss(gcfg, &batch, norm)?;
    let lv = out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !lv.is_finite() {
        return Ok(MicroOut {
            grads: None,
            leaf_grads: Vec::new(),
            loss: lv,
            kl_sum: 0.0,
            clipped: 0.0,
            tokens: 0.0,
        });
    }
    // Keep only what the update needs; the store itself (every intermediate's gradient) is
    // dropped here, inside the lane.
    let grads = out.loss.backward()?;
    Ok(MicroOut {
        leaf_grads: prefixes.map_or_else(Vec::new, |p| p.leaves.leaf_grads(&grads)),
        grads: Some(GradAccum::pick(vars, &grads)),
        loss: lv,
        kl_sum: out.kl_sum,
        clipped: out.clipped_tokens,
        tokens: out.tokens,
    })
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
        })
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

    /// Greedy evaluation on the held-out tasks (`None` without any).
    pub fn evaluate(&mut self) -> Result<Option<HeldOutEval>> {
        if self.eval_tasks.is_empty() {
            return Ok(None);
        }
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
        let tools = self.world.tools();
        let prefixes = Prefixes::for_rollouts(&self.agent, &tools, self.cfg.mode)?;
        let (agent, cfg, prefixes) = (&self.agent, &self.cfg, &prefixes);
        let results = self.lanes.map(jobs, |(i, task, mut world)| {
            let seed = mix_seed(&[cfg.seed, s, i as u64]);
            (
                task.id.clone(),
                rollout_task_with(agent, world.as_mut(), &task, cfg, seed, s, prefixes),
            )
        });
        for (id, r) in results {
            match r {
                Ok(r) => rollouts.push(r),
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
                let adv = group_advantages(&g.rewards, scale);
                match g.policy {
                    Policy::Planner => {
                        for (pi, a) in adv.iter().enumerate() {
                            if let Some(p) = r.record.plans.get_mut(pi) {
                                p.advantage = Some(*a);
                            }
                        }
                        planner_groups.push((g.clone(), adv));
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
                        executor_groups.push((g.clone(), adv));
                    }
                }
            }
        }
        let mode = self.cfg.mode;
        log_memory(s, "after rollouts");
        let planner_stats = if mode.trains_planner() && mode != Mode::Flat {
            let temp = self.cfg.rollout.planner.temperature;
            self.update(Policy::Planner, &planner_groups, temp, &mut warnings)?
        } else {
            PolicyStats {
                lr: 0.0,
                ..PolicyStats::default()
            }
        };
        log_memory(s, "after the planner update");
        let executor_stats = if mode.trains_executor() {
            let temp = self.cfg.rollout.executor.temperature;
            let st = self.update(Policy::Executor, &executor_groups, temp, &mut warnings)?;
            log_memory(s, "after the executor update");
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
        let mut comps: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for r in rollouts {
            mis.push(if r.record.misaligned { 1.0 } else { 0.0 });
            for (pi, p) in r.record.plans.iter().enumerate() {
                if self.cfg.mode != Mode::Flat {
                    plan_r.push(p.reward.total);
                }
                // In `separate` mode only plan 0 is executed (on the gold sub-tasks).
                if self.cfg.mode == Mode::Separate && pi > 0 {
                    continue;
                }
                succ.push(if p.success { 1.0 } else { 0.0 });
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
        MetricsRecord {
            step: s,
            planner_reward: mean(&plan_r),
            executor_reward: mean(&exec_r),
            success_rate: mean(&succ),
            misaligned_rate: mean(&mis),
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

    /// One GRPO update of `policy` over its groups (gradient accumulation per micro-batch).
    /// `groups` pairs each group with its advantages (see [`group_advantages`]).
    pub fn update(
        &mut self,
        policy: Policy,
        groups: &[(Group, Vec<f64>)],
        temperature: f64,
        warnings: &mut Vec<String>,
    ) -> Result<PolicyStats> {
        let gcfg = self.cfg.grpo.clone();
        let adapter = policy.adapter();
        let (vars, lr) = match policy {
            Policy::Planner => (self.opt_planner.vars().to_vec(), self.opt_planner.cfg.lr),
            Policy::Executor => (self.opt_executor.vars().to_vec(), self.opt_executor.cfg.lr),
        };
        // Groups whose advantages are all zero carry no policy gradient; without a KL term they
        // are skipped entirely.
        let useful: Vec<&(Group, Vec<f64>)> = groups
            .iter()
            .filter(|(g, a)| {
                !g.completions.is_empty() && (gcfg.beta > 0.0 || a.iter().any(|x| *x != 0.0))
            })
            .collect();
        let norm = match gcfg.loss_agg {
            LossAgg::TokenMean => useful
                .iter()
                .flat_map(|(g, _)| g.completions.iter().map(|c| c.tokens.len()))
                .sum::<usize>() as f64,
            LossAgg::SequenceMean => useful
                .iter()
                .map(|(g, _)| g.completions.len())
                .sum::<usize>() as f64,
        };
        let mut stats = PolicyStats {
            lr,
            ..PolicyStats::default()
        };
        if useful.is_empty() || norm == 0.0 {
            stats.loss = 0.0;
            stats.kl = 0.0;
            stats.clip_frac = 0.0;
            stats.grad_norm = 0.0;
            return Ok(stats);
        }
        let mut accum = GradAccum::new(vars.clone());
        let (mut loss_sum, mut kl_sum, mut clipped, mut toks) = (0.0, 0.0, 0.0, 0.0);
        // The system prompt every group's prompt starts with runs once for the policy (its
        // gradient flows back once, below) and once for the reference.
        let shared =
            rollout::shared_prompt_ids(&self.agent, &self.world.tools(), policy, self.cfg.mode)?;
        let mut prefix_rng = None;
        let prefixes = if shared.len() >= crate::model::prefix::MIN_PREFIX {
            // The base model never changes during training: its prefix is computed once.
            if gcfg.beta > 0.0 && !self.reference_prefixes.contains_key(&shared) {
                let p = Prefix::build(&self.agent.model, None, &shared, false)?;
                self.reference_prefixes.insert(shared.clone(), p);
            }
            // Built with a graph (the same kernels as the recomputation below, so the leaves
            // hold exactly the values that graph produces), detached, and the graph dropped.
            // With LoRA dropout the recomputation must draw the same masks: the dropout RNG's
            // state before this build is kept for it.
            prefix_rng = self.agent.model.adapter(adapter)?.dropout_rng_state();
            let graph = Prefix::build(&self.agent.model, Some(adapter), &shared, true)?;
            let leaves = graph.detached()?;
            drop(graph);
            Some(UpdatePrefixes {
                leaves,
                reference: self
                    .reference_prefixes
                    .get(&shared)
                    .filter(|_| gcfg.beta > 0.0),
            })
        } else {
            None
        };
        let mut leaf_grads = Vec::new();
        let mut batches = Vec::new();
        let mut most_tokens = 0;
        for (g, adv) in useful {
            let lens: Vec<usize> = g.completions.iter().map(|c| c.tokens.len()).collect();
            // Prompt positions a micro-batch runs itself (those of the shared prefix come
            // from its cache).
            let shared_len = prefixes
                .as_ref()
                .and_then(|p| p.leaves.reusable_len(&g.prompt))
                .unwrap_or(0);
            let tail = g.prompt.len() - shared_len;
            for idx in pack_micro_batches(&lens, tail, gcfg.micro_batch, gcfg.micro_batch_tokens) {
                let longest = idx.iter().map(|&i| lens[i]).max().unwrap_or(0);
                most_tokens = most_tokens.max(tail + idx.len() * longest);
                batches.push(MicroBatch {
                    group: g,
                    advs: idx.iter().map(|&i| adv[i]).collect(),
                    idx,
                });
            }
        }
        tracing::debug!(
            policy = adapter,
            micro_batches = batches.len(),
            most_tokens,
            prefix = shared.len(),
            "update"
        );
        // Micro-batches run side by side in waves of one per lane; their gradients are summed
        // in micro-batch order, so the sum does not depend on the number of lanes, and at most
        // one gradient per lane is held at a time.
        let (agent, pre) = (&self.agent, prefixes.as_ref());
        for wave in batches.chunks(self.lanes.len()) {
            let outs = self.lanes.map(wave.iter().collect(), |mb| {
                micro_batch_grads(agent, adapter, &gcfg, mb, temperature, norm, pre, &vars)
            });
            for out in outs {
                let out = out?;
                match out.grads {
                    None => {
                        warnings.push(format!(
                            "{adapter}: non-finite loss in a micro-batch; update skipped"
                        ));
                        stats.skipped = true;
                    }
                    Some(grads) => {
                        accum.add_picked(grads)?;
                        add_leaf_grads(&mut leaf_grads, out.leaf_grads)?;
                        loss_sum += out.loss;
                        kl_sum += out.kl_sum;
                        clipped += out.clipped;
                        toks += out.tokens;
                    }
                }
            }
        }
        // The shared prefix's share of the gradient, through its graph, once: the prefix is
        // recomputed with a graph now (activation checkpointing of the prefix), after every
        // micro-batch's activations are gone.
        if prefixes.is_some() && !stats.skipped && leaf_grads.iter().any(Option::is_some) {
            drop(prefixes);
            let ad = self.agent.model.adapter(adapter)?;
            let after = ad.dropout_rng_state();
            if let Some(r) = prefix_rng.take() {
                ad.set_dropout_rng_state(r);
            }
            let graph = Prefix::build(&self.agent.model, Some(adapter), &shared, true)?;
            if let Some(r) = after {
                // Later draws continue as if the prefix had been built once.
                ad.set_dropout_rng_state(r);
            }
            if let Some(g) = graph.backward_into(&leaf_grads)? {
                accum.add(&g)?;
            }
        }
        stats.loss = loss_sum;
        stats.kl = kl_sum / toks.max(1.0);
        stats.clip_frac = clipped / toks.max(1.0);
        if stats.skipped {
            stats.grad_norm = f64::NAN;
            return Ok(stats);
        }
        let opt = match policy {
            Policy::Planner => &mut self.opt_planner,
            Policy::Executor => &mut self.opt_executor,
        };
        let info = opt.step(accum.grads())?;
        stats.grad_norm = info.grad_norm;
        if info.skipped {
            stats.skipped = true;
            warnings.push(format!(
                "{adapter}: non-finite gradient norm; update skipped"
            ));
        }
        Ok(stats)
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
        let text =
            serde_json::to_string_pretty(&st).map_err(|e| EngineError::Other(e.to_string()))?;
        crate::util::atomic_write(&dir.join("trainer_state.json"), text.as_bytes())
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
        let dtype = self.agent.model.dtype();
        for (name, opt) in [
            ("planner", &mut self.opt_planner),
            ("executor", &mut self.opt_executor),
        ] {
            let adir = dir.join(name);
            let loaded = crate::model::LoraAdapter::load_peft(
                name,
                &adir,
                self.agent.model.config(),
                dtype,
                &dev,
            )?;
            self.agent.model.adapter(name)?.copy_from(&loaded)?;
            opt.load(&adir, &dev)?;
        }
        self.step = st.step;
        self.elapsed_s = st.elapsed_s;
        Ok(())
    }
}

/// Reopen session `dir` for `--resume`: repair torn JSONL tails, load the latest checkpoint into
/// `trainer` and drop records of steps after it (they are re-run identically). Returns the writer
/// and the step the run continues from.
pub fn resume_session(trainer: &mut Trainer, dir: &Path) -> Result<(SessionWriter, u64)> {
    let (mut w, report) =
        SessionWriter::resume(dir).map_err(|e| EngineError::Other(e.to_string()))?;
    for r in &report.repairs {
        tracing::warn!("repaired torn tail: {r:?}");
    }
    match report.latest_checkpoint {
        Some(ck) => {
            let p = dir.join(&ck.path);
            let p = if p.exists() {
                p
            } else {
                std::path::PathBuf::from(&ck.path)
            };
            trainer.load_checkpoint(&p)?;
            w.truncate_after_step(ck.step)
                .map_err(|e| EngineError::Other(e.to_string()))?;
            Ok((w, ck.step))
        }
        None => {
            w.clear_records()
                .map_err(|e| EngineError::Other(e.to_string()))?;
            Ok((w, 0))
        }
    }
}

/// Drive `trainer` to `cfg.steps`, writing the session and emitting events; obeys commands.
/// Returns when done, stopped, or after repeated step failures (reported as events).
pub fn run(
    mut trainer: Trainer,
    mut writer: Option<SessionWriter>,
    events: Sender<TrainEvent>,
    commands: Receiver<TrainCommand>,
) -> Result<()> {
    crate::model::ops::init_cpu_float_mode();
    let total = trainer.cfg.steps;
    let send = |e: TrainEvent| {
        let _ = events.send(e);
    };
    let save = |trainer: &Trainer,
                writer: &mut Option<SessionWriter>|
     -> Result<Option<cahl_sessions::records::CheckpointRecord>> {
        let Some(w) = writer.as_mut() else {
            return Ok(None);
        };
        let tmp = w
            .checkpoint_dir(trainer.steps_done())
            .map_err(|e| EngineError::Other(e.to_string()))?;
        let (pd, ed) = (tmp.planner_dir(), tmp.executor_dir());
        trainer.save_checkpoint(tmp.path(), &pd, &ed)?;
        let rec = w
            .commit_checkpoint(tmp)
            .map_err(|e| EngineError::Other(e.to_string()))?;
        Ok(Some(rec))
    };
    let mut paused = false;
    let mut failures = 0;
    let mut stopped = false;
    let mut last_ckpt = None;
    if trainer.steps_done() == 0 && trainer.eval_enabled() {
        // Baseline (step 0): the untrained adapters on the held-out tasks.
        send(TrainEvent::Progress {
            step: 0,
            phase: "baseline evaluation".into(),
            tokens_per_s: f64::NAN,
            memory_bytes: crate::memory::current_rss_bytes(),
        });
        match trainer.evaluate() {
            Ok(Some(ev)) => {
                let m = MetricsRecord {
                    step: 0,
                    elapsed_s: 0.0,
                    eval: Some(ev),
                    ..MetricsRecord::default()
                };
                if let Some(wr) = writer.as_mut() {
                    if let Err(e) = wr.append_metrics(&m) {
                        send(TrainEvent::Error(format!("writing metrics: {e}")));
                    }
                }
                send(TrainEvent::Metrics(m));
            }
            Ok(None) => {}
            Err(e) => send(TrainEvent::Warning(format!(
                "baseline evaluation failed: {e}"
            ))),
        }
    }
    while trainer.steps_done() < total && !trainer.budget_exhausted() {
        // Commands: drain without blocking; block while paused.
        loop {
            let cmd = if paused {
                match commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => Some(TrainCommand::Stop),
                }
            } else {
                commands.try_recv().ok()
            };
            let Some(cmd) = cmd else { break };
            match cmd {
                TrainCommand::Pause => {
                    paused = true;
                    send(TrainEvent::Status {
                        state: RunState::Paused,
                        message: "paused".into(),
                    });
                }
                TrainCommand::Resume => {
                    paused = false;
                    send(TrainEvent::Status {
                        state: RunState::Running,
                        message: "resumed".into(),
                    });
                }
                TrainCommand::SaveCheckpoint => match save(&trainer, &mut writer) {
                    Ok(Some(rec)) => send(TrainEvent::Checkpoint(rec)),
                    Ok(None) => send(TrainEvent::Warning(
                        "no session directory: nothing saved".into(),
                    )),
                    Err(e) => send(TrainEvent::Error(format!("checkpoint failed: {e}"))),
                },
                TrainCommand::Stop => {
                    stopped = true;
                    send(TrainEvent::Status {
                        state: RunState::Stopping,
                        message: "stopping".into(),
                    });
                    break;
                }
            }
            if !paused {
                break;
            }
        }
        if stopped {
            break;
        }
        match trainer.step() {
            Ok(res) => {
                failures = 0;
                for w in &res.warnings {
                    tracing::warn!("{w}");
                    send(TrainEvent::Warning(w.clone()));
                }
                if let Some(wr) = writer.as_mut() {
                    for t in &res.trajectories {
                        if let Err(e) = wr.append_trajectory(t) {
                            send(TrainEvent::Error(format!("writing trajectory: {e}")));
                        }
                    }
                    if let Err(e) = wr.append_metrics(&res.metrics) {
                        send(TrainEvent::Error(format!("writing metrics: {e}")));
                    }
                }
                for t in res.trajectories {
                    send(TrainEvent::Trajectory(Box::new(t)));
                }
                send(TrainEvent::Progress {
                    step: res.metrics.step,
                    phase: "step done".into(),
                    tokens_per_s: res.metrics.tokens_per_s,
                    memory_bytes: crate::memory::current_rss_bytes(),
                });
                send(TrainEvent::Metrics(res.metrics));
            }
            Err(e) => {
                failures += 1;
                tracing::error!("step {} failed: {e}", trainer.steps_done() + 1);
                send(TrainEvent::Error(format!(
                    "step {} failed: {e}",
                    trainer.steps_done() + 1
                )));
                if failures >= 3 {
                    send(TrainEvent::Finished {
                        step: trainer.steps_done(),
                        completed: false,
                        checkpoint: last_ckpt.clone(),
                        message: format!("stopped after 3 consecutive failed steps: {e}"),
                    });
                    return Err(e);
                }
                continue;
            }
        }
        let every = trainer.cfg.checkpoint_every;
        if every > 0 && trainer.steps_done().is_multiple_of(every) && trainer.steps_done() < total {
            match save(&trainer, &mut writer) {
                Ok(Some(rec)) => {
                    last_ckpt = Some(rec.clone());
                    send(TrainEvent::Checkpoint(rec));
                }
                Ok(None) => {}
                Err(e) => send(TrainEvent::Error(format!("checkpoint failed: {e}"))),
            }
        }
    }
    // Final checkpoint (also when stopped).
    match save(&trainer, &mut writer) {
        Ok(Some(rec)) => {
            last_ckpt = Some(rec.clone());
            send(TrainEvent::Checkpoint(rec));
        }
        Ok(None) => {}
        Err(e) => send(TrainEvent::Error(format!("final checkpoint failed: {e}"))),
    }
    if let Some(w) = writer.take() {
        if let Err(e) = w.close() {
            send(TrainEvent::Error(format!("closing session: {e}")));
        }
    }
    send(TrainEvent::Status {
        state: RunState::Finished,
        message: "finished".into(),
    });
    send(TrainEvent::Finished {
        step: trainer.steps_done(),
        completed: !stopped,
        checkpoint: last_ckpt,
        message: if stopped {
            "stopped by user".into()
        } else {
            "completed".into()
        },
    });
    Ok(())
}

/// Greedy success of the current adapters on held-out tasks (one plan, one executor sample per
/// sub-task), as `[eval]` reports it during training and `pretrain` during pre-training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QuickEval {
    pub tasks: usize,
    pub successes: usize,
    pub planner_reward: f64,
    pub executor_reward: f64,
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
    c.rollout.planner.greedy = true;
    c.rollout.executor.greedy = true;
    c.rollout.plans_per_task = 1;
    c.rollout.samples_per_step = 1;
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
    let results = lanes.map(jobs, |(i, t, mut w)| {
        rollout_task_with(
            agent,
            w.as_mut(),
            t,
            c,
            mix_seed(&[c.seed, 7, i as u64]),
            0,
            prefixes,
        )
    });
    for r in results {
        let r = r?;
        out.tasks += 1;
        out.successes += r.record.success as usize;
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

/// Current and peak RSS at a point of step `step`, at debug level (`CAHL_LOG=debug`).
fn log_memory(step: u64, at: &str) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let mb = |b: Option<u64>| b.map_or(-1.0, |b| b as f64 / 1e6);
        tracing::debug!(
            step,
            rss_mb = mb(crate::memory::current_rss_bytes()),
            peak_mb = mb(crate::memory::peak_rss_bytes()),
            "memory {at}"
        );
    }
}

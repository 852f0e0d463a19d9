//! One GRPO update of one adapter: micro-batches (gradient accumulation), the shared prompt
//! prefix recomputed once for its backward, clipping of the gradient norm, the optimizer step.
use cahl_sessions::records::PolicyStats;
use candle_core::{DType, Tensor};

use crate::agent::Agent;
use crate::error::Result;
use crate::grpo::{
    completion_logprobs_with, grpo_loss, pack_micro_batches, reference_adapter_name, Advantages,
    GrpoBatch, GrpoConfig, KlReference, LossAgg, SeqAdvantage,
};
use crate::model::prefix::add_leaf_grads;
use crate::model::Prefix;
use crate::optim::GradAccum;

use super::rollout::{self, Group, Policy};
use super::trainer::Trainer;

/// One micro-batch of an update: a group's completions `idx` with their advantages.
struct MicroBatch<'a> {
    group: &'a Group,
    idx: Vec<usize>,
    advs: Vec<SeqAdvantage>,
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
        let ref_name = match gcfg.reference {
            KlReference::Base => None,
            KlReference::Init => Some(reference_adapter_name(adapter)),
        };
        Some(
            completion_logprobs_with(
                &agent.model,
                ref_name.as_deref(),
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
    // One advantage per completion unless some completion has segments of its own.
    let uniform: Option<Vec<f64>> = mb
        .advs
        .iter()
        .map(|a| match a {
            SeqAdvantage::Uniform(x) => Some(*x),
            SeqAdvantage::PerToken(_) => None,
        })
        .collect();
    let per_token = match uniform {
        Some(_) => None,
        None => {
            let v: Vec<f32> = mb
                .advs
                .iter()
                .flat_map(|a| (0..l).map(move |j| a.at(j) as f32))
                .collect();
            Some(Tensor::from_vec(v, (mb.idx.len(), l), &dev)?)
        }
    };
    let advantages = match &per_token {
        Some(t) => Advantages::PerToken(t),
        None => Advantages::PerSequence(uniform.as_deref().unwrap_or(&[])),
    };
    let batch = GrpoBatch {
        logprobs: &lp,
        old_logprobs: &old,
        ref_logprobs: reference.as_ref(),
        advantages,
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
    /// `grpo.iterations` (mu) GRPO updates of `policy` on the same groups, each against the
    /// sampling-time log-probs. The stats are means over the updates (loss, KL, clip fraction,
    /// gradient norm); `skipped` when any update was.
    pub fn update_iterations(
        &mut self,
        policy: Policy,
        groups: &[(Group, Vec<SeqAdvantage>)],
        temperature: f64,
        warnings: &mut Vec<String>,
    ) -> Result<PolicyStats> {
        let mu = self.cfg.grpo.iterations.max(1);
        let mut all = Vec::with_capacity(mu);
        for _ in 0..mu {
            all.push(self.update(policy, groups, temperature, warnings)?);
        }
        // Means over the updates that produced the value (a skipped one has no gradient norm).
        let avg = |f: fn(&PolicyStats) -> f64| {
            let v: Vec<f64> = all.iter().map(f).filter(|x| x.is_finite()).collect();
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        Ok(PolicyStats {
            loss: avg(|s| s.loss),
            kl: avg(|s| s.kl),
            grad_norm: avg(|s| s.grad_norm),
            lr: all[0].lr,
            clip_frac: avg(|s| s.clip_frac),
            skipped: all.iter().any(|s| s.skipped),
        })
    }

    /// One GRPO update of `policy` over its groups (gradient accumulation per micro-batch).
    /// `groups` pairs each group with its advantages (see [`group_advantages`]).
    pub fn update(
        &mut self,
        policy: Policy,
        groups: &[(Group, Vec<SeqAdvantage>)],
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
        let useful: Vec<&(Group, Vec<SeqAdvantage>)> = groups
            .iter()
            .filter(|(g, a)| {
                !g.completions.is_empty() && (gcfg.beta > 0.0 || a.iter().any(|x| !x.is_zero()))
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
            // The reference never changes during training: its prefix is computed once.
            let ref_key = (adapter.to_string(), shared.clone());
            if gcfg.beta > 0.0 && !self.reference_prefixes.contains_key(&ref_key) {
                let ref_name = match gcfg.reference {
                    KlReference::Base => None,
                    KlReference::Init => Some(reference_adapter_name(adapter)),
                };
                let p = Prefix::build(&self.agent.model, ref_name.as_deref(), &shared, false)?;
                self.reference_prefixes.insert(ref_key.clone(), p);
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
                    .get(&ref_key)
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
                    advs: idx.iter().map(|&i| adv[i].clone()).collect(),
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
            self.updates[policy as usize].rejected += 1;
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
            self.updates[policy as usize].rejected += 1;
            warnings.push(if info.non_finite_weights {
                format!("{adapter}: the update would make weights non-finite; rolled back")
            } else {
                format!("{adapter}: non-finite gradient norm; update skipped")
            });
        } else {
            self.updates[policy as usize].applied += 1;
        }
        Ok(stats)
    }
}

//! GRPO: group-normalised advantages, teacher-forced log-probs, and the clipped-ratio loss with
//! a k3 KL penalty to the reference policy (the base model without adapter).
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::model::kernels::token_logprobs;
use crate::model::ops::log_softmax;
use crate::model::{AdapterRef, Model, Prefix};

/// How per-token losses are reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossAgg {
    /// Sum over all tokens of the batch / number of tokens (DAPO, TRL's "dapo"/"bnpo").
    TokenMean,
    /// Mean over each sequence's tokens, then mean over sequences (original GRPO).
    SequenceMean,
}

/// What the KL term compares a policy with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlReference {
    /// The base model without adapters (TRL's reference with a PEFT model).
    #[default]
    Base,
    /// The policy as the run started (e.g. the sft adapters of `--init-adapters`), kept frozen.
    Init,
}

/// The name of the frozen copy of adapter `policy` that [`KlReference::Init`] compares with.
pub fn reference_adapter_name(policy: &str) -> String {
    format!("{policy}-reference")
}

/// GRPO hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    /// KL coefficient (k3 estimator against the reference, see `reference`). 0 skips the
    /// reference pass.
    pub beta: f64,
    /// The KL term's reference policy.
    pub reference: KlReference,
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    /// Divide advantages by the group's standard deviation (false = Dr.GRPO).
    pub scale_rewards: bool,
    pub loss_agg: LossAgg,
    /// Sequences per forward/backward micro-batch (gradient accumulation bounds memory).
    pub micro_batch: usize,
    /// Tokens per micro-batch run with a graph (the prompt's unshared tail once, plus every
    /// completion padded to the micro-batch's longest); 0 = no token limit. Bounds the update's
    /// activation memory whatever lengths a step samples (verl's dynamic batch size). A single
    /// sequence longer than this runs alone.
    pub micro_batch_tokens: usize,
    /// Updates per rollout batch (GRPO's mu, TRL's `num_iterations`, verl's `ppo_epochs`). The
    /// sampling-time log-probs are the old policy throughout, so from the second update on the
    /// ratio moves away from 1 and clipping acts.
    pub iterations: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            beta: 0.04,
            reference: KlReference::Base,
            epsilon_low: 0.2,
            epsilon_high: 0.28,
            scale_rewards: true,
            loss_agg: LossAgg::TokenMean,
            micro_batch: 4,
            micro_batch_tokens: 320,
            iterations: 2,
        }
    }
}

/// Split one group's completions into micro-batches. `lens[i]` is completion `i`'s length
/// (completions of length 0 are left out); `tail` is the number of prompt tokens a micro-batch
/// runs besides its completions. Completions are taken shortest first (less padding) and packed
/// greedily: a micro-batch holds at most `max_seqs` of them and, when `max_tokens > 0`, at most
/// `max_tokens` tokens counted as `tail + n * longest`; a completion that alone exceeds the
/// token limit gets a micro-batch of its own. Returns completion indices per micro-batch.
pub fn pack_micro_batches(
    lens: &[usize],
    tail: usize,
    max_seqs: usize,
    max_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).filter(|&i| lens[i] > 0).collect();
    order.sort_by_key(|&i| lens[i]);
    let max_seqs = max_seqs.max(1);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending: `lens[i]` is the longest of `cur` plus `i`.
        let tokens = tail + (cur.len() + 1) * lens[i];
        let over = max_tokens > 0 && tokens > max_tokens;
        if !cur.is_empty() && (cur.len() == max_seqs || over) {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Group-normalised advantages: `(r - mean)`, divided by `(std + 1e-4)` when `scale_std`.
/// The std is the sample (Bessel-corrected) std, as `torch.std` in TRL; a group of one gets 0.
pub fn group_advantages(rewards: &[f64], scale_std: bool) -> Vec<f64> {
    let n = rewards.len();
    if n == 0 {
        return vec![];
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    rewards
        .iter()
        .map(|r| {
            let a = r - mean;
            if scale_std {
                a / (std + 1e-4)
            } else {
                a
            }
        })
        .collect()
}

/// Advantages per index across a group: `returns[i][t]` of member `i` (StepTool: the return of
/// step `t`; IH-GRPO: the reward of call `t`) is compared with the values at index `t` of every
/// member that has one (mean subtracted, divided by the
/// sample std + 1e-4 when `scale_std`, as [`group_advantages`]). An index only one member has gets 0.
pub fn per_index_advantages(returns: &[Vec<f64>], scale_std: bool) -> Vec<Vec<f64>> {
    let longest = returns.iter().map(Vec::len).max().unwrap_or(0);
    let mut out: Vec<Vec<f64>> = returns.iter().map(|r| vec![0.0; r.len()]).collect();
    for t in 0..longest {
        let who: Vec<usize> = (0..returns.len())
            .filter(|&i| t < returns[i].len())
            .collect();
        let vals: Vec<f64> = who.iter().map(|&i| returns[i][t]).collect();
        let adv = group_advantages(&vals, scale_std);
        for (&i, a) in who.iter().zip(adv) {
            out[i][t] = if who.len() > 1 { a } else { 0.0 };
        }
    }
    out
}

/// Per-token log-probs `(G, L)` (f32) of `completions` following a shared `prompt`, and the
/// mask `(G, L)` of real (non-padding) positions. With `train` the result carries a graph
/// through the adapter's variables. The prompt is run once at batch 1 and its keys/values are
/// shared by the group. Logits are divided by `temperature` as in sampling.
pub fn completion_logprobs(
    model: &Model,
    adapter: AdapterRef,
    prompt: &[u32],
    completions: &[&[u32]],
    temperature: f64,
    train: bool,
) -> Result<(Tensor, Tensor)> {
    completion_logprobs_with(
        model,
        adapter,
        None,
        prompt,
        completions,
        temperature,
        train,
    )
}

/// [`completion_logprobs`] where the prompt's leading positions shared with `prefix` (computed
/// under the same adapter) come from its cache instead of being recomputed. With a
/// [`Prefix::detached`] prefix, gradients stop at its leaves (see [`crate::model::prefix`]).
pub fn completion_logprobs_with(
    model: &Model,
    adapter: AdapterRef,
    prefix: Option<&Prefix>,
    prompt: &[u32],
    completions: &[&[u32]],
    temperature: f64,
    train: bool,
) -> Result<(Tensor, Tensor)> {
    let (pred, ids, mask) = completion_hidden(model, adapter, prefix, prompt, completions, train)?;
    let (g, l, hdim) = pred.dims3()?;
    let lp = row_logprobs(
        model,
        &pred.reshape((g * l, hdim))?,
        &ids,
        temperature,
        train,
    )?;
    let mask = Tensor::from_vec(mask, (g, l), model.device())?.to_dtype(lp.dtype())?;
    Ok((lp.reshape((g, l))?, mask))
}

/// Log-probs `(N,)` (temperature 1) of chosen positions of `completions` after `prompt`:
/// `positions` are `(completion, index)` pairs. The language-model head runs on those rows
/// alone; `sft` scores the completion part of sequences whose unshared prompt tails are passed
/// as part of the completions, which would otherwise get logits (a `(tokens, vocabulary)`
/// tensor kept for the backward pass) for every prompt token.
pub fn completion_logprobs_at(
    model: &Model,
    adapter: AdapterRef,
    prompt: &[u32],
    completions: &[&[u32]],
    positions: &[(usize, usize)],
    train: bool,
) -> Result<Tensor> {
    let (pred, ids, _) = completion_hidden(model, adapter, None, prompt, completions, train)?;
    let (g, l, hdim) = pred.dims3()?;
    if positions.is_empty() {
        return Err(EngineError::Invalid(
            "completion_logprobs_at: no positions".into(),
        ));
    }
    let mut rows = Vec::with_capacity(positions.len());
    let mut targets = Vec::with_capacity(positions.len());
    for &(i, j) in positions {
        if i >= g || j >= completions[i].len() {
            return Err(EngineError::Invalid(format!(
                "completion_logprobs_at: position ({i}, {j}) is outside the completions"
            )));
        }
        rows.push((i * l + j) as u32);
        targets.push(ids[i * l + j]);
    }
    let n = rows.len();
    let rows = Tensor::from_vec(rows, n, model.device())?;
    let picked = pred.reshape((g * l, hdim))?.index_select(&rows, 0)?;
    row_logprobs(model, &picked, &targets, 1.0, train)
}

/// The hidden states that predict each completion token `(G, L, h)`, the token ids `G * L`
/// (padding 0) and the mask of real positions.
fn completion_hidden(
    model: &Model,
    adapter: AdapterRef,
    prefix: Option<&Prefix>,
    prompt: &[u32],
    completions: &[&[u32]],
    train: bool,
) -> Result<(Tensor, Vec<u32>, Vec<f32>)> {
    let g = completions.len();
    let l = completions.iter().map(|c| c.len()).max().unwrap_or(0);
    if g == 0 || l == 0 || prompt.is_empty() {
        return Err(EngineError::Invalid(
            "completion_logprobs needs a prompt and non-empty completions".into(),
        ));
    }
    let dev = model.device();
    // The shared part of the prompt comes from `prefix`; the rest runs here.
    let (mut cache, start) = match prefix.and_then(|p| p.reusable_len(prompt).map(|n| (p, n))) {
        Some((p, n)) => (p.cache_for(n)?, n),
        None => (model.new_cache(), 0),
    };
    let mut ids = Vec::with_capacity(g * l);
    let mut mask = Vec::with_capacity(g * l);
    for c in completions {
        for j in 0..l {
            ids.push(c.get(j).copied().unwrap_or(0));
            mask.push(if j < c.len() { 1f32 } else { 0f32 });
        }
    }
    let tail = prompt.len() - start;
    let pred = if g == 1 {
        // One sequence: prompt tail and completion in one pass (larger matmuls, same math).
        let mut seq = prompt[start..].to_vec();
        seq.extend_from_slice(&ids[..l - 1]);
        let h = model.forward_hidden(
            &model.ids_tensor(&seq, 1)?,
            start,
            &mut cache,
            adapter,
            train,
        )?;
        h.narrow(1, tail - 1, l)? // (1, L, h)
    } else {
        let p_ids = model.ids_tensor(&prompt[start..], 1)?;
        let hp = model.forward_hidden(&p_ids, start, &mut cache, adapter, train)?; // (1, P', h)
        let hdim = hp.dim(2)?;
        let last_p = hp.narrow(1, tail - 1, 1)?; // (1, 1, h)
        if l > 1 {
            let c_ids = Tensor::from_vec(ids.clone(), (g, l), dev)?;
            let mut gcache = cache.expand_batch(g)?;
            let inp = c_ids.narrow(1, 0, l - 1)?;
            let hc = model.forward_hidden(&inp, prompt.len(), &mut gcache, adapter, train)?; // (G, L-1, h)
            let lp = last_p.broadcast_as((g, 1, hdim))?;
            Tensor::cat(&[&lp, &hc], 1)?
        } else {
            last_p.broadcast_as((g, 1, hdim))?.contiguous()?
        }
    };
    Ok((pred, ids, mask))
}

/// Log-probs `(N,)` of `targets` under the logits of `hidden` `(N, h)`, divided by
/// `temperature` as in sampling.
fn row_logprobs(
    model: &Model,
    hidden: &Tensor,
    targets: &[u32],
    temperature: f64,
    train: bool,
) -> Result<Tensor> {
    let logits = model.logits(hidden, train)?;
    let logits = match logits.dtype() {
        DType::F16 | DType::BF16 => logits.to_dtype(DType::F32)?,
        _ => logits,
    };
    let temp = if temperature > 0.0 { temperature } else { 1.0 };
    if let Some(lp) = token_logprobs(&logits, targets, temp)? {
        return Ok(lp);
    }
    let logits = if (temperature - 1.0).abs() > 1e-12 && temperature > 0.0 {
        (logits / temperature)?
    } else {
        logits
    };
    let lsm = log_softmax(&logits)?;
    let n = targets.len();
    let t = Tensor::from_vec(targets.to_vec(), n, logits.device())?;
    Ok(lsm
        .gather(&t.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?)
}

/// Inputs of the GRPO loss for one micro-batch of `G` sequences padded to `L` tokens.
pub struct GrpoBatch<'a> {
    /// New-policy log-probs `(G, L)` with a graph.
    pub logprobs: &'a Tensor,
    /// Sampling-policy log-probs `(G, L)`.
    pub old_logprobs: &'a Tensor,
    /// Reference log-probs `(G, L)`; required when beta > 0.
    pub ref_logprobs: Option<&'a Tensor>,
    pub advantages: Advantages<'a>,
    pub mask: &'a Tensor,
}

/// The advantages of a micro-batch: one per sequence (GRPO: every token of a completion gets
/// its completion's), or one per token (segments of a completion with their own advantages, as
/// StepTool's turns and IH-GRPO's plan and call segments have).
#[derive(Debug, Clone, Copy)]
pub enum Advantages<'a> {
    /// `G` values.
    PerSequence(&'a [f64]),
    /// A `(G, L)` tensor; padding positions are masked anyway.
    PerToken(&'a Tensor),
}

impl<'a> From<&'a [f64]> for Advantages<'a> {
    fn from(v: &'a [f64]) -> Self {
        Advantages::PerSequence(v)
    }
}

impl<'a> From<&'a Vec<f64>> for Advantages<'a> {
    fn from(v: &'a Vec<f64>) -> Self {
        Advantages::PerSequence(v.as_slice())
    }
}

/// One completion's advantage: the same for all its tokens, or one per token (a completion
/// made of segments with advantages of their own).
#[derive(Debug, Clone, PartialEq)]
pub enum SeqAdvantage {
    Uniform(f64),
    PerToken(Vec<f64>),
}

impl SeqAdvantage {
    /// Whether it carries no policy gradient.
    pub fn is_zero(&self) -> bool {
        match self {
            SeqAdvantage::Uniform(a) => *a == 0.0,
            SeqAdvantage::PerToken(v) => v.iter().all(|a| *a == 0.0),
        }
    }
    /// The advantage of token `j` (0 past the end).
    pub fn at(&self, j: usize) -> f64 {
        match self {
            SeqAdvantage::Uniform(a) => *a,
            SeqAdvantage::PerToken(v) => v.get(j).copied().unwrap_or(0.0),
        }
    }
    /// The mean over `len` tokens (what a trace shows as the completion's advantage).
    pub fn mean(&self, len: usize) -> f64 {
        match self {
            SeqAdvantage::Uniform(a) => *a,
            SeqAdvantage::PerToken(v) => {
                let n = len.min(v.len());
                if n == 0 {
                    0.0
                } else {
                    v[..n].iter().sum::<f64>() / n as f64
                }
            }
        }
    }
}

/// Loss value (with graph) and statistics of one micro-batch.
pub struct GrpoLoss {
    pub loss: Tensor,
    /// Masked sums, to be divided by the normaliser for reporting.
    pub kl_sum: f64,
    pub clipped_tokens: f64,
    pub tokens: f64,
}

/// The GRPO objective for a micro-batch. `norm` is the normaliser of the *whole* batch so that
/// micro-batch losses add up to the full-batch loss: the total token count for token-mean, the
/// total sequence count for sequence-mean.
pub fn grpo_loss(cfg: &GrpoConfig, b: &GrpoBatch, norm: f64) -> Result<GrpoLoss> {
    let (g, l) = b.logprobs.dims2()?;
    let dev = b.logprobs.device();
    let adv = match b.advantages {
        Advantages::PerSequence(a) => {
            if a.len() != g {
                return Err(EngineError::Invalid(
                    "advantages do not match the batch".into(),
                ));
            }
            Tensor::from_vec(a.iter().map(|&a| a as f32).collect::<Vec<_>>(), (g, 1), dev)?
                .to_dtype(b.logprobs.dtype())?
        }
        Advantages::PerToken(t) => {
            if t.dims2()? != (g, l) {
                return Err(EngineError::Invalid(format!(
                    "per-token advantages {:?} do not match the batch ({g}, {l})",
                    t.dims()
                )));
            }
            t.to_dtype(b.logprobs.dtype())?.detach()
        }
    };
    // Differences are masked before exp so padding can never produce inf * 0.
    let ratio = ((b.logprobs - b.old_logprobs)? * b.mask)?.exp()?;
    let clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)?;
    let s1 = ratio.broadcast_mul(&adv)?;
    let s2 = clipped.broadcast_mul(&adv)?;
    let mut per_tok = s1.minimum(&s2)?.neg()?;
    let mut kl_sum = 0.0;
    if cfg.beta > 0.0 {
        let r = b
            .ref_logprobs
            .ok_or_else(|| EngineError::Invalid("beta > 0 needs reference log-probs".into()))?;
        let d = ((r - b.logprobs)? * b.mask)?;
        let kl = ((d.exp()? - &d)? - 1.0)?;
        kl_sum = (kl.detach() * b.mask)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        per_tok = (per_tok + (kl * cfg.beta)?)?;
    }
    let masked = (per_tok * b.mask)?;
    let loss = match cfg.loss_agg {
        LossAgg::TokenMean => (masked.sum_all()? / norm)?,
        LossAgg::SequenceMean => {
            let lens = b.mask.sum(1)?.clamp(1.0, f64::MAX)?;
            ((masked.sum(1)? / lens)?.sum_all()? / norm)?
        }
    };
    // Tokens where the clipped term is the active one (ratio outside the trust region in the
    // direction the advantage pushes).
    let clip_mask = s2.lt(&s1)?.to_dtype(b.mask.dtype())?;
    let clipped_tokens = (clip_mask * b.mask)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let tokens = b.mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(GrpoLoss {
        loss,
        kl_sum,
        clipped_tokens,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::pack_micro_batches;

    #[test]
    fn packing_by_count_takes_shortest_first_and_skips_empty() {
        let lens = [5, 0, 3, 9, 1, 7];
        assert_eq!(
            pack_micro_batches(&lens, 10, 2, 0),
            vec![vec![4, 2], vec![0, 5], vec![3]]
        );
    }

    #[test]
    fn packing_by_tokens_respects_the_limit() {
        // tail 10: [1] 11, [1,3] 16, [1,3,5] 25 > 20 -> new batch.
        let lens = [5, 3, 1, 9, 7];
        let mbs = pack_micro_batches(&lens, 10, 8, 20);
        assert_eq!(mbs, vec![vec![2, 1], vec![0], vec![4], vec![3]]);
        for mb in &mbs {
            let longest = mb.iter().map(|&i| lens[i]).max().unwrap();
            let cost = 10 + mb.len() * longest;
            assert!(mb.len() == 1 || cost <= 20, "{mb:?} costs {cost}");
        }
        // Every non-empty completion appears exactly once.
        let mut all: Vec<usize> = mbs.concat();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_sequence_over_the_limit_runs_alone() {
        assert_eq!(
            pack_micro_batches(&[50, 2, 60], 0, 4, 40),
            vec![vec![1], vec![0], vec![2]]
        );
        assert!(pack_micro_batches(&[0, 0], 5, 4, 40).is_empty());
    }
}

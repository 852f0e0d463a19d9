//! The one supervised loop ([`sft_run`]) behind both pretraining and adapter SFT, with its
//! learning-rate schedule.
use std::time::Instant;

use candle_core::{DType, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::data::Role;
use super::examples::{role_batches, SftExample};
use super::loss::sft_loss;
use crate::error::{EngineError, Result};
use crate::model::{AdapterRef, Model};
use crate::optim::{AdamW, AdamWConfig, GradAccum};

/// Progress of a supervised run, reported every step.
#[derive(Debug, Clone, Serialize)]
pub struct SftProgress {
    pub step: usize,
    pub steps: usize,
    pub role: Role,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub elapsed_s: f64,
    /// Greedy dev-task success rate when this step evaluated.
    pub dev_success: Option<f64>,
}

/// Cosine schedule with linear warm-up, down to 10% of the peak.
pub fn lr_at(step: usize, steps: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps.saturating_sub(warmup)).max(1) as f64;
    let c = 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos());
    peak * (0.1 + 0.9 * c)
}

/// Tokens (prompt and completion) a micro-batch of [`sft_run`] holds at most; a longer
/// example is a micro-batch of its own.
pub const MICRO_TOKENS: usize = 2048;

/// Consecutive runs of `refs` of at most `budget` tokens each (at least one example each).
pub fn micro_batches<'a, 'b>(
    refs: &'b [&'a SftExample],
    budget: usize,
) -> Vec<&'b [&'a SftExample]> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, e) in refs.iter().enumerate() {
        let len = e.prompt.len() + e.completion.len();
        if i > start && used + len > budget {
            out.push(&refs[start..i]);
            (start, used) = (i, 0);
        }
        used += len;
    }
    if start < refs.len() {
        out.push(&refs[start..]);
    }
    out
}

/// One supervised run over `examples` updating `vars` (the base for pretraining, or an
/// adapter's variables with `adapter` set). `on_step` sees progress and may evaluate; it
/// returns the dev success it measured, if any. Non-finite losses skip the update.
#[allow(clippy::too_many_arguments)]
pub fn sft_run(
    model: &Model,
    adapter: AdapterRef,
    named: Vec<(String, Var)>,
    examples: &[SftExample],
    opt_cfg: AdamWConfig,
    steps: usize,
    batch: usize,
    warmup: usize,
    max_minutes: f64,
    seed: u64,
    mut on_step: impl FnMut(&Model, &SftProgress) -> Result<Option<f64>>,
) -> Result<Vec<SftProgress>> {
    if examples.is_empty() {
        return Err(EngineError::Invalid("no training examples".into()));
    }
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let peak = opt_cfg.lr;
    let mut opt = AdamW::new(named, opt_cfg)?;
    let mut accum = GradAccum::new(vars);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut queue: Vec<Vec<usize>> = Vec::new();
    let t0 = Instant::now();
    let mut log = Vec::new();
    for step in 0..steps {
        if max_minutes > 0.0 && t0.elapsed().as_secs_f64() > max_minutes * 60.0 {
            break;
        }
        if queue.is_empty() {
            queue = role_batches(examples, batch, &mut rng);
            queue.reverse();
        }
        let Some(b) = queue.pop() else { break };
        let refs: Vec<&SftExample> = b.iter().map(|&i| &examples[i]).collect();
        // The batch's token-mean loss, accumulated over micro-batches of at most
        // MICRO_TOKENS tokens (one forward and backward each), so that long conversations do
        // not hold the activations of the whole batch at once.
        let total: usize = refs.iter().map(|e| e.completion.len()).sum();
        let mut lv = 0.0;
        let mut n = 0;
        for chunk in micro_batches(&refs, MICRO_TOKENS) {
            let (loss, nc) = sft_loss(model, adapter, chunk, true)?;
            let share = nc as f64 / total.max(1) as f64;
            let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            lv += l * share;
            n += nc;
            if l.is_finite() {
                let grads = (loss * share)?.backward()?;
                accum.add(&grads)?;
            }
        }
        let lr = lr_at(step, steps, warmup, peak);
        let mut gn = f64::NAN;
        if lv.is_finite() {
            opt.set_lr(lr);
            let info = opt.step(accum.grads())?;
            gn = info.grad_norm;
            accum.clear();
        } else {
            accum.clear();
            tracing::warn!(step, "non-finite SFT loss; update skipped");
        }
        let mut p = SftProgress {
            step: step + 1,
            steps,
            role: refs[0].role,
            loss: lv,
            lr,
            grad_norm: gn,
            tokens: n,
            elapsed_s: t0.elapsed().as_secs_f64(),
            dev_success: None,
        };
        p.dev_success = on_step(model, &p)?;
        log.push(p);
    }
    Ok(log)
}

//! Seeded sampling of G completions of one prompt, sharing the prompt's KV cache, and of
//! several such groups decoded together ([`sample_many`]).
//!
//! The prompt is prefilled once at batch 1; its cache is then repeated for the group and all
//! rows decode in one batch. Each row draws from its own ChaCha8 stream derived from
//! `(seed, stream index)`, so a (seed, prompt, weights) triple replays exactly and a batched
//! group equals the same rows sampled one by one.
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::SampleRequest;
use crate::error::{EngineError, Result};
use crate::model::{AdapterRef, KvCache, Model, Prefix};

/// Sampling settings (vLLM / TRL names where they exist).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    pub temperature: f64,
    /// Nucleus mass; 1.0 disables.
    pub top_p: f64,
    /// 0 disables.
    pub top_k: usize,
    pub max_tokens: usize,
    /// Generation stops once the text contains one of these; the stop string is kept in the
    /// returned text and tokens (so format checks can see closing tags).
    pub stop: Vec<String>,
    /// Argmax decoding (ignores temperature / top-p / top-k for choosing tokens).
    pub greedy: bool,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: 128,
            stop: Vec::new(),
            greedy: false,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    Stop,
    Length,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub text: String,
    /// Log-probability of each sampled token under the sampling policy: the model's
    /// distribution at `temperature` (1.0 when greedy), before top-p/top-k truncation. These
    /// are GRPO's "old" log-probs; the trainer scores with the same temperature.
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// Decoding hooks the sampler needs from a tokenizer.
pub trait Detok: Sync {
    fn decode(&self, ids: &[u32]) -> String;
    fn is_eos(&self, id: u32) -> bool;
}

/// Derive the RNG of stream `i` of seed `seed`.
pub fn stream_rng(seed: u64, i: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(i);
    r
}

/// Pick a token from f32 logits; returns (token, logprob under the sampling policy).
pub fn pick_token(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> (u32, f32) {
    let temp = if p.greedy || p.temperature <= 0.0 {
        1.0
    } else {
        p.temperature
    } as f32;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lse = 0f64;
    for &l in logits {
        lse += (((l - max) / temp) as f64).exp();
    }
    let lse = lse.ln() as f32;
    let logp = |i: usize| (logits[i] - max) / temp - lse;
    if p.greedy || p.temperature <= 0.0 {
        let mut best = 0usize;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return (best as u32, logp(best));
    }
    if p.top_k == 0 && p.top_p >= 1.0 {
        // No truncation: inverse-CDF over the unsorted distribution (no sort needed).
        let probs: Vec<f64> = (0..logits.len())
            .map(|i| {
                if logits[i].is_finite() {
                    (logp(i) as f64).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = probs.iter().sum();
        let u: f64 = rng.random::<f64>() * total;
        let mut c = 0.0;
        let mut last = 0;
        for (i, pr) in probs.iter().enumerate() {
            if *pr > 0.0 {
                last = i;
                c += pr;
                if u < c {
                    return (i as u32, logp(i));
                }
            }
        }
        return (last as u32, logp(last));
    }
    if p.top_k == 0 {
        return pick_nucleus(logits, p.top_p, &logp, rng);
    }
    let mut idx: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite())
        .collect();
    if idx.is_empty() {
        return (0, f32::NEG_INFINITY);
    }
    let order = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if p.top_k < idx.len() {
        // Partial selection of the k best, then a sort of those k only.
        idx.select_nth_unstable_by(p.top_k - 1, order);
        idx.truncate(p.top_k);
    }
    idx.sort_unstable_by(order);
    let probs: Vec<f64> = idx.iter().map(|&i| (logp(i) as f64).exp()).collect();
    let mut keep = probs.len();
    if p.top_p < 1.0 {
        let mut c = 0.0;
        for (n, pr) in probs.iter().enumerate() {
            c += pr;
            if c >= p.top_p {
                keep = n + 1;
                break;
            }
        }
    }
    let total: f64 = probs[..keep].iter().sum();
    let u: f64 = rng.random::<f64>() * total;
    let mut c = 0.0;
    for n in 0..keep {
        c += probs[n];
        if u < c {
            return (idx[n] as u32, logp(idx[n]));
        }
    }
    (idx[keep - 1] as u32, logp(idx[keep - 1]))
}

/// Buckets of the logit range used to find the nucleus boundary without sorting.
const NUCLEUS_BUCKETS: usize = 4096;

/// Top-p sampling without sorting the vocabulary. The nucleus is the smallest prefix of the
/// tokens ordered by (logit descending, id ascending) whose mass reaches `top_p`. A histogram of
/// the mass over equal-width logit buckets finds the bucket holding the boundary; only that
/// bucket is sorted. The boundary token `(l*, i*)` then defines membership as
/// `l > l* || (l == l* && i <= i*)`, and the token is drawn by inverse CDF over the members in
/// id order.
fn pick_nucleus(
    logits: &[f32],
    top_p: f64,
    logp: &dyn Fn(usize) -> f32,
    rng: &mut ChaCha8Rng,
) -> (u32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &l in logits {
        if l.is_finite() {
            lo = lo.min(l);
            hi = hi.max(l);
        }
    }
    if lo > hi {
        return (0, f32::NEG_INFINITY);
    }
    let probs: Vec<f64> = (0..logits.len())
        .map(|i| {
            if logits[i].is_finite() {
                (logp(i) as f64).exp()
            } else {
                0.0
            }
        })
        .collect();
    let scale = if hi > lo {
        (NUCLEUS_BUCKETS - 1) as f64 / (hi - lo) as f64
    } else {
        0.0
    };
    let bucket = |l: f32| (((l - lo) as f64 * scale) as usize).min(NUCLEUS_BUCKETS - 1);
    let mut mass = vec![0f64; NUCLEUS_BUCKETS];
    for (i, &l) in logits.iter().enumerate() {
        if l.is_finite() {
            mass[bucket(l)] += probs[i];
        }
    }
    // Walk buckets from the highest logits down to the one where the mass reaches top_p.
    let mut above = 0.0;
    let mut boundary = 0;
    for b in (0..NUCLEUS_BUCKETS).rev() {
        if mass[b] > 0.0 {
            boundary = b;
            if above + mass[b] >= top_p {
                break;
            }
            above += mass[b];
        }
    }
    let mut edge: Vec<usize> = (0..logits.len())
        .filter(|&i| logits[i].is_finite() && bucket(logits[i]) == boundary)
        .collect();
    edge.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let mut cut = *edge.last().unwrap_or(&0);
    let mut c = above;
    for &i in &edge {
        c += probs[i];
        if c >= top_p {
            cut = i;
            break;
        }
    }
    let cut_l = logits[cut];
    let member = |i: usize| {
        let l = logits[i];
        l.is_finite() && (l > cut_l || (l == cut_l && i <= cut))
    };
    let total: f64 = (0..logits.len())
        .filter(|&i| member(i))
        .map(|i| probs[i])
        .sum();
    let u: f64 = rng.random::<f64>() * total;
    let mut c = 0.0;
    let mut last = cut;
    for (i, &pr) in probs.iter().enumerate() {
        if member(i) {
            last = i;
            c += pr;
            if u < c {
                return (i as u32, logp(i));
            }
        }
    }
    (last as u32, logp(last))
}

/// Sample `g` completions of `prompt` with the given adapter (None = base model). Row `i` uses
/// RNG stream `first_stream + i`.
pub fn sample_group(
    model: &Model,
    adapter: AdapterRef,
    prompt: &[u32],
    g: usize,
    first_stream: u64,
    params: &SamplingParams,
    detok: &dyn Detok,
) -> Result<Vec<Completion>> {
    sample_group_with(model, adapter, None, prompt, g, first_stream, params, detok)
}

/// [`sample_group`] where the prompt's leading positions shared with `prefix` (computed under
/// the same adapter and weights) come from its cache: only the rest of the prompt is prefilled.
#[allow(clippy::too_many_arguments)]
pub fn sample_group_with(
    model: &Model,
    adapter: AdapterRef,
    prefix: Option<&Prefix>,
    prompt: &[u32],
    g: usize,
    first_stream: u64,
    params: &SamplingParams,
    detok: &dyn Detok,
) -> Result<Vec<Completion>> {
    let req = SampleRequest {
        adapter,
        prefix,
        prompt,
        g,
        first_stream,
        params,
    };
    Ok(sample_many(model, &[req], detok)?.pop().unwrap_or_default())
}

/// Several groups decoded together: every request's prompt is prefilled once (reusing its
/// prefix), then all rows of all requests decode as one batch per adapter, each row stopping on
/// its own (EOS, its request's stop strings or `max_tokens`). Prompts of different lengths are
/// right-aligned in one cache with their padding masked ([`KvCache::admit`]). Row `i`
/// of a request draws from stream `first_stream + i` of its own seed, so a row's tokens depend
/// on the other rows only through floating-point rounding of the batched products. Returns
/// each request's completions, in request order.
pub fn sample_many(
    model: &Model,
    reqs: &[SampleRequest<'_>],
    detok: &dyn Detok,
) -> Result<Vec<Vec<Completion>>> {
    let mut out: Vec<Vec<Completion>> = vec![Vec::new(); reqs.len()];
    let mut adapters: Vec<AdapterRef> = Vec::new();
    for r in reqs {
        if r.prompt.is_empty() {
            return Err(EngineError::Invalid(
                "cannot sample from an empty prompt".into(),
            ));
        }
        if !adapters.contains(&r.adapter) {
            adapters.push(r.adapter);
        }
    }
    for adapter in adapters {
        let idx: Vec<usize> = (0..reqs.len())
            .filter(|&i| reqs[i].adapter == adapter && reqs[i].g > 0)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let group: Vec<&SampleRequest> = idx.iter().map(|&i| &reqs[i]).collect();
        for (i, comps) in idx
            .into_iter()
            .zip(decode_together(model, adapter, &group, detok)?)
        {
            out[i] = comps;
        }
    }
    Ok(out)
}

/// Where a batched decode's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchTiming {
    /// Seconds prefilling the prompts (their parts not in a prefix cache), one by one.
    pub prefill_s: f64,
    /// Prompt tokens prefilled.
    pub prefill_tokens: usize,
    /// Seconds of batched decode steps (choosing tokens included).
    pub decode_s: f64,
    /// Batched decode steps (forward passes of all active rows).
    pub decode_steps: usize,
}

impl BatchTiming {
    pub fn add(&mut self, o: &BatchTiming) {
        self.prefill_s += o.prefill_s;
        self.prefill_tokens += o.prefill_tokens;
        self.decode_s += o.decode_s;
        self.decode_steps += o.decode_steps;
    }
}

/// [`sample_many`] for requests of one adapter, each with `g > 0`.
fn decode_together(
    model: &Model,
    adapter: AdapterRef,
    reqs: &[&SampleRequest<'_>],
    detok: &dyn Detok,
) -> Result<Vec<Vec<Completion>>> {
    let mut dec = RowDecoder::new(model, adapter, detok);
    let admit: Vec<(u64, &SampleRequest)> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64, *r))
        .collect();
    if let Some((_, e)) = dec.admit(&admit)?.into_iter().next() {
        return Err(e);
    }
    let mut out: Vec<Vec<Completion>> = vec![Vec::new(); reqs.len()];
    while !dec.is_idle() {
        for (i, comps) in dec.step()? {
            out[i as usize] = comps;
        }
    }
    Ok(out)
}

/// One decoding row: a completion being sampled.
struct Row {
    /// Its request's id (see [`RowDecoder::admit`]) and its index in the request's group.
    owner: u64,
    index: usize,
    /// Tokens of its prompt (the position of its first generated token).
    prompt_len: usize,
    rng: ChaCha8Rng,
    out: Completion,
    /// Next-token logits (from the prefill or the last step).
    logits: Vec<f32>,
}

struct Owner {
    params: SamplingParams,
    left: usize,
    done: Vec<Option<Completion>>,
}

/// Leading padding every row shares is dropped once it is at least this long.
const TRIM: usize = 64;

/// Continuous batched decoding under one adapter: requests join at any step
/// ([`RowDecoder::admit`]: prefilled, then right-aligned into the running cache), every step
/// decodes one token of every row ([`RowDecoder::step`]), and a request is handed back as soon
/// as all its rows have stopped. Row `i` of a request draws from stream `first_stream + i` of
/// its own seed, so a row's tokens depend on the other rows only through the rounding of the
/// batched products.
pub struct RowDecoder<'a> {
    model: &'a Model,
    adapter: Option<String>,
    detok: &'a dyn Detok,
    cache: KvCache,
    /// Leading padding of each row, in batch order.
    pads: Vec<usize>,
    rows: Vec<Row>,
    owners: std::collections::HashMap<u64, Owner>,
    pub timing: BatchTiming,
}

impl<'a> RowDecoder<'a> {
    pub fn new(model: &'a Model, adapter: AdapterRef, detok: &'a dyn Detok) -> Self {
        RowDecoder {
            model,
            adapter: adapter.map(String::from),
            detok,
            cache: model.new_cache(),
            pads: Vec::new(),
            rows: Vec::new(),
            owners: Default::default(),
            timing: BatchTiming::default(),
        }
    }

    /// The adapter the rows decode under.
    pub fn adapter(&self) -> AdapterRef<'_> {
        self.adapter.as_deref()
    }

    /// Rows decoding.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// No row decoding and no request waiting to be handed back.
    pub fn is_idle(&self) -> bool {
        self.rows.is_empty() && self.owners.is_empty()
    }

    /// Prefill the requests (each under its prefix, at batch 1) and add their rows, with ids
    /// to hand them back by. A request that cannot be prefilled (an empty prompt, another
    /// adapter, a prompt longer than the model's positions) is left out and returned with its
    /// error; the others are admitted. `Err` only when the running cache cannot take the rows.
    pub fn admit(&mut self, reqs: &[(u64, &SampleRequest<'_>)]) -> Result<Vec<(u64, EngineError)>> {
        let t0 = std::time::Instant::now();
        let adapter = self.adapter.as_deref();
        let mut caches = Vec::with_capacity(reqs.len());
        let mut firsts = Vec::with_capacity(reqs.len());
        let mut failed = Vec::new();
        let mut ok = Vec::with_capacity(reqs.len());
        for &(id, r) in reqs {
            let prefilled = (|| -> Result<Option<(KvCache, Vec<f32>, usize)>> {
                if r.prompt.is_empty() {
                    return Err(EngineError::Invalid(
                        "cannot sample from an empty prompt".into(),
                    ));
                }
                if r.adapter != adapter {
                    return Err(EngineError::Invalid(format!(
                        "a request for adapter {:?} in a batch of {adapter:?}",
                        r.adapter
                    )));
                }
                if r.g == 0 || r.params.max_tokens == 0 {
                    return Ok(None);
                }
                let (mut cache, start) = match r
                    .prefix
                    .and_then(|p| p.reusable_len(r.prompt).map(|n| (p, n)))
                {
                    Some((p, n)) => (p.cache_for(n)?, n),
                    None => (self.model.new_cache(), 0),
                };
                let ids = self.model.ids_tensor(&r.prompt[start..], 1)?;
                let last = self.model.forward_last(&ids, start, &mut cache, adapter)?; // (1, V)
                Ok(Some((cache, last.squeeze(0)?.to_vec1::<f32>()?, start)))
            })();
            match prefilled {
                Err(e) => failed.push((id, e)),
                Ok(None) => {
                    caches.push(None);
                    firsts.push(Vec::new());
                    ok.push((id, r));
                }
                Ok(Some((cache, first, start))) => {
                    caches.push(Some(cache));
                    firsts.push(first);
                    ok.push((id, r));
                    self.timing.prefill_tokens += r.prompt.len() - start;
                }
            }
        }
        let reqs = ok;
        let extra = reqs
            .iter()
            .map(|(_, r)| r.params.max_tokens)
            .max()
            .unwrap_or(0);
        let parts: Vec<(&KvCache, usize)> = caches
            .iter()
            .zip(&reqs)
            .filter_map(|(c, (_, r))| c.as_ref().map(|c| (c, r.g)))
            .collect();
        if !parts.is_empty() {
            self.cache.admit(&mut self.pads, &parts, extra)?;
        }
        for (((id, r), first), cache) in reqs.iter().zip(firsts).zip(&caches) {
            let mut owner = Owner {
                params: r.params.clone(),
                left: r.g,
                done: vec![None; r.g],
            };
            if cache.is_none() {
                // Nothing to decode: empty completions.
                owner.done = (0..r.g)
                    .map(|_| {
                        Some(Completion {
                            tokens: vec![],
                            text: String::new(),
                            logprobs: vec![],
                            finish: FinishReason::Length,
                        })
                    })
                    .collect();
                owner.left = 0;
            } else {
                for i in 0..r.g {
                    self.rows.push(Row {
                        owner: *id,
                        index: i,
                        prompt_len: r.prompt.len(),
                        rng: stream_rng(r.params.seed, r.first_stream + i as u64),
                        out: Completion {
                            tokens: vec![],
                            text: String::new(),
                            logprobs: vec![],
                            finish: FinishReason::Length,
                        },
                        logits: first.clone(),
                    });
                }
            }
            if self.owners.insert(*id, owner).is_some() {
                return Err(EngineError::Invalid(format!(
                    "request id {id} admitted twice"
                )));
            }
        }
        self.timing.prefill_s += t0.elapsed().as_secs_f64();
        Ok(failed)
    }

    /// Choose the next token of every row, retire the rows that stopped (EOS, a stop string,
    /// `max_tokens`) and run the rest one position on. Returns the requests whose rows have
    /// all stopped, with their completions in row order.
    pub fn step(&mut self) -> Result<Vec<(u64, Vec<Completion>)>> {
        let t0 = std::time::Instant::now();
        {
            // Each row owns its RNG, so the choice does not depend on scheduling.
            use rayon::prelude::*;
            let owners = &self.owners;
            self.rows.par_iter_mut().for_each(|row| {
                if let Some(o) = owners.get(&row.owner) {
                    let (tok, lp) = pick_token(&row.logits, &o.params, &mut row.rng);
                    row.out.tokens.push(tok);
                    row.out.logprobs.push(lp);
                }
            });
        }
        let max_pos = self.model.max_positions();
        let mut keep = Vec::with_capacity(self.rows.len());
        let mut finished = Vec::new();
        for (j, row) in self.rows.iter_mut().enumerate() {
            let Some(o) = self.owners.get(&row.owner) else {
                continue;
            };
            let Some(&tok) = row.out.tokens.last() else {
                continue;
            };
            let params = &o.params;
            let mut done = false;
            if self.detok.is_eos(tok) {
                done = true;
                row.out.finish = FinishReason::Eos;
            } else if !params.stop.is_empty() {
                let text = self.detok.decode(&row.out.tokens);
                if let Some(cut) = params
                    .stop
                    .iter()
                    .filter_map(|s| text.find(s.as_str()).map(|at| at + s.len()))
                    .min()
                {
                    done = true;
                    row.out.finish = FinishReason::Stop;
                    row.out.text = text[..cut].to_string();
                }
            }
            // At `max_tokens`, or where the model's positions end (finish: length).
            if !done
                && (row.out.tokens.len() >= params.max_tokens
                    || row.prompt_len + row.out.tokens.len() >= max_pos)
            {
                done = true;
            }
            if done {
                finished.push(j);
            } else {
                keep.push(j);
            }
        }
        // Retire finished rows (in reverse, so indices stay valid).
        for &j in finished.iter().rev() {
            let mut row = self.rows.remove(j);
            if row.out.finish != FinishReason::Stop {
                row.out.text = self.detok.decode(&row.out.tokens);
            }
            if let Some(o) = self.owners.get_mut(&row.owner) {
                o.done[row.index] = Some(row.out);
                o.left -= 1;
            }
        }
        if keep.is_empty() {
            self.cache = self.model.new_cache();
            self.pads.clear();
        } else {
            if !finished.is_empty() {
                let sel: Vec<u32> = keep.iter().map(|&j| j as u32).collect();
                self.cache.select_rows(&sel)?;
                self.pads = keep.iter().map(|&j| self.pads[j]).collect();
                let common = self.pads.iter().copied().min().unwrap_or(0);
                if common >= TRIM {
                    self.cache.drop_front(common)?;
                    for p in self.pads.iter_mut() {
                        *p -= common;
                    }
                }
            }
            let next: Vec<u32> = self
                .rows
                .iter()
                .map(|r| *r.out.tokens.last().unwrap_or(&0))
                .collect();
            let pos: Vec<usize> = self
                .rows
                .iter()
                .map(|r| r.prompt_len + r.out.tokens.len() - 1)
                .collect();
            let adapter = self.adapter.as_deref();
            let l = if self.pads.iter().all(|&p| p == 0) && pos.iter().all(|&p| p == pos[0]) {
                // All rows at one position (one prompt, or prompts of one length).
                let ids = Tensor::from_vec(next, (self.rows.len(), 1), self.model.device())?;
                self.model
                    .forward_last(&ids, pos[0], &mut self.cache, adapter)?
            } else {
                self.model
                    .forward_last_rows(&next, &pos, &self.pads, &mut self.cache, adapter)?
            };
            let logits = l.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            for (row, lg) in self.rows.iter_mut().zip(logits) {
                row.logits = lg;
            }
            self.timing.decode_steps += 1;
        }
        let ready: Vec<u64> = {
            let mut v: Vec<u64> = self
                .owners
                .iter()
                .filter(|(_, o)| o.left == 0)
                .map(|(id, _)| *id)
                .collect();
            v.sort_unstable();
            v
        };
        let mut out = Vec::with_capacity(ready.len());
        for id in ready {
            if let Some(o) = self.owners.remove(&id) {
                out.push((id, o.done.into_iter().flatten().collect()));
            }
        }
        self.timing.decode_s += t0.elapsed().as_secs_f64();
        Ok(out)
    }
}

impl Detok for crate::tokenizer::Tokenizer {
    fn decode(&self, ids: &[u32]) -> String {
        crate::tokenizer::Tokenizer::decode(self, ids, true).unwrap_or_default()
    }
    fn is_eos(&self, id: u32) -> bool {
        self.eos_ids().contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nucleus by the definition: sort by (logit desc, id asc), keep the shortest prefix
    /// whose probability mass reaches top_p.
    fn reference_nucleus(logits: &[f32], top_p: f64) -> Vec<u32> {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let mut c = 0.0;
        let mut out = Vec::new();
        for i in idx {
            out.push(i as u32);
            c += ((logits[i] - max) as f64).exp() / z;
            if c >= top_p {
                break;
            }
        }
        out.sort();
        out
    }

    fn drawn(logits: &[f32], top_p: f64) -> Vec<u32> {
        let p = SamplingParams {
            top_p,
            ..Default::default()
        };
        let mut seen: Vec<u32> = (0..3000)
            .map(|s| pick_token(logits, &p, &mut stream_rng(7, s)).0)
            .collect();
        seen.sort();
        seen.dedup();
        seen
    }

    #[test]
    fn nucleus_without_sort_matches_the_sorted_definition() {
        // Distinct logits with a long flat tail, ties at the boundary, and -inf entries.
        let spread: Vec<f32> = (0..500).map(|i| ((i * 37 % 101) as f32) * 0.05).collect();
        let mut tied = vec![0.0f32; 40];
        tied[3] = 2.0;
        tied[17] = 2.0;
        let mut masked: Vec<f32> = (0..60).map(|i| (i as f32 * 0.3).sin() * 3.0).collect();
        masked[5] = f32::NEG_INFINITY;
        masked[9] = f32::NEG_INFINITY;
        for (logits, top_p) in [
            (spread.as_slice(), 0.3),
            (tied.as_slice(), 0.2),
            (tied.as_slice(), 0.35),
            (masked.as_slice(), 0.5),
        ] {
            let want = reference_nucleus(logits, top_p);
            let got = drawn(logits, top_p);
            assert!(
                got.iter().all(|t| want.contains(t)),
                "sampled outside the nucleus: {got:?} vs {want:?}"
            );
            if want.len() <= 30 {
                assert_eq!(got, want, "every nucleus member should be drawn");
            }
        }
    }
}

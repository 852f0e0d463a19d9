//! Speed and memory benchmark of the model paths (`cahl-tui bench`). Numbers are reported,
//! never asserted. (Device/dtype names: [`crate::device`]; memory readings: [`crate::memory`].)
use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::grpo::completion_logprobs;
use crate::model::{LoraConfig, Model};
use crate::optim::GradAccum;
use crate::sampling::{sample_group, Detok, SamplingParams};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub batches: Vec<usize>,
    pub train_seq: usize,
    pub train_batches: Vec<usize>,
    /// Tokens of the training figure's shared prompt (default: half of `train_seq`); each of
    /// the batch's completions has the rest.
    pub train_prompt: Option<usize>,
    pub repeats: usize,
    pub lora: LoraConfig,
    /// Nucleus mass used in the decode figures (1.0 = no truncation).
    pub top_p: f64,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            prompt_tokens: 128,
            decode_tokens: 32,
            batches: vec![1, 8],
            train_seq: 128,
            train_batches: vec![1],
            train_prompt: None,
            repeats: 3,
            top_p: 0.9,
            lora: LoraConfig {
                r: 8,
                lora_alpha: 16.0,
                lora_dropout: 0.0,
                target_modules: vec![
                    "q_proj".into(),
                    "k_proj".into(),
                    "v_proj".into(),
                    "o_proj".into(),
                ],
            },
        }
    }
}

/// One measured figure (median of the repeats).
#[derive(Debug, Clone, Serialize)]
pub struct BenchFigure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub runs: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub params: usize,
    pub dtype: String,
    pub threads: usize,
    /// The CPU kernels' path (`avx512`, `avx2`, `scalar`; see `kernels::cpu_path`).
    pub kernels: String,
    /// Which causal attention prefill and training use: `blocked from N keys`, `blocked`
    /// (every length) or `matrix` (see `model::flash`).
    pub attention: String,
    pub figures: Vec<BenchFigure>,
    /// Peak resident memory of the process (VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Bytes of base weights read per decode step and the implied floor at the given bandwidth.
    pub weight_bytes: u64,
}

struct NoStop;
impl Detok for NoStop {
    fn decode(&self, _: &[u32]) -> String {
        String::new()
    }
    fn is_eos(&self, _: u32) -> bool {
        false
    }
}

/// Fewest generated tokens per sequence for a decode figure.
pub const MIN_DECODE_TOKENS: usize = 4;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Run the benchmark on `model` (adds a `bench` adapter).
pub fn run(
    model: &mut Model,
    name: &str,
    opts: &BenchOpts,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    if !opts.batches.is_empty() && opts.decode_tokens < MIN_DECODE_TOKENS {
        return Err(crate::error::EngineError::Invalid(format!(
            "bench: --decode-tokens must be at least {MIN_DECODE_TOKENS} (got {}): decode speed \
             is the sampling time less a separately timed prefill, and fewer tokens leave only \
             the noise of that difference",
            opts.decode_tokens
        )));
    }
    model.add_adapter("bench", &opts.lora, 1)?;
    // Make LoRA B non-zero so the adapter path does real work.
    for (k, v) in model.adapter("bench")?.named_vars() {
        if k.ends_with("lora_B.weight") {
            v.set(&(v.as_tensor().ones_like()? * 1e-3)?)?;
        }
    }
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..opts.prompt_tokens as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let reps = opts.repeats.max(1);
    let mut figures = Vec::new();
    // Warm-up.
    let _ = model.forward_last(
        &model.ids_tensor(&prompt[..8.min(prompt.len())], 1)?,
        0,
        &mut model.new_cache(),
        Some("bench"),
    )?;

    progress("prefill");
    let mut runs = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let _ = model.forward_last(
            &model.ids_tensor(&prompt, 1)?,
            0,
            &mut model.new_cache(),
            Some("bench"),
        )?;
        runs.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
    }
    figures.push(BenchFigure {
        name: format!("prefill 1x{}", prompt.len()),
        value: median(&mut runs.clone()),
        unit: "tok/s".into(),
        runs,
    });

    let params = SamplingParams {
        temperature: 1.0,
        top_p: opts.top_p,
        max_tokens: opts.decode_tokens,
        seed: 1,
        ..Default::default()
    };
    for &b in &opts.batches {
        progress(&format!("decode batch {b}"));
        let mut runs = Vec::new();
        for r in 0..reps {
            // Time decode only: measure prefill separately and subtract.
            let t0 = Instant::now();
            let _ = model.forward_last(
                &model.ids_tensor(&prompt, 1)?,
                0,
                &mut model.new_cache(),
                Some("bench"),
            )?;
            let pre = t0.elapsed().as_secs_f64();
            let t = Instant::now();
            let out = sample_group(
                model,
                Some("bench"),
                &prompt,
                b,
                r as u64 * 100,
                &params,
                &NoStop,
            )?;
            let dt = (t.elapsed().as_secs_f64() - pre).max(1e-9);
            let toks: usize = out.iter().map(|c| c.tokens.len()).sum();
            runs.push(toks as f64 / dt);
        }
        figures.push(BenchFigure {
            name: format!("decode batch {b} (total)"),
            value: median(&mut runs.clone()),
            unit: "tok/s".into(),
            runs,
        });
    }

    let vars = model.adapter("bench")?.vars();
    for &b in &opts.train_batches {
        let half = match opts.train_prompt {
            Some(p) if p >= 1 && p < opts.train_seq => p,
            Some(p) => {
                return Err(crate::error::EngineError::Invalid(format!(
                    "bench: the training prompt ({p} tokens) must be at least 1 and shorter than \
                     the training sequence ({} tokens)",
                    opts.train_seq
                )))
            }
            None => opts.train_seq / 2,
        };
        let label = match opts.train_prompt {
            Some(p) => format!("{b}x{} (prompt {p})", opts.train_seq),
            None => format!("{b}x{}", opts.train_seq),
        };
        progress(&format!("LoRA forward+backward {label}"));
        let p: Vec<u32> = prompt.iter().cycle().take(half.max(1)).copied().collect();
        let comps: Vec<Vec<u32>> = (0..b)
            .map(|i| {
                (0..opts.train_seq - half)
                    .map(|j| ((i * 31 + j * 17) as u32) % vocab)
                    .collect()
            })
            .collect();
        let refs: Vec<&[u32]> = comps.iter().map(|c| c.as_slice()).collect();
        let mut runs = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let (lp, mask) = completion_logprobs(model, Some("bench"), &p, &refs, 1.0, true)?;
            let loss = (lp * mask)?.sum_all()?.neg()?;
            let grads = loss.backward()?;
            let mut acc = GradAccum::new(vars.clone());
            acc.add(&grads)?;
            runs.push(t.elapsed().as_secs_f64());
        }
        figures.push(BenchFigure {
            name: format!("LoRA forward+backward {label}"),
            value: median(&mut runs.clone()),
            unit: "s".into(),
            runs,
        });
    }
    let weight_bytes = (model.num_base_params() * model.base_weight_dtype().size_in_bytes()) as u64;
    Ok(BenchReport {
        model: name.to_string(),
        params: model.num_base_params(),
        dtype: if model.base_weight_dtype() == model.dtype() {
            format!("{:?}", model.dtype())
        } else {
            format!(
                "{:?} (base weights {:?})",
                model.dtype(),
                model.base_weight_dtype()
            )
        },
        threads: candle_core::utils::get_num_threads(),
        kernels: crate::model::kernels::cpu_path().name().to_string(),
        attention: match model.blocked_attention_min_keys() {
            0 => "blocked".to_string(),
            usize::MAX => "matrix".to_string(),
            n => format!("blocked from {n} keys"),
        },
        figures,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        weight_bytes,
    })
}

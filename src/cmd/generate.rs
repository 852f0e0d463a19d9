//! `cahl-tui generate`: sample from a model, optionally with a PEFT adapter and the chat template.
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cahl_engine::generate::Generator;
use cahl_engine::sampling::SamplingParams;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// HF model folder or .gguf file (default, or "embedded": the embedded default model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Optional system message (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Argmax decoding.
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Number of completions (sampled as one group sharing the prompt's cache).
    #[arg(long, short = 'n', default_value_t = 1)]
    pub num: usize,
    /// Device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16, bf16 (bf16 is the CUDA choice).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let spec = args
        .model
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let g = Generator::load(&spec, args.adapter.as_deref(), &args.device, &args.dtype)?;
    if args.chat && g.template.is_fallback() {
        eprintln!("note: the model has no chat template; using the ChatML fallback");
    }
    let ids = g.prompt_ids(&args.prompt, args.system.as_deref(), args.chat)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        greedy: args.greedy,
        seed: args.seed,
    };
    let t = std::time::Instant::now();
    let outs = g
        .sample(&ids, args.num, &params)
        .context("generation failed")?;
    let secs = t.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    for (i, o) in outs.iter().enumerate() {
        if outs.len() > 1 {
            writeln!(stdout, "--- completion {i} ({:?}) ---", o.finish)?;
        }
        writeln!(stdout, "{}", o.text)?;
    }
    let n: usize = outs.iter().map(|o| o.tokens.len()).sum();
    eprintln!(
        "[{} prompt tokens, {n} generated in {secs:.2}s, {:.1} tok/s]",
        ids.len(),
        n as f64 / secs
    );
    Ok(())
}

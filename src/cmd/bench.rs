//! `cahl-tui bench`: decode / prefill / LoRA training speed and peak memory.
use anyhow::{bail, Context, Result};
use cahl_engine::device;
use cahl_engine::model::{Model, ModelConfig};
use cahl_engine::speedtest::{self, BenchOpts};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model path (HF folder or .gguf file). Without it, a named random shape is used.
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Random-weight shape when no --model: qwen2.5-0.5b, smollm2-135m or tiny.
    #[arg(long, default_value = "qwen2.5-0.5b")]
    pub shape: String,
    /// Compute dtype: f32, f16, bf16 (bf16 is the CUDA choice).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Store the frozen base matrices in this dtype (f16) and widen them as they are read, on
    /// the CPU; default: the compute dtype.
    #[arg(long)]
    pub base_dtype: Option<String>,
    /// Device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Prompt length for prefill and decode.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens generated per sequence in the decode figures (at least 4).
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Decode batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batches: Vec<usize>,
    /// Training batch sizes for LoRA forward+backward (sequences of --train-seq tokens).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub train_batches: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    pub train_seq: usize,
    /// Tokens of the training figure's shared prompt (default: half of --train-seq); each
    /// sequence's completion has the rest. GRPO's update has a long prompt and short
    /// completions, e.g. --train-seq 896 --train-prompt 800 --train-batches 4.
    #[arg(long)]
    pub train_prompt: Option<usize>,
    /// Repeats per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Nucleus mass for the decode figures (1.0 = sample from the full distribution).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let dtype = device::parse_dtype(&args.dtype)
        .with_context(|| format!("unknown dtype {:?}", args.dtype))?;
    let device = device::parse_device(&args.device)?;
    let (mut model, name) = match &args.model {
        Some(p) => {
            let lm = cahl_engine::load::load_model(p)?;
            (
                Model::new(&lm.config, &lm.weights, dtype, &device)?,
                p.display().to_string(),
            )
        }
        None => {
            let Some(cfg) = ModelConfig::named_shape(&args.shape) else {
                bail!(
                    "unknown shape {:?} (known: qwen2.5-0.5b, smollm2-135m, tiny)",
                    args.shape
                )
            };
            eprintln!("building random {} weights…", args.shape);
            let w = Model::random_weights(&cfg, 0)?;
            (
                Model::new(&cfg, &w, dtype, &device)?,
                format!("random {}", args.shape),
            )
        }
    };
    if let Some(b) = &args.base_dtype {
        let dt = device::parse_dtype(b).with_context(|| format!("unknown --base-dtype {b:?}"))?;
        model.store_base_weights(dt)?;
    }
    let opts = BenchOpts {
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        batches: args.batches,
        train_seq: args.train_seq,
        train_batches: args.train_batches,
        train_prompt: args.train_prompt,
        repeats: args.repeats,
        top_p: args.top_p,
        ..Default::default()
    };
    let report = speedtest::run(&mut model, &name, &opts, |s| eprintln!("measuring {s}…"))?;
    println!(
        "model: {}  params: {:.1}M  dtype: {}  threads: {}  kernels: {}  attention: {}",
        report.model,
        report.params as f64 / 1e6,
        report.dtype,
        report.threads,
        report.kernels,
        report.attention
    );
    for f in &report.figures {
        let runs: Vec<String> = f.runs.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "  {:<34} {:>10.2} {:<6} (runs: {})",
            f.name,
            f.value,
            f.unit,
            runs.join(", ")
        );
    }
    if let Some(p) = report.peak_rss_bytes {
        println!("  {:<34} {:>10.2} GB", "peak RSS", p as f64 / 1e9);
    }
    println!(
        "  {:<34} {:>10.1} MB (read once per decode step)",
        "base weight bytes",
        report.weight_bytes as f64 / 1e6
    );
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

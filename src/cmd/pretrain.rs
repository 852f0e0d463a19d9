//! `cahl-tui pretrain`: build the embedded default model from scratch (tokenizer + small Llama
//! trained on the built-in world's gold trajectories). See `cahl_engine::sft`.
use std::path::PathBuf;

use anyhow::{Context, Result};
use cahl_engine::sft::{pretrain, write_recipe, PretrainConfig, Role};

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// Output HF folder (the embedded model lives in assets/model; rebuild to embed it).
    #[arg(long, default_value = "assets/model")]
    pub out: PathBuf,
    /// Optimizer steps (each a batch of one role's conversations).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Stop early after this many minutes (the LR schedule still assumes --steps).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Train-split tasks whose gold trajectories form the data.
    #[arg(long)]
    pub tasks: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub hidden_size: Option<usize>,
    #[arg(long)]
    pub num_layers: Option<usize>,
    #[arg(long)]
    pub intermediate_size: Option<usize>,
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Evaluate greedy dev-task success every N steps (0 = only at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Continue from an earlier pretrain output folder (its tokenizer and weights).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Conversations to train on, repeats as weights (e.g. planner,planner,executor,flat shows
    /// each plan twice per epoch); default: every role once.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Fraction of multi-step tasks whose planner demonstration merges the last two
    /// sub-tasks into one ("A, then B"): imperfect demonstrations (default 0: gold plans).
    #[arg(long)]
    pub merged_plans: Option<f64>,
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let mut cfg = PretrainConfig::default();
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { cfg.$f = v; } )* };
    }
    set!(
        steps,
        max_minutes,
        tasks,
        seed,
        batch,
        lr,
        hidden_size,
        num_layers,
        intermediate_size,
        vocab_size,
        eval_every,
        warmup,
        merged_plans
    );
    if !(0.0..=1.0).contains(&cfg.merged_plans) {
        anyhow::bail!("--merged-plans must be in [0, 1], got {}", cfg.merged_plans);
    }
    cfg.init = a.init.as_ref().map(|p| p.display().to_string());
    for r in &a.roles {
        let role = Role::from_name(r.trim())
            .with_context(|| format!("unknown --roles entry {r:?} (planner, executor, flat)"))?;
        cfg.roles.push(role);
    }
    eprintln!(
        "pretrain: {} tasks, {} steps x batch {}, hidden {}, {} layers -> {}",
        cfg.tasks,
        cfg.steps,
        cfg.batch,
        cfg.hidden_size,
        cfg.num_layers,
        a.out.display()
    );
    let report = pretrain(&cfg, &a.out, |p| {
        if p.step % 10 == 0 || p.step <= 3 || p.dev_success.is_some() {
            let dev = p
                .dev_success
                .map(|s| format!("  dev success {:.0}%", 100.0 * s))
                .unwrap_or_default();
            eprintln!(
                "step {:>5}/{} {:<8} loss {:.4} lr {:.2e} |g| {:.2} {:.0}s{dev}",
                p.step,
                p.steps,
                p.role.name(),
                p.loss,
                p.lr,
                p.grad_norm,
                p.elapsed_s
            );
        }
    })
    .context("pretraining failed")?;
    for (r, n, p, c) in &report.example_stats {
        eprintln!(
            "  {:<8} {n} examples, mean prompt {p:.0} tokens, completion {c:.0} tokens",
            r.name()
        );
    }
    write_recipe(&a.out, &cfg, &report)?;
    println!(
        "wrote {} ({} params, vocab {}, {:.1} MB): dev success hierarchical {:.0}% flat {:.0}%, final loss {:.4}, {:.0}s",
        a.out.display(),
        report.params,
        report.vocab,
        report.bytes_on_disk as f64 / 1e6,
        100.0 * report.dev_hierarchical.success_rate(),
        100.0 * report.dev_flat.success_rate(),
        report.final_loss,
        report.elapsed_s
    );
    Ok(())
}

//! `cahl-tui sft`: supervised warm start of the planner and executor adapters on gold plans and
//! gold calls of a world's training tasks; `train --init-adapters DIR` starts GRPO from them.
use std::path::PathBuf;

use anyhow::{Context, Result};
use cahl_engine::sft::{save_adapter_sft, sft_adapters, AdapterSftConfig};
use cahl_engine::train::add_missing_adapters;

use super::train::{load_agent_for, load_world, resolve_config, TrainArgs};
use cahl_engine::benchmarks::TrainingWorld;

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    /// TOML configuration as for `train` ([model], [world], [lora], [eval] are used).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model: HF folder or .gguf file (default: the embedded model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// World: builtin, or toolrl / api-bank / bfcl / nestful with --data.
    #[arg(long)]
    pub world: Option<String>,
    /// Data folder of a benchmark world.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder: planner/ and executor/ (PEFT) and sft.json (default: ./sft/run-YYYYMMDD-HHMMSS).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Optimizer steps per adapter.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Conversations per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Peak learning rate (cosine schedule after a linear warm-up of min(10, steps/5) steps).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Wall-clock budget for both adapters together (each gets half).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Training tasks (builtin: generated; benchmarks: at most this many items).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Leave out examples longer than this many tokens (prompt and completion; 0: keep all).
    /// On SmolLM2-135M, ToolRL's data peaks at 9.9 GB with 1024 and 9.8 GB with 2048
    /// (batch 4; attention from 384 keys keeps no score matrix).
    #[arg(long, default_value_t = 1024)]
    pub max_len: usize,
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub dtype: Option<String>,
}

pub fn run(args: SftArgs) -> Result<()> {
    let targs = TrainArgs {
        config: args.config.clone(),
        model: args.model.clone(),
        world: args.world.clone(),
        data: args.data.clone(),
        seed: args.seed,
        ..Default::default()
    };
    let mut cfg = resolve_config(&targs)?;
    if let Some(n) = args.tasks {
        cfg.world.train_tasks = n;
    }
    if let Some(d) = &args.device {
        cfg.model.device = d.clone();
    }
    if let Some(d) = &args.dtype {
        cfg.model.dtype = d.clone();
    }
    let TrainingWorld {
        train: tasks,
        held_out,
        mut world,
    } = load_world(&cfg)?;
    let (mut agent, _) = load_agent_for(&mut cfg)?;
    add_missing_adapters(&mut agent.model, &cfg)?;
    let out = match &args.out {
        Some(d) => d.clone(),
        None => cahl_sessions::new_session_dir(std::path::Path::new("sft"))?,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let scfg = AdapterSftConfig {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        warmup: 10.min(args.steps / 5),
        weight_decay: 0.0,
        max_minutes: args.max_minutes.unwrap_or(0.0),
        seed: cfg.seed,
        max_len: args.max_len,
    };
    eprintln!(
        "sft: {} training tasks, {} held out; {} steps per adapter, batch {}, lr {}",
        tasks.len(),
        held_out.len(),
        scfg.steps,
        scfg.batch,
        scfg.lr
    );
    let report = sft_adapters(
        &agent,
        &tasks,
        world.as_mut(),
        &held_out,
        &cfg,
        &scfg,
        |name, p| {
            println!(
                "{name:<8} step {:>4}/{}  loss {:>7.4}  lr {:.2e}  grad {:>7.3}  {:>5} tok  {:>6.1}s",
                p.step, p.steps, p.loss, p.lr, p.grad_norm, p.tokens, p.elapsed_s
            );
        },
    )?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    save_adapter_sft(&out, &agent, &cfg, &scfg, &report, &command)?;
    for r in &report.roles {
        if r.too_long > 0 {
            println!(
                "{}: {} examples longer than {} tokens left out (--max-len)",
                r.adapter, r.too_long, args.max_len
            );
        }
        println!(
            "{}: {} examples, {} steps, loss {:.4} -> {:.4} ({:.0}s)",
            r.adapter, r.examples, r.steps_done, r.first_loss, r.final_loss, r.elapsed_s
        );
    }
    if let (Some(b), Some(a)) = (report.before, report.after) {
        // A mean over no steps (no plan reached the executor) is NaN: say so instead.
        let r = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "n/a".to_string()
            }
        };
        let note = if [
            b.planner_reward,
            a.planner_reward,
            b.executor_reward,
            a.executor_reward,
        ]
        .iter()
        .any(|v| !v.is_finite())
        {
            " (n/a: no step of that policy ran)"
        } else {
            ""
        };
        println!(
            "held-out greedy success {:.1}% -> {:.1}% ({} tasks); planner reward {} -> {}; executor reward {} -> {}{note}",
            100.0 * b.success_rate(),
            100.0 * a.success_rate(),
            a.tasks,
            r(b.planner_reward),
            r(a.planner_reward),
            r(b.executor_reward),
            r(a.executor_reward)
        );
    }
    println!(
        "adapters: {} (use: cahl-tui train --init-adapters {})",
        out.display(),
        out.display()
    );
    Ok(())
}

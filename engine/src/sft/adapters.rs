//! Adapter SFT (`cahl-tui sft`): the LoRA warm start of the `planner` and `executor` adapters
//! on gold plans and gold calls, the base frozen.
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Var;
use serde::{Deserialize, Serialize};

use super::data::{gold_texts, Role};
use super::examples::{tokenize_examples, SftExample};
use super::run::{sft_run, SftProgress};
use crate::error::{EngineError, Result};
use crate::optim::AdamWConfig;
use crate::train::{quick_eval, Agent, QuickEval, TrainConfig};
use crate::worlds::{Task, World};

/// Settings of `cahl-tui sft`: supervised warm start of the `planner` and `executor` adapters
/// on gold plans and gold calls (the base stays frozen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterSftConfig {
    /// Optimizer steps per adapter.
    pub steps: usize,
    pub batch: usize,
    /// Peak learning rate (cosine schedule with linear warm-up).
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Wall-clock budget for both adapters together (0: none); each gets half.
    pub max_minutes: f64,
    pub seed: u64,
    /// Examples longer than this many tokens (prompt and completion) are left out, and
    /// counted (0: none is). Training memory grows with the square of a sequence's length
    /// (attention scores are kept for the backward pass).
    pub max_len: usize,
}

impl Default for AdapterSftConfig {
    fn default() -> Self {
        AdapterSftConfig {
            steps: 100,
            batch: 8,
            lr: 2e-3,
            warmup: 10,
            weight_decay: 0.0,
            max_minutes: 0.0,
            seed: 0,
            max_len: 1024,
        }
    }
}

/// One adapter's supervised run.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSftRole {
    pub adapter: String,
    pub examples: usize,
    /// Examples left out for being longer than `max_len` tokens.
    pub too_long: usize,
    pub steps_done: usize,
    /// Mean loss of the first and last `min(10, steps / 2)` steps (at least one).
    pub first_loss: f64,
    pub final_loss: f64,
    pub elapsed_s: f64,
}

/// What `sft_adapters` did, with greedy held-out success before and after.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSftReport {
    pub tasks: usize,
    pub roles: Vec<AdapterSftRole>,
    pub before: Option<QuickEval>,
    pub after: Option<QuickEval>,
}

fn mean_loss(log: &[SftProgress]) -> (f64, f64) {
    let m = |s: &[SftProgress]| {
        let v: Vec<f64> = s.iter().map(|p| p.loss).filter(|l| l.is_finite()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    // Windows of up to 10 steps that do not overlap (with one step, both are that step).
    let k = (log.len() / 2).clamp(1, 10);
    (m(&log[..k]), m(&log[log.len() - k..]))
}

/// Supervised fine-tuning of the agent's `planner` adapter on the gold plans of `tasks` and of
/// its `executor` adapter on the gold calls (executor prompts with the gold sub-tasks and the
/// world's observations of earlier gold calls), the prompts being exactly the rollout's. The
/// agent must already have both adapters. `held_out` (may be empty) is evaluated greedily
/// before and after with `eval_cfg`.
pub fn sft_adapters(
    agent: &Agent,
    tasks: &[Task],
    world: &mut dyn World,
    held_out: &[Task],
    eval_cfg: &TrainConfig,
    cfg: &AdapterSftConfig,
    mut on_progress: impl FnMut(&str, &SftProgress),
) -> Result<AdapterSftReport> {
    crate::model::ops::init_cpu_float_mode();
    let mut texts = Vec::new();
    for t in tasks {
        texts.extend(gold_texts(t, world)?);
    }
    let eot = agent.template.eos_token().to_string();
    let examples = tokenize_examples(&texts, &agent.tok, &agent.template, &eot)?;
    let before = if held_out.is_empty() {
        None
    } else {
        Some(quick_eval(agent, world, held_out, eval_cfg)?)
    };
    let mut roles = Vec::new();
    let budget = if cfg.max_minutes > 0.0 {
        cfg.max_minutes / 2.0
    } else {
        0.0
    };
    for (name, role) in [("planner", Role::Planner), ("executor", Role::Executor)] {
        let mine = examples.iter().filter(|e| e.role == role);
        let fits = |e: &&SftExample| {
            cfg.max_len == 0 || e.prompt.len() + e.completion.len() <= cfg.max_len
        };
        let too_long = mine.clone().filter(|e| !fits(e)).count();
        let ex: Vec<SftExample> = mine.filter(fits).cloned().collect();
        if ex.is_empty() && too_long > 0 {
            return Err(EngineError::Invalid(format!(
                "sft: all {too_long} {name} examples are longer than {} tokens (raise --max-len)",
                cfg.max_len
            )));
        }
        if ex.is_empty() {
            return Err(EngineError::Invalid(format!(
                "sft: no {name} examples (tasks need gold plans with one sub-task per gold call)"
            )));
        }
        let named: Vec<(String, Var)> = agent
            .model
            .adapter(name)?
            .named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let opt = AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        };
        let t0 = Instant::now();
        let log = sft_run(
            &agent.model,
            Some(name),
            named,
            &ex,
            opt,
            cfg.steps,
            cfg.batch,
            cfg.warmup,
            budget,
            mix_seed_role(cfg.seed, role),
            |_, p| {
                on_progress(name, p);
                Ok(None)
            },
        )?;
        let (first_loss, final_loss) = if log.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            mean_loss(&log)
        };
        roles.push(AdapterSftRole {
            adapter: name.to_string(),
            examples: ex.len(),
            too_long,
            steps_done: log.len(),
            first_loss,
            final_loss,
            elapsed_s: t0.elapsed().as_secs_f64(),
        });
    }
    let after = if held_out.is_empty() {
        None
    } else {
        Some(quick_eval(agent, world, held_out, eval_cfg)?)
    };
    Ok(AdapterSftReport {
        tasks: tasks.len(),
        roles,
        before,
        after,
    })
}

fn mix_seed_role(seed: u64, role: Role) -> u64 {
    crate::train::mix_seed(&[seed, 31, role as u64])
}

/// Write a warm start to `out`: the `planner/` and `executor/` adapters of `agent` (PEFT, their
/// base named by `train_cfg.model.path`) and `sft.json` (the `command` line, model, world,
/// data, `cfg` and `report`). `train --init-adapters OUT` starts GRPO from them. Returns the
/// path of `sft.json`.
pub fn save_adapter_sft(
    out: &Path,
    agent: &Agent,
    train_cfg: &TrainConfig,
    cfg: &AdapterSftConfig,
    report: &AdapterSftReport,
    command: &str,
) -> Result<PathBuf> {
    for name in ["planner", "executor"] {
        agent
            .model
            .adapter(name)?
            .save_peft(&out.join(name), &train_cfg.model.path)?;
    }
    let json = serde_json::json!({
        "command": command,
        "model": train_cfg.model.path,
        "world": train_cfg.world.kind,
        "data": train_cfg.world.data,
        "config": cfg,
        "report": report,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|source| EngineError::JsonIn {
        what: "sft.json",
        source,
    })?;
    let p = out.join("sft.json");
    cahl_sessions::fsutil::atomic_write(&p, text.as_bytes())?;
    Ok(p)
}

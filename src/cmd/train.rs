//! `cahl-tui train`: joint GRPO training with the live dashboard or a headless printer.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use cahl_engine::backend::openai::OpenAiBackend;
use cahl_engine::backend::BackendKind;
use cahl_engine::benchmarks::{training_world, TrainingWorld};
use cahl_engine::load::embedded;
use cahl_engine::train::{self, Agent, Mode, TrainConfig, Trainer};
use cahl_sessions::events::{TrainCommand, TrainEvent};
use cahl_sessions::records::RunInfo;
use cahl_sessions::SessionWriter;

#[derive(clap::Args, Debug, Default)]
pub struct TrainArgs {
    /// TOML configuration (unknown keys are rejected). Defaults: assets/default.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model: HF folder or .gguf file (overrides [model].path; default: the embedded model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// World: builtin (generated tasks), builtin-one-call (the same tasks with an executor that
    /// carries out one call per sub-task: the capability-boundary testbed), or toolrl, api-bank,
    /// bfcl, nestful with --data (their items with gold calls, a seeded held-out part for [eval];
    /// tools answered by a static world).
    #[arg(long)]
    pub world: Option<String>,
    /// Data path for benchmark worlds.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cahl (joint, default), frozen-planner, frozen-executor, separate, flat, steptool
    /// (StepTool: step-grained rewards and returns), ih-grpo (plan and calls in one completion).
    #[arg(long)]
    pub mode: Option<String>,
    #[arg(long)]
    pub steps: Option<u64>,
    /// Session directory (default: a new ./runs/run-YYYYMMDD-HHMMSS).
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Continue the session in --session from its last checkpoint.
    #[arg(long, requires = "session")]
    pub resume: bool,
    /// Print one progress line per step instead of the dashboard (also when stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many minutes of training (final checkpoint and evaluation included).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Side-by-side single-threaded workers, overriding `workers` (0 = one per core for models
    /// up to 50M parameters, else 1). The run's numbers do not depend on it.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Device, overriding [model].device: cpu, cuda or cuda:N (CUDA needs `--features cuda`).
    #[arg(long)]
    pub device: Option<String>,
    /// Compute dtype, overriding [model].dtype: f32, bf16 (CUDA), f16.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Store the frozen base matrices in this dtype on the CPU (f16: half the memory, faster
    /// sampling), overriding [model].base_dtype.
    #[arg(long)]
    pub base_dtype: Option<String>,
    /// Start the planner and executor adapters from a `cahl-tui sft` output (or any folder with
    /// PEFT `planner/` and `executor/` sub-folders, e.g. a checkpoint) instead of PEFT's init.
    #[arg(long, value_name = "DIR")]
    pub init_adapters: Option<PathBuf>,
    /// Sample rollouts on this OpenAI-compatible server (repeatable: requests spread across
    /// them): `cahl-tui serve` or vLLM with runtime LoRA updating. Sets [backend] kind =
    /// "openai" and its endpoints, also on --resume.
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,
}

/// `--endpoint` overrides `[backend]`.
fn apply_endpoints(cfg: &mut TrainConfig, endpoints: &[String]) {
    if !endpoints.is_empty() {
        cfg.backend.kind = BackendKind::OpenAi;
        cfg.backend.endpoints = endpoints.to_vec();
    }
}

/// The model of `[model]` (the embedded one when the path is empty or "embedded") with its
/// tokenizer and chat template on `[model].device` in `[model].dtype`; and its parameter count.
pub fn load_agent_for(cfg: &mut TrainConfig) -> Result<(Agent, u64)> {
    if embedded::is_embedded(&cfg.model.path) {
        cfg.model.path = embedded::EMBEDDED.to_string();
    }
    eprintln!("loading {}…", cfg.model.path);
    let agent = Agent::load(&cfg.model)?;
    let params = agent.model.num_base_params() as u64;
    Ok((agent, params))
}

/// The world of `[world]` with its training and held-out tasks (see
/// [`cahl_engine::benchmarks::training_world`]).
pub fn load_world(cfg: &TrainConfig) -> Result<TrainingWorld> {
    let w = training_world(cfg)?;
    if !cfg.world.kind.starts_with("builtin") {
        eprintln!(
            "world {}: {} training items, {} held out ({})",
            cfg.world.kind,
            w.train.len(),
            w.held_out.len(),
            cfg.world.data
        );
    }
    Ok(w)
}

/// Load `dir/planner` and `dir/executor` (PEFT) as the starting adapters.
fn load_init_adapters(agent: &mut Agent, dir: &std::path::Path, cfg: &TrainConfig) -> Result<()> {
    agent
        .load_adapters(dir, true)
        .with_context(|| format!("--init-adapters {}", dir.display()))?;
    for (name, want) in [
        ("planner", &cfg.lora.planner),
        ("executor", &cfg.lora.executor),
    ] {
        let r = agent.model.adapter(name)?.config.r;
        if r != want.r {
            eprintln!(
                "note: {} has rank {r} (config says {}); the loaded adapter is used as is",
                dir.join(name).display(),
                want.r
            );
        }
    }
    Ok(())
}

pub fn resolve_config(args: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            TrainConfig::from_toml(&text, &p.display().to_string())?
        }
        None => TrainConfig::default(),
    };
    if let Some(m) = &args.model {
        cfg.model.path = m.display().to_string();
    }
    if let Some(w) = &args.world {
        cfg.world.kind = w.clone();
    }
    if let Some(d) = &args.data {
        cfg.world.data = d.display().to_string();
    }
    if let Some(m) = &args.mode {
        cfg.mode = Mode::parse(m).with_context(|| {
            let all: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown --mode {m:?} ({})", all.join(", "))
        })?;
    }
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(m) = args.max_minutes {
        cfg.max_minutes = m;
    }
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    apply_endpoints(&mut cfg, &args.endpoint);
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(args: TrainArgs) -> Result<()> {
    // On resume the session's own config is authoritative.
    let mut cfg = if args.resume {
        let dir = args.session.as_ref().context("--resume needs --session")?;
        let p = dir.join("config.toml");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let mut c = TrainConfig::from_toml(&text, &p.display().to_string())?;
        // Sessions written before these keys existed ran their algorithm without them: keep it.
        for note in c.keep_pre_key_behaviour(&text) {
            eprintln!("resume: {note}");
        }
        if let Some(s) = args.steps {
            c.steps = s;
        }
        if let Some(m) = args.max_minutes {
            c.max_minutes = m;
        }
        if let Some(w) = args.workers {
            c.workers = w;
        }
        apply_endpoints(&mut c, &args.endpoint);
        c.validate()?;
        c
    } else {
        resolve_config(&args)?
    };
    // A server that does not answer fails here, before the model loads.
    let mut backend = match cfg.backend.kind {
        BackendKind::OpenAi => {
            let b = OpenAiBackend::connect(&cfg.backend, std::path::Path::new(""))?;
            eprintln!(
                "rollouts: {}",
                cahl_engine::backend::RolloutBackend::describe(&b)
            );
            Some(b)
        }
        BackendKind::Local => None,
    };
    // Fail on a bad world or data path before the model loads.
    let TrainingWorld {
        train: tasks,
        held_out,
        world,
    } = load_world(&cfg)?;
    if let Some(d) = &args.device {
        cfg.model.device = d.clone();
    }
    if let Some(d) = &args.dtype {
        cfg.model.dtype = d.clone();
    }
    if let Some(d) = &args.base_dtype {
        cfg.model.base_dtype = d.clone();
    }
    let (agent, params) = load_agent_for(&mut cfg)?;
    let mut agent = agent;
    if let Some(dir) = &args.init_adapters {
        if args.resume {
            bail!("--init-adapters starts a new run; --resume takes the adapters from the session's checkpoint");
        }
        load_init_adapters(&mut agent, dir, &cfg)?;
    }
    let mut trainer = Trainer::new(cfg.clone(), agent, world, tasks)?;
    if trainer.workers() > 1 {
        cahl_engine::lanes::single_threaded_candle_matmuls();
    }
    eprintln!("workers: {} (config `workers`)", trainer.workers());
    if cfg.eval.every > 0 && cfg.eval.tasks > 0 {
        trainer.set_eval_tasks(held_out);
    }

    let mut notes = Vec::new();
    let (writer, dir) = if args.resume {
        let dir = args.session.clone().context("--resume needs --session")?;
        let r = train::resume_session(&mut trainer, &dir)?;
        eprintln!("resuming {} from step {}", dir.display(), r.step);
        notes = r.notes;
        (r.writer, dir)
    } else {
        let dir = match &args.session {
            Some(d) => d.clone(),
            None => cahl_sessions::new_session_dir(std::path::Path::new("runs"))?,
        };
        let info = RunInfo {
            oracle: cfg.rollout.continue_with.is_oracle(),
            backend: backend
                .as_ref()
                .map(cahl_engine::backend::RolloutBackend::describe)
                .unwrap_or_default(),
            ..RunInfo::new(
                cfg.model.path.clone(),
                cfg.mode.name().to_string(),
                cfg.steps,
                cfg.seed,
                &cfg.model.device,
            )
        };
        let w = SessionWriter::create(&dir, &cfg.to_toml()?, &info)?;
        (w, dir)
    };
    let mut writer = writer;
    if let Some(mut b) = backend.take() {
        if cfg.backend.adapter_dir.is_empty() {
            // The session's own folder: what an earlier process of this run left there
            // (its adapters) is of no use to this one.
            let _ = std::fs::remove_dir_all(dir.join("served"));
        }
        b.set_adapter_dir(&cfg.backend.adapter_dir_for(&dir));
        if args.resume {
            // The run now samples here: run.json says so.
            let mut info = writer.run_info().clone();
            info.backend = cahl_engine::backend::RolloutBackend::describe(&b);
            writer.update_run_info(&info)?;
        }
        trainer.agent.remote = Some(std::sync::Arc::new(b));
    }
    let _log_guard = crate::logging::to_file(&writer.log_path());
    tracing::info!("session {}", dir.display());
    // What resume repaired or chose: on the terminal and in the log.
    for n in &notes {
        eprintln!("resume: {n}");
        tracing::warn!("resume: {n}");
    }

    let (ev_rx, cmd_tx, handle) = train::driver::spawn(trainer, writer)?.into_parts();
    let tui = !args.no_tui && std::io::stdout().is_terminal();
    if tui {
        // The debugger (`d`) gets a second copy of the model, loaded only when it first runs
        // the planner or executor, with the latest checkpoint's adapters.
        let loader = cahl_engine::debugger::SessionModelLoader {
            model: cfg.model.path.clone(),
            cfg: cfg.clone(),
            params: Some(params),
        };
        let opts = cahl_ui::UiOptions {
            loader: Some(Box::new(loader)),
            ..cahl_ui::UiOptions::default()
        };
        cahl_ui::run_live(ev_rx, cmd_tx, opts)?;
    } else {
        // SIGTERM, SIGINT or SIGHUP: stop after the current step and save a checkpoint, as
        // `q` does in the dashboard; a second signal exits at once.
        cahl_ui::app::signals::listen(move |sig| {
            eprintln!(
                "{}: stopping after the current step and saving a checkpoint (send it again to \
                 exit now)",
                sig.name
            );
            cmd_tx.send(TrainCommand::Stop).is_ok()
        })
        .context("installing the signal handlers")?;
        headless(ev_rx);
    }
    train::driver::join(handle)
        .with_context(|| format!("training (see {})", dir.join("train.log").display()))?;
    println!("session: {}", dir.display());
    // Where to go from here.
    let d = dir.display();
    println!("next: cahl-tui replay {d}   (curves, trajectories, the debugger)");
    println!("      cahl-tui report {d}   (Markdown and plots)");
    println!("      cahl-tui eval --bench builtin --session {d}");
    Ok(())
}

/// One line per step on stdout; warnings and errors on stderr.
fn headless(events: mpsc::Receiver<TrainEvent>) {
    let mut total = 0;
    for ev in events {
        match ev {
            TrainEvent::Started {
                total_steps,
                start_step,
                session_dir,
                ..
            } => {
                total = total_steps;
                println!(
                    "session {} (steps {}..{})",
                    session_dir.display(),
                    start_step + 1,
                    total_steps
                );
            }
            TrainEvent::Metrics(m) => {
                let ev = m
                    .eval
                    .as_ref()
                    .map(|e| {
                        format!(
                            "  | {} success {:.1}% ({} tasks) planner {:.3} executor {:.3}",
                            e.split,
                            100.0 * e.success_rate,
                            e.tasks,
                            e.planner_reward,
                            e.executor_reward
                        )
                    })
                    .unwrap_or_default();
                if m.step == 0 {
                    println!("step    0/{total}  baseline{ev}");
                } else {
                    // A policy that did not train this step (flat mode has no planner) has
                    // NaN figures: shown as a dash.
                    let f = |v: f64, width: usize, prec: usize| {
                        if v.is_finite() {
                            format!("{v:>width$.prec$}")
                        } else {
                            format!("{:>width$}", "-")
                        }
                    };
                    println!(
                        "step {:>4}/{total}  planner {}  executor {}  success {:>5.1}%  loss p {} e {}  kl p {} e {}  {:>6.1} tok/s  {:>7.1}s{ev}",
                        m.step,
                        f(m.planner_reward, 7, 3),
                        f(m.executor_reward, 7, 3),
                        100.0 * m.success_rate,
                        f(m.planner.loss, 8, 4),
                        f(m.executor.loss, 8, 4),
                        f(m.planner.kl, 6, 4),
                        f(m.executor.kl, 6, 4),
                        m.tokens_per_s,
                        m.elapsed_s
                    );
                }
            }
            TrainEvent::Checkpoint(c) => println!("checkpoint step {} -> {}", c.step, c.path),
            TrainEvent::Warning(w) => eprintln!("warning: {w}"),
            TrainEvent::Error(e) => eprintln!("error: {e}"),
            TrainEvent::Finished { step, message, .. } => {
                println!("finished at step {step}: {message}")
            }
            _ => {}
        }
    }
}

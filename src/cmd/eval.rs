//! `cahl-tui eval`: greedy evaluation on the built-in world or a benchmark, with paper-style
//! tables, efficiency and the misalignment taxonomy.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cahl_engine::benchmarks::Bench;
use cahl_engine::eval::{self, EvalMode, EvalOptions};

use cahl_engine::agent::Agent;
use cahl_engine::train::config::ModelSection;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// builtin (generated test tasks), bfcl, api-bank, nestful or bamboogle.
    #[arg(long)]
    pub bench: String,
    /// Benchmark data folder, e.g. ../shared/data/api-bank (not needed for builtin).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// BM25 search index for bamboogle (a directory written by `cahl-tui index build`).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Base model: HF folder or .gguf file (default: the session's model, else the embedded
    /// default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Evaluate the planner/executor adapters of this training session.
    #[arg(long)]
    pub session: Option<PathBuf>,
    /// Checkpoint step of --session (default: its latest checkpoint).
    #[arg(long, requires = "session")]
    pub step: Option<u64>,
    /// A checkpoint directory with planner/ and executor/ PEFT adapters (instead of --session).
    #[arg(long, conflicts_with = "session")]
    pub checkpoint: Option<PathBuf>,
    /// hierarchical (planner then executor), flat (executor alone, turn by turn) or ih-grpo
    /// (plan and every call in one completion, run afterwards). Default: the session's agent
    /// (flat for flat and steptool sessions, ih-grpo for ih-grpo, else hierarchical).
    #[arg(long)]
    pub mode: Option<String>,
    /// builtin: number of generated test tasks (default 100); benchmarks: at most N items per
    /// category, in file order (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only this category (BFCL category, API-Bank level-1/level-2, NESTFUL glaive/sgd,
    /// builtin calls-N).
    #[arg(long)]
    pub category: Option<String>,
    /// Output directory for results.jsonl and summary.json (default:
    /// SESSION/eval/<bench>-<mode>-step-N with --session, else evals/<bench>-<mode>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the generated builtin tasks (and recorded with each episode; decoding is greedy).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// At most this many sub-tasks (flat: turns) per task.
    #[arg(long, default_value_t = 6)]
    pub max_subtasks: usize,
    /// Episodes side by side on this many single-threaded workers (0 = one per core for models
    /// up to 50M parameters, else 1). Results do not depend on it; latencies are per episode.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Decode the episodes of a wave (64 at a time) together: auto (models over 50M
    /// parameters), on, off. Batched, an episode's latency is that of its wave.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub batch: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Checkpoint directory and step of `--session [--step]`.
fn session_checkpoint(session: &Path, step: Option<u64>) -> Result<(PathBuf, u64)> {
    let cks = cahl_sessions::list_checkpoints(session)
        .with_context(|| format!("listing checkpoints of {}", session.display()))?;
    let ck = match step {
        Some(s) => cks.iter().find(|c| c.step == s).cloned().with_context(|| {
            format!(
                "{} has no checkpoint step-{s} (it has: {})",
                session.display(),
                if cks.is_empty() {
                    "none".to_string()
                } else {
                    cks.iter()
                        .map(|c| c.step.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        })?,
        None => cks.last().cloned().with_context(|| {
            format!(
                "{} has no checkpoint yet (checkpoints/step-N)",
                session.display()
            )
        })?,
    };
    Ok((session.join(&ck.path), ck.step))
}

pub fn run(args: EvalArgs) -> Result<()> {
    let bench = Bench::parse(&args.bench)?;
    let info = match &args.session {
        Some(s) => {
            if !s.is_dir() {
                bail!("--session {}: not a directory", s.display());
            }
            cahl_sessions::SessionReader::open(s)
                .with_context(|| format!("reading {}", s.display()))?
                .run_info()
                .cloned()
        }
        None => None,
    };
    let mode = match (&args.mode, &info) {
        (Some(m), _) => EvalMode::parse(m)?,
        // `steptool` trains the flat agent.
        (None, Some(i)) if i.mode == "flat" || i.mode == "steptool" => EvalMode::Flat,
        (None, Some(i)) if i.mode == "ih-grpo" => EvalMode::IhGrpo,
        _ => EvalMode::Hierarchical,
    };
    let (checkpoint, step) = match (&args.session, &args.checkpoint) {
        (Some(s), _) => {
            let (c, st) = session_checkpoint(s, args.step)?;
            (Some(c), Some(st))
        }
        (None, Some(c)) => (
            Some(c.clone()),
            c.file_name()
                .and_then(|n| cahl_sessions::layout::parse_checkpoint_name(&n.to_string_lossy())),
        ),
        _ => (None, None),
    };
    let model = args
        .model
        .clone()
        .or_else(|| info.as_ref().map(|i| i.model.clone()))
        .unwrap_or_default();
    let tasks = bench.load_tasks(
        args.data.as_deref(),
        args.limit,
        args.seed,
        args.category.as_deref(),
    )?;
    if tasks.is_empty() {
        bail!("no tasks to evaluate (check --category / --limit)");
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None => match (&args.session, step) {
            (Some(s), Some(st)) => {
                s.join("eval")
                    .join(format!("{}-{}-step-{st}", bench.name(), mode.name()))
            }
            _ => PathBuf::from("evals").join(format!(
                "{}-{}-{}",
                bench.name(),
                mode.name(),
                cahl_sessions::UtcDateTime::now().compact()
            )),
        },
    };
    // Fail now, not after the whole evaluation, when the results cannot be written there.
    eval::check_writable(&out).with_context(|| format!("output folder {}", out.display()))?;
    eprintln!(
        "loading {}{}…",
        if model.is_empty() { "embedded" } else { &model },
        checkpoint
            .as_ref()
            .map(|c| format!(" + adapters of {}", c.display()))
            .unwrap_or_default()
    );
    let mut agent = Agent::load(&ModelSection::cpu_f32(&model))?;
    if let Some(ck) = &checkpoint {
        agent.load_adapters(ck, false)?;
    }
    let workers = match args.workers {
        0 => cahl_engine::lanes::Lanes::auto_count(agent.model.num_base_params()),
        n => n,
    };
    if workers > 1 {
        cahl_engine::lanes::single_threaded_candle_matmuls();
    }
    let opts = EvalOptions {
        mode,
        seed: args.seed,
        max_subtasks: args.max_subtasks,
        workers,
        batch: match args.batch.as_str() {
            "on" => cahl_engine::train::BatchMode::On,
            "off" => cahl_engine::train::BatchMode::Off,
            _ => cahl_engine::train::BatchMode::Auto,
        },
        ..Default::default()
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(tasks.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} tasks  {elapsed_precise} (eta {eta})",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("eval {} {}", bench.name(), mode.name()));
    let started = std::time::Instant::now();
    let mut run = eval::run_eval(
        &mut agent,
        bench,
        args.data.as_deref(),
        args.index.as_deref(),
        &tasks,
        &opts,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    run.summary.checkpoint = checkpoint.map(|c| c.display().to_string());
    run.summary.step = step;
    eval::write_outputs(&out, &run).with_context(|| format!("writing {}", out.display()))?;
    print!("{}", run.summary.to_text());
    if bench == Bench::Bamboogle {
        println!("(answers judged by normalized exact match; no LLM judge offline)");
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "wall clock: {wall:.1} s for {} items ({:.2} s per item{})",
        tasks.len(),
        wall / tasks.len().max(1) as f64,
        if opts
            .rollout_config()
            .rollout
            .batch
            .applies(agent.model.num_base_params())
        {
            "; batched: an item's latency above is that of its wave"
        } else {
            ""
        }
    );
    println!(
        "wrote {} and {}",
        out.join("results.jsonl").display(),
        out.join("summary.json").display()
    );
    Ok(())
}

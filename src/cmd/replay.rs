//! `cahl-tui replay <trajectories.jsonl | metrics.jsonl | SESSION_DIR>`: browse a recorded run
//! without a model. A session's own `trajectories.jsonl` opens the whole session, an
//! evaluation's `results.jsonl` its items' episodes, another engine's run (a verl rollout dump,
//! a TRL completions table) a session converted from it; other files are refused.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// Arguments of `cahl-tui replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A session directory, a `trajectories.jsonl` / `metrics.jsonl`, an evaluation's
    /// `results.jsonl` (its items' episodes as a list), or another engine's run, read-only: a
    /// verl `rollout_data_dir` (or one of its `{step}.jsonl`), a TRL completions table (JSON
    /// Lines, or a W&B table export).
    pub path: PathBuf,
    /// Maximum frames per second.
    #[arg(long, default_value_t = 20)]
    pub fps: u32,
    /// Steps shown by the recent-window chart view (`w`).
    #[arg(long, default_value_t = 100)]
    pub window: usize,
    /// How often to re-read the files to follow a run that is still writing them, in ms.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Where debugger sessions are saved (default: `<session>/debug/`).
    #[arg(long)]
    pub debug_dir: Option<PathBuf>,
    /// Model for running the executor in the debugger (`d`): HF folder or .gguf file, loaded at
    /// start. The adapters come from the session's latest checkpoint (or --checkpoint). Without
    /// it, the session's own model is loaded on demand when the debugger first runs.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Checkpoint directory with planner/ and executor/ adapters (with --model).
    #[arg(long, requires = "model")]
    pub checkpoint: Option<PathBuf>,
    /// Print a text summary instead of opening the terminal UI (implied when stdout is not a
    /// terminal).
    #[arg(long)]
    pub summary: bool,
}

/// What `replay` opens for `path`: a directory as it is; a session's `trajectories.jsonl` or
/// `metrics.jsonl` as the session around it (so its metrics, checkpoints and model come too);
/// a bare one of those files alone. Anything else is refused with one line.
///
/// What is converted (an evaluation's results, another engine's run) lies in a temporary
/// session that the returned [`Target`] removes when it is dropped.
pub fn replay_target(path: &Path) -> anyhow::Result<Target> {
    if path.is_dir() {
        if !path.join("run.json").is_file() {
            if let Some(kind) = cahl_engine::import::detect(path) {
                return foreign_as_session(path, kind);
            }
        }
        return Ok(Target::at(path));
    }
    if !path.exists() {
        anyhow::bail!("{}: no such file or directory", path.display());
    }
    if path.extension().is_some_and(|e| e == "parquet") {
        anyhow::bail!(
            "{}: Parquet is not read here; convert it to JSON Lines first, e.g. \
             python -c \"import pandas as pd; pd.read_parquet('{0}').to_json('completions.jsonl', \
             orient='records', lines=True)\"",
            path.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    match name.as_str() {
        "trajectories.jsonl" | "metrics.jsonl" => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            match parent {
                Some(dir) if dir.join("run.json").is_file() => Ok(Target::at(dir)),
                _ => Ok(Target::at(path)),
            }
        }
        "results.jsonl" => eval_as_session(path),
        "summary.json" => anyhow::bail!(
            "{} is an evaluation's summary: replay its results.jsonl (one row per item) or the \
             session it belongs to, or read it with `cahl-tui report SESSION`",
            path.display()
        ),
        _ => match cahl_engine::import::detect(path) {
            Some(kind) => foreign_as_session(path, kind),
            None => anyhow::bail!(
                "{} is not a session: replay takes a session directory, a trajectories.jsonl or a \
                 metrics.jsonl, an evaluation's results.jsonl, a verl rollout dump or a TRL \
                 completions table",
                path.display()
            ),
        },
    }
}

/// What replay opens: a path, and the temporary directory it lies in when it was converted
/// (removed on drop).
pub struct Target {
    pub path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Target {
    fn at(path: &Path) -> Target {
        Target {
            path: path.to_path_buf(),
            _temp: None,
        }
    }

    fn temporary(prefix: &str) -> anyhow::Result<Target> {
        let temp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .with_context(|| {
                format!(
                    "creating a temporary session in {}",
                    std::env::temp_dir().display()
                )
            })?;
        Ok(Target {
            path: temp.path().to_path_buf(),
            _temp: Some(temp),
        })
    }
}

/// Another engine's run converted into a temporary session (read-only: no model, no
/// checkpoints), so its curves and trajectories browse like ours.
fn foreign_as_session(path: &Path, kind: cahl_engine::import::Foreign) -> anyhow::Result<Target> {
    let target = Target::temporary(&format!("cahl-{}-replay-", kind.name()))?;
    let dir = &target.path;
    let imp = cahl_engine::import::import(path, kind, dir)?;
    eprintln!(
        "{}: a {} run, {} samples over {} steps ({} with tool calls; success {}), browsed as a \
         temporary session in {}",
        path.display(),
        kind.name(),
        imp.samples,
        imp.steps,
        imp.with_calls,
        if imp.success_known {
            "from its accuracy column"
        } else {
            "unknown: no acc/accuracy/correct/is_correct/success column"
        },
        dir.display()
    );
    Ok(target)
}

/// One line of an evaluation's `results.jsonl`, as far as replay needs it.
#[derive(serde::Deserialize)]
struct EvalLine {
    correct: bool,
    trajectory: cahl_sessions::TrajectoryRecord,
}

/// An evaluation's `results.jsonl` as a browsable session: its items' episodes (success = the
/// scorer's verdict) in a temporary session, with the run's `run.json` and `config.toml` and the
/// evaluated checkpoint linked in when the evaluation lies in `SESSION/eval/<name>-step-N/`, so
/// `d` debugs an item on the model and adapters that were evaluated.
fn eval_as_session(path: &Path) -> anyhow::Result<Target> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = String::new();
    let (mut n, mut correct) = (0usize, 0usize);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut e: EvalLine = serde_json::from_str(line).map_err(|err| {
            anyhow::anyhow!(
                "{}:{}: not an evaluation result line ({err})",
                path.display(),
                i + 1
            )
        })?;
        e.trajectory.success = e.correct;
        n += 1;
        correct += e.correct as usize;
        out.push_str(&serde_json::to_string(&e.trajectory)?);
        out.push('\n');
    }
    let target = Target::temporary("cahl-eval-replay-")?;
    let dir = target.path.clone();
    std::fs::write(dir.join("trajectories.jsonl"), out)
        .with_context(|| format!("writing into {}", dir.display()))?;
    // SESSION/eval/<bench>-<mode>-step-N/results.jsonl: the session and the checkpoint.
    let eval_dir = path.parent();
    let session = eval_dir
        .and_then(Path::parent)
        .filter(|d| d.file_name().is_some_and(|n| n == "eval"))
        .and_then(Path::parent)
        .filter(|s| s.join("run.json").is_file());
    if let (Some(session), Some(eval_dir)) = (session, eval_dir) {
        for f in ["run.json", "config.toml"] {
            let _ = std::fs::copy(session.join(f), dir.join(f));
        }
        let name = eval_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if let Some(step) = name.rsplit_once("-step-").map(|(_, s)| s.to_string()) {
            let ck = session.join("checkpoints").join(format!("step-{step}"));
            if ck.is_dir() {
                std::fs::create_dir_all(dir.join("checkpoints"))?;
                #[cfg(unix)]
                let _ = std::os::unix::fs::symlink(
                    &ck,
                    dir.join("checkpoints").join(format!("step-{step}")),
                );
            }
        }
    }
    eprintln!(
        "{}: {n} items ({correct} correct), browsed as a temporary session in {}",
        path.display(),
        dir.display()
    );
    Ok(target)
}

/// Runs `cahl-tui replay`.
pub fn run(mut args: ReplayArgs) -> anyhow::Result<()> {
    // Held to the end: a converted run's temporary session is removed when it drops.
    let target = replay_target(&args.path)?;
    args.path = target.path.clone();
    if args.summary || !std::io::stdout().is_terminal() {
        return print_summary(&args);
    }
    let backend: Option<Box<dyn cahl_sessions::debug::ExecutorBackend>> = match &args.model {
        Some(m) => {
            let ck = args
                .checkpoint
                .clone()
                .or_else(|| cahl_engine::debugger::lookup::latest_checkpoint_of(&args.path));
            let cfg = cahl_engine::debugger::lookup::session_config(&args.path);
            Some(Box::new(cahl_engine::debugger::engine_backend(
                &m.display().to_string(),
                ck.as_deref(),
                cfg,
            )?))
        }
        None => None,
    };
    // Without --model, the session's own model (if it is found from here) is offered to the
    // debugger and loaded on demand with the latest checkpoint's adapters.
    let loader: Option<Box<dyn cahl_sessions::debug::BackendLoader>> = match &backend {
        Some(_) => None,
        None => cahl_engine::debugger::SessionModelLoader::of_session(&args.path)
            .map(|l| Box::new(l) as Box<dyn cahl_sessions::debug::BackendLoader>),
    };
    let opts = cahl_ui::UiOptions {
        backend,
        loader,
        fps: args.fps,
        window: args.window,
        poll_interval: Duration::from_millis(args.poll_ms.max(50)),
        debug_dir: args.debug_dir.clone(),
        ..cahl_ui::UiOptions::default()
    };
    cahl_ui::run_replay(&args.path, opts)
        .with_context(|| format!("replaying {}", args.path.display()))
}

fn print_summary(args: &ReplayArgs) -> anyhow::Result<()> {
    let reader = cahl_sessions::SessionReader::open(&args.path)
        .with_context(|| format!("opening {}", args.path.display()))?;
    if let Some(info) = reader.run_info() {
        println!(
            "run: model {} · mode {} · seed {} · {} planned steps · device {}",
            info.model, info.mode, info.seed, info.total_steps, info.device
        );
    }
    let m = reader.metrics();
    if reader.run_info().is_none()
        && m.is_empty()
        && reader.entries().is_empty()
        && reader.checkpoints().is_empty()
    {
        let first = reader
            .problems()
            .first()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        anyhow::bail!(
            "{} holds no session: no run.json, metrics, trajectories or checkpoints were read{first}",
            args.path.display()
        );
    }
    println!("metrics: {} steps", m.len());
    if let Some(last) = m.last() {
        println!(
            "last step {}: planner reward {:.3}, executor reward {:.3}, success {:.3}",
            last.step, last.planner_reward, last.executor_reward, last.success_rate
        );
    }
    let entries = reader.entries();
    let ok = entries.iter().filter(|e| e.summary.success).count();
    println!("trajectories: {} ({} successful)", entries.len(), ok);
    println!("checkpoints: {}", reader.checkpoints().len());
    for p in reader.problems() {
        println!("problem: {p}");
    }
    Ok(())
}

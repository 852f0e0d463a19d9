//! `cahl-tui debug`: the plan-editing debugger, with the executor run by the engine
//! ([`cahl_engine::debugger`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use cahl_engine::benchmarks::{find_item, Bench};
use cahl_engine::debugger::lookup::{
    find_task, latest_checkpoint_of, session_config, session_dir_of,
};
use cahl_engine::debugger::{debug_task_of, endpoint_backend, engine_backend, SessionModelLoader};
use cahl_engine::worlds::search::Bm25Index;
use cahl_sessions::debug::{DebugTask, ExecutorBackend};
use cahl_sessions::SessionReader;
use cahl_ui::DebugInitial;

#[derive(clap::Args, Debug)]
pub struct DebugArgs {
    /// A session directory or trajectories.jsonl to take a trajectory from (see --index).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Which trajectory of --trace (0-based; default: the last one).
    #[arg(long)]
    pub index: Option<usize>,
    /// A task by id: a built-in world task (e.g. builtin-test-0-12, searched in the first 5,000
    /// tasks of each split), or with --bench a benchmark item (API-Bank level-1-0, BFCL
    /// simple_python_0, NESTFUL non-executable-glaive-data-0, Bamboogle bamboogle-3).
    #[arg(long)]
    pub task_id: Option<String>,
    /// Benchmark of --task-id: bfcl, api-bank, nestful or bamboogle (needs --data).
    #[arg(long, requires_all = ["task_id", "data"])]
    pub bench: Option<String>,
    /// Benchmark data folder (e.g. ../shared/data/api-bank, or ../shared/data itself).
    #[arg(long, requires = "bench")]
    pub data: Option<PathBuf>,
    /// BM25 index (`cahl-tui index build`) behind Bamboogle's search tool; without it a search
    /// returns a labelled placeholder instead of passages.
    #[arg(long, requires = "bench")]
    pub search_index: Option<PathBuf>,
    /// A typed request (no gold trajectory). With --task-id it replaces that task's request and
    /// keeps its tools and gold calls.
    #[arg(long)]
    pub task: Option<String>,
    /// Reopen a saved debugger session (JSON written by `S` in the debugger).
    #[arg(long)]
    pub open: Option<PathBuf>,
    /// Model for running the planner/executor (HF folder, .gguf, or "embedded" for the default
    /// model). Without it, --task and --task-id use the embedded default model, --trace (and
    /// --open of a file saved under <session>/debug/) its session's model when it is found
    /// from here, loaded when first needed with the latest checkpoint (`o` picks another);
    /// otherwise the debugger edits plans and compares branches but cannot run them.
    #[arg(long)]
    pub model: Option<String>,
    /// Checkpoint with planner/ and executor/ PEFT adapters (default: the latest of --trace's session).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Seed of the first branch.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the planner and executor on a served model instead (an OpenAI-compatible server:
    /// `cahl-tui serve`, vLLM), through chat completions of the same prompts, so misalignment
    /// can be probed on models this machine cannot hold.
    #[arg(long, value_name = "URL", conflicts_with_all = ["model", "checkpoint"])]
    pub endpoint: Option<String>,
    /// With --endpoint: the served model that plans, as /v1/models lists it (an adapter, e.g.
    /// `planner` of `serve --checkpoint` or a training run's `planner@V-T`; default: the base
    /// model).
    #[arg(long, value_name = "NAME", requires = "endpoint")]
    pub planner_model: Option<String>,
    /// With --endpoint: the served model that executes (default: the base model).
    #[arg(long, value_name = "NAME", requires = "endpoint")]
    pub executor_model: Option<String>,
    /// Where `S` saves debugger sessions (default: <session>/debug with --trace, the folder of
    /// --open, else ./debug).
    #[arg(long)]
    pub debug_dir: Option<PathBuf>,
}

pub fn run(args: DebugArgs) -> Result<()> {
    // A saved debugger session under `<session>/debug/` belongs to that session: reopened, it
    // runs on the session's model and latest checkpoint again, as when it was saved.
    let saved_in = args.open.as_deref().and_then(|f| {
        let dir = f.parent()?;
        let session = dir.parent()?;
        (dir.file_name()? == "debug" && session.join("run.json").is_file())
            .then(|| session.to_path_buf())
    });
    let session = args.trace.clone().or(saved_in);
    // A task with no session behind it runs on the embedded default model, as every other
    // command does without --model.
    let default_embedded =
        args.model.is_none() && args.endpoint.is_none() && session.is_none() && args.open.is_none();
    let with_model = args.model.is_some() || args.endpoint.is_some() || default_embedded;
    let initial = if let Some(p) = &args.open {
        DebugInitial::from_saved_file(p).map_err(|e| anyhow::anyhow!(e))?
    } else if let Some(trace) = &args.trace {
        let reader = SessionReader::open(trace)?;
        let n = reader.entries().len();
        if n == 0 {
            bail!("{} holds no readable trajectory", trace.display());
        }
        let i = args.index.unwrap_or(n - 1);
        if i >= n {
            bail!(
                "--index {i} is out of range: {} holds {n} trajectories",
                trace.display()
            );
        }
        let rec = reader.trajectory(i).map_err(|p| anyhow::anyhow!("{p}"))?;
        DebugInitial::Trajectory {
            record: Box::new(rec),
            plan_index: None,
        }
    } else if let Some(id) = &args.task_id {
        let t = match (&args.bench, &args.data) {
            (Some(b), Some(d)) => find_item(Bench::scored(b)?, d, id)?,
            _ => find_task(id)?,
        };
        let mut task = debug_task_of(&t);
        if let Some(text) = &args.task {
            task.text = text.clone();
        }
        // With a model the original branch is the planner's plan (asked on start); without one,
        // it starts as a copy of the gold plan to edit.
        let plan = if with_model {
            vec![]
        } else {
            t.gold_plan.clone()
        };
        DebugInitial::Task {
            task,
            plan,
            seed: args.seed,
        }
    } else if let Some(text) = &args.task {
        let task = DebugTask {
            id: "typed".into(),
            text: text.clone(),
            ..Default::default()
        };
        DebugInitial::Task {
            task,
            plan: vec![],
            seed: args.seed,
        }
    } else {
        bail!("say what to debug: --trace SESSION [--index N], --task-id ID [--bench B --data DIR], --task TEXT or --open FILE");
    };
    // A session's debugger without --model/--checkpoint loads the session's model on demand,
    // with its latest checkpoint first; `o` then switches to any other of its checkpoints.
    let session_dir = session.as_deref().and_then(session_dir_of);
    if let Some(url) = &args.endpoint {
        let cfg = session.as_deref().map(session_config).unwrap_or_default();
        let mut b = endpoint_backend(
            url,
            args.planner_model.as_deref(),
            args.executor_model.as_deref(),
            cfg,
        )?;
        eprintln!("running on {}", b.describe());
        if let Some(dir) = &args.search_index {
            let idx = Bm25Index::open(dir)
                .with_context(|| format!("opening the search index {}", dir.display()))?;
            b.set_search_index(Arc::new(idx));
        }
        let opts = cahl_ui::UiOptions {
            debug_dir: Some(debug_dir_of(&args)),
            session: session_dir,
            ..cahl_ui::UiOptions::default()
        };
        cahl_ui::run_debugger(initial, Some(Box::new(b)), opts)?;
        return Ok(());
    }
    if args.model.is_none() && args.checkpoint.is_none() {
        if let Some(loader) = session.as_deref().and_then(SessionModelLoader::of_session) {
            eprintln!(
                "the session's model {} loads when first needed (--model overrides)",
                loader.model
            );
            let opts = cahl_ui::UiOptions {
                debug_dir: Some(debug_dir_of(&args)),
                loader: Some(Box::new(loader)),
                session: session_dir,
                ..cahl_ui::UiOptions::default()
            };
            cahl_ui::run_debugger(initial, None, opts)?;
            return Ok(());
        }
    }
    let checkpoint = match (&args.checkpoint, &session) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(t)) => latest_checkpoint_of(t),
        _ => None,
    };
    // Without --model, a trace's session model is used when it can be found from here.
    let model = args
        .model
        .clone()
        .or_else(|| {
            let l = SessionModelLoader::of_session(session.as_deref()?)?;
            eprintln!("using the session's model {} (--model overrides)", l.model);
            Some(l.model)
        })
        .or_else(|| {
            default_embedded.then(|| {
                eprintln!("using the embedded default model (--model overrides)");
                "embedded".to_string()
            })
        });
    let backend: Option<Box<dyn ExecutorBackend>> = match &model {
        Some(m) => {
            eprintln!("loading {m}…");
            let cfg = session.as_deref().map(session_config).unwrap_or_default();
            let mut b = engine_backend(m, checkpoint.as_deref(), cfg)?;
            if let Some(dir) = &args.search_index {
                let idx = Bm25Index::open(dir)
                    .with_context(|| format!("opening the search index {}", dir.display()))?;
                b.set_search_index(Arc::new(idx));
            }
            Some(Box::new(b))
        }
        None => None,
    };
    let opts = cahl_ui::UiOptions {
        debug_dir: Some(debug_dir_of(&args)),
        session: session_dir,
        ..cahl_ui::UiOptions::default()
    };
    cahl_ui::run_debugger(initial, backend, opts)?;
    Ok(())
}

/// Where `S` saves: --debug-dir, else <session>/debug with --trace, the folder of --open, else
/// ./debug.
fn debug_dir_of(args: &DebugArgs) -> PathBuf {
    args.debug_dir
        .clone()
        .or_else(|| {
            args.trace
                .as_deref()
                .and_then(session_dir_of)
                .map(|d| d.join("debug"))
        })
        .or_else(|| {
            args.open
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("debug"))
}

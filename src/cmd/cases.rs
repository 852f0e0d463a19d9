//! `cahl-tui cases`: the case library of a session (probes saved from the debugger with `a`),
//! listed or re-run against checkpoints ([`cahl_engine::debugger::cases`]).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use cahl_engine::debugger::cases::{default_checkpoints, resolve_checkpoint, run_cases};
use cahl_sessions::cases::list_cases;

#[derive(clap::Args, Debug)]
pub struct CasesArgs {
    #[command(subcommand)]
    pub command: CasesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CasesCommand {
    /// Re-run every case of SESSION with the adapters of each --checkpoint: a table with one
    /// row per case and one column per checkpoint, printed as Markdown and written to
    /// SESSION/cases/report.{json,md} (the dashboard shows it with `v`).
    Run(RunArgs),
    /// List the cases of SESSION.
    List {
        /// The session directory.
        session: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The session directory.
    pub session: PathBuf,
    /// Whose adapters to measure with, in column order: a step (30), a checkpoint name
    /// (step-30), a folder with planner/ and executor/ adapters, or `base` (no adapters).
    /// Default: the session's first and latest intact checkpoints.
    #[arg(long = "checkpoint")]
    pub checkpoints: Vec<String>,
    /// Runs per case, overriding what each case was saved with.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Model (HF folder, .gguf or "embedded"); default: the session's own.
    #[arg(long)]
    pub model: Option<String>,
    /// Exit with status 1 when a case does not pass at the last checkpoint (for CI).
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: CasesArgs) -> Result<()> {
    match args.command {
        CasesCommand::List { session } => list(&session),
        CasesCommand::Run(a) => run_all(a),
    }
}

fn list(session: &std::path::Path) -> Result<()> {
    if !session.is_dir() {
        bail!("{} is not a session directory", session.display());
    }
    let (cases, problems) = list_cases(session)
        .with_context(|| format!("reading the cases of {}", session.display()))?;
    for p in &problems {
        eprintln!("{p}");
    }
    if cases.is_empty() {
        println!(
            "{} has no cases yet: open it with `cahl-tui replay {0}`, press d on a trajectory, then a",
            session.display()
        );
        return Ok(());
    }
    println!("| case | task | expects | plan | seed | runs | note |");
    println!("|---|---|---|---|---|---|---|");
    for c in cases {
        println!(
            "| {} | {} | {} | {} sub-task{} | {} | {} | {} |",
            c.id,
            c.task.id,
            c.expect.name(),
            c.plan.len(),
            if c.plan.len() == 1 { "" } else { "s" },
            c.seed,
            if c.greedy {
                "greedy".to_string()
            } else {
                c.samples.to_string()
            },
            c.note
        );
    }
    Ok(())
}

fn run_all(a: RunArgs) -> Result<()> {
    let session = &a.session;
    if !session.is_dir() {
        bail!("{} is not a session directory", session.display());
    }
    if a.samples == Some(0) {
        bail!("--samples 0: at least one run per case");
    }
    let choices = if a.checkpoints.is_empty() {
        default_checkpoints(session)?
    } else {
        a.checkpoints
            .iter()
            .map(|c| resolve_checkpoint(session, c))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    let labels: Vec<&str> = choices.iter().map(|c| c.label.as_str()).collect();
    eprintln!(
        "re-running the cases of {} with {}",
        session.display(),
        labels.join(", ")
    );
    let report = run_cases(
        session,
        a.model.as_deref(),
        &choices,
        a.samples,
        &mut |line| eprintln!("  {line}"),
    )?;
    for p in &report.problems {
        eprintln!("{p}");
    }
    let md = report.write(session).with_context(|| {
        format!(
            "writing the report into {}",
            session.join("cases").display()
        )
    })?;
    print!("{}", report.to_markdown());
    eprintln!("written: {} (and report.json beside it)", md.display());
    if a.check {
        let last = report.checkpoints.len().saturating_sub(1);
        let failing: Vec<&str> = report
            .rows
            .iter()
            .filter(|r| !r.cells.get(last).is_some_and(|c| c.pass))
            .map(|r| r.id.as_str())
            .collect();
        if !failing.is_empty() {
            eprintln!(
                "--check: {} case{} do not pass at {}: {}",
                failing.len(),
                if failing.len() == 1 { "" } else { "s" },
                report.checkpoints.last().map(String::as_str).unwrap_or("?"),
                failing.join(", ")
            );
            std::process::exit(1);
        }
    }
    Ok(())
}

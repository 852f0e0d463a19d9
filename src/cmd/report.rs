//! `cahl-tui report` and `cahl-tui compare`: Markdown reports with reward-curve plots (SVG and
//! PNG) and eval tables, and side-by-side comparisons of sessions on the same tasks.
use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The session directory.
    pub session: PathBuf,
    /// Where to write report.md and the plots (default: SESSION/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Two or more session directories (or eval output directories holding summary.json).
    #[arg(required = true, num_args = 2..)]
    pub paths: Vec<PathBuf>,
    /// Where to write compare.md and the plots (default: compare-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn report(args: ReportArgs) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.session.join("report"));
    let r = cahl_report::session_report(&args.session, &out)
        .with_context(|| format!("reporting on {}", args.session.display()))?;
    println!(
        "wrote {} ({} plot files)",
        r.markdown.display(),
        r.plots.len()
    );
    Ok(())
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "compare-{}",
            cahl_sessions::UtcDateTime::now().compact()
        ))
    });
    let r = cahl_report::compare(&args.paths, &out)?;
    let md = std::fs::read_to_string(&r.markdown)
        .with_context(|| format!("reading back {}", r.markdown.display()))?;
    print!("{md}");
    println!(
        "\nwrote {} ({} plot files)",
        r.markdown.display(),
        r.plots.len()
    );
    Ok(())
}

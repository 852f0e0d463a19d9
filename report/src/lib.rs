//! cahl-report: Markdown reports of training sessions (reward curves of both policies and their
//! components as SVG and PNG, the eval tables of the checkpoints evaluated) and side-by-side
//! comparisons of sessions on the same tasks.
//!
//! Evaluations belong to a session when `cahl-tui eval --session DIR` wrote them under
//! `DIR/eval/<name>/` (`summary.json` and `results.jsonl`).
//!
//! Modules: `evals` (finding a session's evaluations, their Markdown tables), `session` (the
//! session report), `compare` (side-by-side comparisons), `plot` (line charts).
mod compare;
mod evals;
pub mod plot;
mod session;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cahl_sessions::records::MetricsRecord;

pub use compare::compare;
pub use evals::{
    accuracy_markdown, efficiency_markdown, eval_markdown, find_evals, taxonomy_markdown, EvalEntry,
};
pub use plot::{line_chart, Series};
pub use session::{session_report, tail_mean};

/// Errors of report generation.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plotting {path}: {msg}")]
    Plot { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, ReportError>;

/// A labelled metric of a metrics line.
pub(crate) type Metric = (&'static str, fn(&MetricsRecord) -> f64);

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |e| ReportError::Io {
        path: p.to_path_buf(),
        source: e,
    }
}

/// Files a report wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOutput {
    pub markdown: PathBuf,
    /// Plot files (SVG and PNG) next to the markdown.
    pub plots: Vec<PathBuf>,
}

fn create_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))
}

fn write_file(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).map_err(io_err(p))
}

/// A plot in Markdown: the SVG inline, links to the SVG and PNG files.
fn plot_md(s: &mut String, title: &str, svg: &Path, png: &Path) {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let _ = writeln!(
        s,
        "![{title}]({})\n\n({title}: [`{}`]({}), [`{}`]({}))\n",
        name(svg),
        name(svg),
        name(svg),
        name(png),
        name(png)
    );
}

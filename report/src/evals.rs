//! A session's evaluations on disk and their Markdown tables (accuracy, efficiency,
//! misalignment taxonomy).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cahl_engine::eval::aggregate::{EfficiencySummary, Row};
use cahl_engine::eval::{read_summary, EvalSummary, Misalignment};

use crate::{io_err, ReportError, Result};

/// An evaluation found on disk.
#[derive(Debug, Clone)]
pub struct EvalEntry {
    pub dir: PathBuf,
    pub summary: EvalSummary,
}

/// Evaluations of a session: every `eval/*/summary.json`, ordered by bench, step and time.
pub fn find_evals(session: &Path) -> Result<Vec<EvalEntry>> {
    let root = session.join("eval");
    let rd = match std::fs::read_dir(&root) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&root)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err(&root))?;
        let dir = e.path();
        if !dir.join("summary.json").is_file() {
            continue;
        }
        let summary = read_summary(&dir).map_err(|err| ReportError::Input {
            path: dir.clone(),
            msg: err.to_string(),
        })?;
        out.push(EvalEntry { dir, summary });
    }
    out.sort_by(|a, b| {
        (&a.summary.bench, a.summary.step, &a.summary.created_at).cmp(&(
            &b.summary.bench,
            b.summary.step,
            &b.summary.created_at,
        ))
    });
    Ok(out)
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

pub(crate) fn opt_num(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into())
}

/// The accuracy table of an evaluation as Markdown.
pub fn accuracy_markdown(rows: &[Row], partial_label: Option<&str>) -> String {
    let mut s = String::new();
    let has_partial = rows.iter().any(|r| r.partial.is_some());
    let pl = partial_label.unwrap_or("partial");
    s.push_str("| category | correct | total | accuracy (%) |");
    if has_partial {
        let _ = write!(s, " {pl} (%) |");
    }
    s.push_str(" how |\n|---|---:|---:|---:|");
    if has_partial {
        s.push_str("---:|");
    }
    s.push_str("---|\n");
    for r in rows {
        let name = if r.kind == cahl_engine::eval::aggregate::RowKind::Summary {
            format!("**{}**", r.name)
        } else {
            r.name.clone()
        };
        let _ = write!(
            s,
            "| {name} | {} | {} | {} |",
            r.correct,
            r.total,
            pct(r.accuracy)
        );
        if has_partial {
            let _ = write!(s, " {} |", r.partial.map(pct).unwrap_or_default());
        }
        let _ = writeln!(s, " {} |", r.note);
    }
    s
}

/// Efficiency as a one-row Markdown table.
pub fn efficiency_markdown(e: &EfficiencySummary) -> String {
    format!(
        "| tasks | invalid invocations | invalid rate (%) | calls/task | repeated calls/task | extra calls/task | tokens/task | latency/task (s) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {}/{} | {} | {:.2} | {:.2} | {} | {:.1} | {:.2} |\n",
        e.tasks,
        e.invalid_calls,
        e.call_attempts,
        pct(e.invalid_rate),
        e.calls_per_task,
        e.repeated_calls_per_task,
        opt_num(e.extra_calls_per_task),
        e.tokens_per_task,
        e.latency_s_per_task
    )
}

/// Misalignment counts as Markdown (empty for flat runs).
pub fn taxonomy_markdown(counts: &BTreeMap<String, usize>, failed: usize) -> String {
    if counts.is_empty() {
        return "No misalignment taxonomy (flat run: there is no plan).\n".into();
    }
    let mut s =
        String::from("| misalignment | failed tasks | share of failures (%) |\n|---|---:|---:|\n");
    for m in Misalignment::ALL {
        let n = counts.get(m.name()).copied().unwrap_or(0);
        let share = if failed == 0 {
            0.0
        } else {
            n as f64 / failed as f64
        };
        let _ = writeln!(
            s,
            "| {} — {} | {n} | {} |",
            m.name(),
            m.describe(),
            pct(share)
        );
    }
    s
}

/// One evaluation as a Markdown section (heading level `###`).
pub fn eval_markdown(entry: &EvalEntry, base: &Path) -> String {
    let sm = &entry.summary;
    let rel = entry
        .dir
        .strip_prefix(base)
        .unwrap_or(&entry.dir)
        .display()
        .to_string();
    let mut s = String::new();
    let step = sm
        .step
        .map(|x| format!("step {x}"))
        .unwrap_or_else(|| "no checkpoint".into());
    let _ = writeln!(s, "### {} · {} · {step}\n", sm.bench, sm.mode);
    let _ = writeln!(
        s,
        "Files: `{rel}/summary.json`, `{rel}/results.jsonl`. Model `{}`{}; {} items (task set {}), seed {}, {}.\n",
        sm.model,
        sm.checkpoint
            .as_ref()
            .map(|c| format!(", adapters from `{c}`"))
            .unwrap_or_default(),
        sm.items,
        sm.task_fingerprint,
        sm.seed,
        sm.created_at
    );
    s.push_str(&accuracy_markdown(&sm.table, sm.partial_label.as_deref()));
    s.push_str("\nEfficiency:\n\n");
    s.push_str(&efficiency_markdown(&sm.efficiency));
    let _ = writeln!(s, "\nMisalignment of the {} failed tasks:\n", sm.failed);
    s.push_str(&taxonomy_markdown(&sm.taxonomy, sm.failed));
    s
}

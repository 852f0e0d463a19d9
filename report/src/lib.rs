//! cahl-report: Markdown reports of training sessions (reward curves of both policies and their
//! components as SVG and PNG, the eval tables of the checkpoints evaluated) and side-by-side
//! comparisons of sessions on the same tasks.
//!
//! Evaluations belong to a session when `cahl-tui eval --session DIR` wrote them under
//! `DIR/eval/<name>/` (`summary.json` and `results.jsonl`).
pub mod plot;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cahl_engine::eval::aggregate::{
    accuracy_table, efficiency_summary, taxonomy_counts, EfficiencySummary, Row,
};
use cahl_engine::eval::{read_results, read_summary, EvalSummary, ItemResult, Misalignment};
use cahl_sessions::records::{MetricsRecord, RunInfo};
use cahl_sessions::SessionReader;

pub use plot::{line_chart, Series};

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
type Metric = (&'static str, fn(&MetricsRecord) -> f64);

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

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn opt_num(x: Option<f64>) -> String {
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

fn metric_series(
    metrics: &[MetricsRecord],
    name: &str,
    f: impl Fn(&MetricsRecord) -> f64,
) -> Series {
    Series {
        name: name.into(),
        points: metrics.iter().map(|m| (m.step as f64, f(m))).collect(),
    }
}

fn component_series(metrics: &[MetricsRecord], prefix: &str) -> Vec<Series> {
    let keys: BTreeSet<&String> = metrics
        .iter()
        .flat_map(|m| m.components.keys())
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.into_iter()
        .map(|k| {
            metric_series(metrics, k, |m| {
                m.components.get(k).copied().unwrap_or(f64::NAN)
            })
        })
        .collect()
}

/// Mean of the finite values among the last 10% (at least one) of the steps.
pub fn tail_mean(metrics: &[MetricsRecord], f: impl Fn(&MetricsRecord) -> f64) -> f64 {
    if metrics.is_empty() {
        return f64::NAN;
    }
    let k = (metrics.len() / 10).max(1);
    let vals: Vec<f64> = metrics[metrics.len() - k..]
        .iter()
        .map(f)
        .filter(|v| v.is_finite())
        .collect();
    if vals.is_empty() {
        f64::NAN
    } else {
        vals.iter().sum::<f64>() / vals.len() as f64
    }
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

struct SessionData {
    info: Option<RunInfo>,
    metrics: Vec<MetricsRecord>,
    checkpoints: Vec<u64>,
}

fn open_session(dir: &Path) -> Result<SessionData> {
    if !dir.is_dir() {
        return Err(ReportError::Input {
            path: dir.to_path_buf(),
            msg: "not a session directory".into(),
        });
    }
    let r = SessionReader::open(dir).map_err(|e| ReportError::Input {
        path: dir.to_path_buf(),
        msg: e.to_string(),
    })?;
    if r.run_info().is_none() && r.metrics().is_empty() && !dir.join("eval").is_dir() {
        return Err(ReportError::Input {
            path: dir.to_path_buf(),
            msg: "no run.json, metrics.jsonl or eval/ here: not a session directory".into(),
        });
    }
    Ok(SessionData {
        info: r.run_info().cloned(),
        metrics: r.metrics().to_vec(),
        checkpoints: r.checkpoints().iter().map(|c| c.step).collect(),
    })
}

fn create_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))
}

fn write_file(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).map_err(io_err(p))
}

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

/// Write `report.md` and its plots for the session in `session` into `out`.
pub fn session_report(session: &Path, out: &Path) -> Result<ReportOutput> {
    let sd = open_session(session)?;
    create_dir(out)?;
    let mut md = String::new();
    let name = session
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| session.display().to_string());
    let _ = writeln!(md, "# Session report: {name}\n");
    let _ = writeln!(md, "Session directory: `{}`\n", session.display());
    if let Some(i) = &sd.info {
        let _ = writeln!(
            md,
            "| model | mode | planned steps | seed | device | started |\n|---|---|---:|---:|---|---|\n| `{}` | {} | {} | {} | {} | {} |\n",
            i.model, i.mode, i.total_steps, i.seed, i.device, i.started_at
        );
    }
    let _ = writeln!(
        md,
        "Steps recorded: {}. Checkpoints: {}.\n",
        sd.metrics.len(),
        if sd.checkpoints.is_empty() {
            "none".to_string()
        } else {
            sd.checkpoints
                .iter()
                .map(|s| format!("step-{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let mut plots = Vec::new();
    md.push_str("## Training curves\n\n");
    if sd.metrics.is_empty() {
        md.push_str("No metrics recorded (`metrics.jsonl` is empty or missing).\n\n");
    } else {
        let m = &sd.metrics;
        let charts: Vec<(&str, &str, &str, Vec<Series>)> = vec![
            (
                "rewards",
                "Mean reward per step",
                "reward",
                vec![
                    metric_series(m, "planner", |r| r.planner_reward),
                    metric_series(m, "executor", |r| r.executor_reward),
                ],
            ),
            (
                "success",
                "Success and misalignment rate",
                "rate",
                vec![
                    metric_series(m, "success", |r| r.success_rate),
                    metric_series(m, "misaligned", |r| r.misaligned_rate),
                ],
            ),
            (
                "planner-components",
                "Planner reward components",
                "value",
                component_series(m, "planner/"),
            ),
            (
                "executor-components",
                "Executor reward components",
                "value",
                component_series(m, "executor/"),
            ),
            (
                "loss",
                "GRPO loss and KL",
                "value",
                vec![
                    metric_series(m, "planner loss", |r| r.planner.loss),
                    metric_series(m, "executor loss", |r| r.executor.loss),
                    metric_series(m, "planner kl", |r| r.planner.kl),
                    metric_series(m, "executor kl", |r| r.executor.kl),
                ],
            ),
        ];
        for (stem, title, ylab, series) in charts {
            if series.is_empty() {
                let _ = writeln!(md, "{title}: no components recorded.\n");
                continue;
            }
            let (svg, png) = line_chart(&out.join(stem), title, "step", ylab, &series)?;
            plot_md(&mut md, title, &svg, &png);
            plots.push(svg);
            plots.push(png);
        }
        let _ = writeln!(
            md,
            "Last 10% of steps (mean): planner reward {}, executor reward {}, success {}, misaligned {}.\n",
            num(tail_mean(m, |r| r.planner_reward)),
            num(tail_mean(m, |r| r.executor_reward)),
            num(tail_mean(m, |r| r.success_rate)),
            num(tail_mean(m, |r| r.misaligned_rate)),
        );
    }
    md.push_str("## Evaluations\n\n");
    let evals = find_evals(session)?;
    if evals.is_empty() {
        let _ = writeln!(
            md,
            "No evaluations yet: run `cahl-tui eval --bench builtin --session {}` (writes `eval/<bench>-<mode>-step-N/`).\n",
            session.display()
        );
    }
    for e in &evals {
        md.push_str(&eval_markdown(e, session));
        md.push('\n');
    }
    let p = out.join("report.md");
    write_file(&p, &md)?;
    Ok(ReportOutput { markdown: p, plots })
}

/// One column of a comparison: a session, or a bare eval output directory.
struct Column {
    name: String,
    session: Option<SessionData>,
    evals: Vec<EvalEntry>,
}

fn column(path: &Path) -> Result<Column> {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| path.display().to_string());
    if path.join("summary.json").is_file() {
        let summary = read_summary(path).map_err(|e| ReportError::Input {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        return Ok(Column {
            name: base,
            session: None,
            evals: vec![EvalEntry {
                dir: path.to_path_buf(),
                summary,
            }],
        });
    }
    let sd = open_session(path)?;
    let evals = find_evals(path)?;
    Ok(Column {
        name: base,
        session: Some(sd),
        evals,
    })
}

/// The latest evaluation of `bench` (highest step, then newest).
fn latest<'a>(evals: &'a [EvalEntry], bench: &str) -> Option<&'a EvalEntry> {
    evals
        .iter()
        .filter(|e| e.summary.bench == bench)
        .max_by(|a, b| {
            (a.summary.step, &a.summary.created_at).cmp(&(b.summary.step, &b.summary.created_at))
        })
}

fn table_header(s: &mut String, first: &str, cols: &[String]) {
    let _ = write!(s, "| {first} |");
    for c in cols {
        let _ = write!(s, " {c} |");
    }
    s.push_str("\n|---|");
    for _ in cols {
        s.push_str("---:|");
    }
    s.push('\n');
}

fn table_row(s: &mut String, name: &str, vals: &[String]) {
    let _ = write!(s, "| {name} |");
    for v in vals {
        let _ = write!(s, " {v} |");
    }
    s.push('\n');
}

/// Compare sessions (or eval output directories) side by side: training summary, overlaid
/// reward curves, and for each benchmark the latest evaluation of each, re-aggregated on the
/// items all of them evaluated. Writes `compare.md` and plots into `out`.
pub fn compare(paths: &[PathBuf], out: &Path) -> Result<ReportOutput> {
    if paths.len() < 2 {
        return Err(ReportError::Input {
            path: paths.first().cloned().unwrap_or_default(),
            msg: "compare needs at least two sessions or eval directories".into(),
        });
    }
    let mut cols = Vec::new();
    for p in paths {
        cols.push(column(p)?);
    }
    // unique column names
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for c in cols.iter_mut() {
        let n = seen.entry(c.name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            c.name = format!("{} ({})", c.name, n);
        }
    }
    create_dir(out)?;
    let names: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
    let mut md = String::from("# Comparison\n\n");
    for (c, p) in cols.iter().zip(paths) {
        let _ = writeln!(md, "- **{}**: `{}`", c.name, p.display());
    }
    md.push('\n');
    let mut plots = Vec::new();
    let sessions: Vec<(&String, &SessionData)> = cols
        .iter()
        .filter_map(|c| c.session.as_ref().map(|s| (&c.name, s)))
        .collect();
    if !sessions.is_empty() {
        md.push_str("## Training\n\n");
        let cell = |f: &dyn Fn(&SessionData) -> String| -> Vec<String> {
            cols.iter()
                .map(|c| c.session.as_ref().map(f).unwrap_or_else(|| "—".into()))
                .collect()
        };
        table_header(&mut md, "training", &names);
        table_row(
            &mut md,
            "mode",
            &cell(&|s| s.info.as_ref().map(|i| i.mode.clone()).unwrap_or_default()),
        );
        table_row(
            &mut md,
            "model",
            &cell(&|s| {
                s.info
                    .as_ref()
                    .map(|i| format!("`{}`", i.model))
                    .unwrap_or_default()
            }),
        );
        table_row(
            &mut md,
            "steps recorded",
            &cell(&|s| s.metrics.len().to_string()),
        );
        let metrics: [Metric; 4] = [
            ("planner reward (last 10%)", |r| r.planner_reward),
            ("executor reward (last 10%)", |r| r.executor_reward),
            ("success rate (last 10%)", |r| r.success_rate),
            ("misaligned rate (last 10%)", |r| r.misaligned_rate),
        ];
        for (label, f) in metrics {
            table_row(&mut md, label, &cell(&|s| num(tail_mean(&s.metrics, f))));
        }
        md.push('\n');
        let overlays: [(&str, Metric); 3] = [
            (
                "compare-planner-reward",
                ("Planner reward", |r| r.planner_reward),
            ),
            (
                "compare-executor-reward",
                ("Executor reward", |r| r.executor_reward),
            ),
            ("compare-success", ("Success rate", |r| r.success_rate)),
        ];
        for (stem, (title, f)) in overlays {
            let series: Vec<Series> = sessions
                .iter()
                .map(|(n, s)| metric_series(&s.metrics, n, f))
                .collect();
            let (svg, png) = line_chart(&out.join(stem), title, "step", title, &series)?;
            plot_md(&mut md, title, &svg, &png);
            plots.push(svg);
            plots.push(png);
        }
    }
    let benches: BTreeSet<String> = cols
        .iter()
        .flat_map(|c| c.evals.iter().map(|e| e.summary.bench.clone()))
        .collect();
    md.push_str("## Evaluations on the same tasks\n\n");
    if benches.is_empty() {
        md.push_str("None of these has an evaluation (`cahl-tui eval --session DIR`).\n");
    }
    for bench in benches {
        let picked: Vec<Option<&EvalEntry>> =
            cols.iter().map(|c| latest(&c.evals, &bench)).collect();
        let mut results: Vec<Option<Vec<ItemResult>>> = Vec::new();
        for e in &picked {
            results.push(match e {
                Some(e) => Some(read_results(&e.dir).map_err(|err| ReportError::Input {
                    path: e.dir.clone(),
                    msg: err.to_string(),
                })?),
                None => None,
            });
        }
        let mut common: Option<BTreeSet<String>> = None;
        for r in results.iter().flatten() {
            let ids: BTreeSet<String> = r.iter().map(|i| i.id.clone()).collect();
            common = Some(match common {
                None => ids,
                Some(c) => c.intersection(&ids).cloned().collect(),
            });
        }
        let common = common.unwrap_or_default();
        let filtered: Vec<Option<Vec<ItemResult>>> = results
            .into_iter()
            .map(|r| {
                r.map(|v| {
                    v.into_iter()
                        .filter(|i| common.contains(&i.id))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let _ = writeln!(md, "### {bench}\n");
        let evaluated = picked.iter().filter(|p| p.is_some()).count();
        let totals: Vec<usize> = picked.iter().flatten().map(|e| e.summary.items).collect();
        let _ = writeln!(
            md,
            "{} items evaluated by all {evaluated} runs that have a {bench} evaluation{}.\n",
            common.len(),
            if totals.iter().any(|t| *t != common.len()) {
                format!(
                    " (of {:?} items each; the tables use only the shared ones)",
                    totals
                )
            } else {
                String::new()
            }
        );
        let tables: Vec<Option<Vec<Row>>> = filtered
            .iter()
            .map(|r| r.as_ref().map(|v| accuracy_table(&bench, v)))
            .collect();
        let mut row_names: Vec<String> = Vec::new();
        for t in tables.iter().flatten() {
            for r in t {
                if !row_names.contains(&r.name) {
                    row_names.push(r.name.clone());
                }
            }
        }
        table_header(&mut md, "accuracy (%)", &names);
        table_row(
            &mut md,
            "eval",
            &picked
                .iter()
                .map(|p| match p {
                    Some(e) => format!(
                        "{}{}",
                        e.summary.mode,
                        e.summary
                            .step
                            .map(|s| format!(", step {s}"))
                            .unwrap_or_default()
                    ),
                    None => "—".into(),
                })
                .collect::<Vec<_>>(),
        );
        for rn in &row_names {
            let vals: Vec<String> = tables
                .iter()
                .map(|t| match t {
                    Some(rows) => rows
                        .iter()
                        .find(|r| &r.name == rn)
                        .map(|r| format!("{} ({}/{})", pct(r.accuracy), r.correct, r.total))
                        .unwrap_or_else(|| "—".into()),
                    None => "—".into(),
                })
                .collect();
            table_row(&mut md, rn, &vals);
        }
        let effs: Vec<Option<EfficiencySummary>> = filtered
            .iter()
            .map(|r| r.as_ref().map(|v| efficiency_summary(v)))
            .collect();
        let eff_row = |md: &mut String, label: &str, f: &dyn Fn(&EfficiencySummary) -> String| {
            let vals: Vec<String> = effs
                .iter()
                .map(|e| e.as_ref().map(f).unwrap_or_else(|| "—".into()))
                .collect();
            table_row(md, label, &vals);
        };
        eff_row(&mut md, "invalid invocation rate (%)", &|e| {
            pct(e.invalid_rate)
        });
        eff_row(&mut md, "calls / task", &|e| {
            format!("{:.2}", e.calls_per_task)
        });
        eff_row(&mut md, "repeated calls / task", &|e| {
            format!("{:.2}", e.repeated_calls_per_task)
        });
        eff_row(&mut md, "extra calls / task", &|e| {
            opt_num(e.extra_calls_per_task)
        });
        eff_row(&mut md, "tokens / task", &|e| {
            format!("{:.1}", e.tokens_per_task)
        });
        eff_row(&mut md, "latency / task (s)", &|e| {
            format!("{:.2}", e.latency_s_per_task)
        });
        let taxes: Vec<Option<BTreeMap<String, usize>>> = filtered
            .iter()
            .zip(&picked)
            .map(|(r, p)| match (r, p) {
                (Some(v), Some(e)) if e.summary.mode != "flat" => Some(taxonomy_counts(v)),
                _ => None,
            })
            .collect();
        for m in Misalignment::ALL {
            let vals: Vec<String> = taxes
                .iter()
                .map(|t| {
                    t.as_ref()
                        .map(|c| c.get(m.name()).copied().unwrap_or(0).to_string())
                        .unwrap_or_else(|| "—".into())
                })
                .collect();
            table_row(&mut md, &format!("failed: {}", m.name()), &vals);
        }
        md.push('\n');
    }
    let p = out.join("compare.md");
    write_file(&p, &md)?;
    Ok(ReportOutput { markdown: p, plots })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_mean_uses_last_tenth() {
        let m: Vec<MetricsRecord> = (1..=20)
            .map(|i| MetricsRecord {
                step: i,
                planner_reward: i as f64,
                ..Default::default()
            })
            .collect();
        assert_eq!(tail_mean(&m, |r| r.planner_reward), 19.5);
        assert!(tail_mean(&m, |r| r.executor_reward).is_nan());
        assert!(tail_mean(&[], |r| r.planner_reward).is_nan());
    }
}

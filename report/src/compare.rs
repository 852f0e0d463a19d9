//! Side-by-side comparison of sessions (or eval output directories): training summary,
//! overlaid reward curves, and each benchmark's latest evaluations on their shared items.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cahl_engine::eval::aggregate::{
    accuracy_table, efficiency_summary, taxonomy_counts, EfficiencySummary, Row,
};
use cahl_engine::eval::{read_results, read_summary, ItemResult, Misalignment};

use crate::evals::{find_evals, opt_num, pct, EvalEntry};
use crate::plot::{line_chart, Series};
use crate::session::{metric_series, num, open_session, tail_mean, SessionData};
use crate::{create_dir, plot_md, write_file, Metric, ReportError, ReportOutput, Result};

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
        // The in-run held-out evaluations (greedy, test split): the first and the last.
        let held_out = |s: &SessionData, last: bool| -> String {
            let mut evals = s
                .metrics
                .iter()
                .filter_map(|m| m.eval.as_ref().map(|e| (m.step, e.success_rate)));
            let e = if last {
                evals.next_back()
            } else {
                evals.next()
            };
            e.map_or("—".into(), |(step, r)| {
                format!("{} (step {step})", num(r))
            })
        };
        table_row(
            &mut md,
            "held-out success, first evaluation",
            &cell(&|s| held_out(s, false)),
        );
        table_row(
            &mut md,
            "held-out success, last evaluation",
            &cell(&|s| held_out(s, true)),
        );
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
        let who = if evaluated == 1 {
            format!("the one run that has a {bench} evaluation")
        } else {
            format!("all {evaluated} runs that have a {bench} evaluation")
        };
        let _ = writeln!(
            md,
            "{} items evaluated by {who}{}.\n",
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

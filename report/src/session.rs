//! The session report: run info, training curves (SVG and PNG), the last steps' means and the
//! session's evaluations.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use cahl_sessions::records::{MetricsRecord, RunInfo};
use cahl_sessions::SessionReader;

use crate::evals::{eval_markdown, find_evals};
use crate::plot::{line_chart, Series};
use crate::{create_dir, plot_md, write_file, ReportError, ReportOutput, Result};

pub(crate) fn metric_series(
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

pub(crate) fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

pub(crate) struct SessionData {
    pub(crate) info: Option<RunInfo>,
    pub(crate) metrics: Vec<MetricsRecord>,
    pub(crate) checkpoints: Vec<u64>,
}

pub(crate) fn open_session(dir: &Path) -> Result<SessionData> {
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
    md.push_str(&held_out_markdown(&sd.metrics));
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

/// The in-run held-out evaluations (`[eval]`, greedy on the test split), one row per
/// evaluation; empty when the run made none.
pub fn held_out_markdown(metrics: &[MetricsRecord]) -> String {
    let rows: Vec<String> = metrics
        .iter()
        .filter_map(|m| {
            m.eval.as_ref().map(|e| {
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    m.step,
                    e.tasks,
                    num(e.success_rate),
                    num(e.planner_reward),
                    num(e.executor_reward),
                    num(e.invalid_rate),
                    num(e.planner_side_rate),
                    num(e.executor_side_rate),
                )
            })
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Held-out evaluation during training\n\nGreedy, on the test split (`[eval]`); step 0 is the baseline before training.\n\n| step | tasks | success | planner reward | executor reward | invalid invocations | planner-side failures | executor-side failures |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        md.push_str(&r);
        md.push('\n');
    }
    md.push('\n');
    md
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

//! Metric series for the curve panels, and downsampling to the chart width.

use cahl_sessions::MetricsRecord;

/// What the right-hand chart shows (the left one always shows planner and executor reward).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChartKind {
    /// Held-out success (markers), sampled success, misaligned and side rates.
    #[default]
    Success,
    /// The planner's mean reward components (`planner/param_level`, ...), in a panel of their
    /// own.
    Components,
    /// The executor's mean reward components (`executor/format`, ...).
    ExecutorComponents,
    /// Policy loss per policy.
    Loss,
    /// KL to the reference per policy.
    Kl,
}

impl ChartKind {
    /// A panel of reward components (where `C` picks one).
    pub fn is_components(self) -> bool {
        matches!(self, ChartKind::Components | ChartKind::ExecutorComponents)
    }

    /// The next kind in the `c` key cycle.
    pub fn next(self) -> ChartKind {
        match self {
            ChartKind::Success => ChartKind::Components,
            ChartKind::Components => ChartKind::ExecutorComponents,
            ChartKind::ExecutorComponents => ChartKind::Loss,
            ChartKind::Loss => ChartKind::Kl,
            ChartKind::Kl => ChartKind::Success,
        }
    }

    /// Chart title.
    pub fn title(self) -> &'static str {
        match self {
            ChartKind::Success => "rates",
            ChartKind::Components => "planner reward components",
            ChartKind::ExecutorComponents => "executor reward components",
            ChartKind::Loss => "loss",
            ChartKind::Kl => "KL",
        }
    }
}

/// Whole run (downsampled) or the last N steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartRange {
    /// Every step, downsampled to the chart width.
    Whole,
    /// Only the last `n` steps.
    Window(usize),
}

impl ChartRange {
    /// Label shown in the chart title.
    pub fn label(self) -> String {
        match self {
            ChartRange::Whole => "whole run".into(),
            ChartRange::Window(n) => format!("last {n} steps"),
        }
    }
}

/// A named series of `(step, value)` points (non-finite values removed).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points sorted by step.
    pub points: Vec<(f64, f64)>,
    /// Drawn as markers, not a line (sparse points such as held-out evaluations).
    pub markers: bool,
}

impl Series {
    /// The last value (the current one, for chart titles).
    pub fn last(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }
}

fn series_of(name: &str, metrics: &[MetricsRecord], f: impl Fn(&MetricsRecord) -> f64) -> Series {
    Series {
        name: name.to_string(),
        points: metrics
            .iter()
            .map(|m| (m.step as f64, f(m)))
            .filter(|(_, y)| y.is_finite())
            .collect(),
        markers: false,
    }
}

/// The held-out evaluations' success rates, as markers at their steps.
pub fn held_out_series(metrics: &[MetricsRecord]) -> Series {
    Series {
        markers: true,
        ..series_of("held-out", metrics, |m| {
            m.eval.as_ref().map_or(f64::NAN, |e| e.success_rate)
        })
    }
}

/// The latest held-out evaluation: (step, success rate).
pub fn latest_held_out(metrics: &[MetricsRecord]) -> Option<(u64, f64)> {
    metrics
        .iter()
        .rev()
        .find_map(|m| m.eval.as_ref().map(|e| (m.step, e.success_rate)))
}

/// Planner and executor mean reward.
pub fn reward_series(metrics: &[MetricsRecord]) -> Vec<Series> {
    vec![
        series_of("planner", metrics, |m| m.planner_reward),
        series_of("executor", metrics, |m| m.executor_reward),
    ]
}

/// The series of the right-hand chart.
pub fn kind_series(kind: ChartKind, metrics: &[MetricsRecord]) -> Vec<Series> {
    match kind {
        ChartKind::Success => vec![
            held_out_series(metrics),
            series_of("success", metrics, |m| m.success_rate),
            series_of("misaligned", metrics, |m| m.misaligned_rate),
            series_of("planner-side", metrics, |m| m.planner_side_rate),
            series_of("executor-side", metrics, |m| m.executor_side_rate),
        ],
        ChartKind::Loss => vec![
            series_of("planner", metrics, |m| m.planner.loss),
            series_of("executor", metrics, |m| m.executor.loss),
        ],
        ChartKind::Kl => vec![
            series_of("planner", metrics, |m| m.planner.kl),
            series_of("executor", metrics, |m| m.executor.kl),
        ],
        ChartKind::Components => components_of(metrics, "planner/"),
        ChartKind::ExecutorComponents => components_of(metrics, "executor/"),
    }
}

/// The components whose key starts with `prefix`, named without it (the panel says whose).
fn components_of(metrics: &[MetricsRecord], prefix: &str) -> Vec<Series> {
    let mut keys: Vec<&String> = metrics
        .iter()
        .flat_map(|m| m.components.keys())
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let mut s = series_of(k, metrics, |m| {
                m.components.get(k).copied().unwrap_or(f64::NAN)
            });
            s.name = k[prefix.len()..].to_string();
            s
        })
        .collect()
}

/// The metrics in range: all of them, or those of the last `n` steps.
pub fn in_range(metrics: &[MetricsRecord], range: ChartRange) -> &[MetricsRecord] {
    match range {
        ChartRange::Whole => metrics,
        ChartRange::Window(n) => {
            let Some(last) = metrics.last() else {
                return metrics;
            };
            let from = last.step.saturating_sub(n.saturating_sub(1) as u64);
            let start = metrics.partition_point(|m| m.step < from);
            &metrics[start..]
        }
    }
}

/// Only series `pick` of `series` when given (and in range), else all.
pub fn pick(series: Vec<Series>, pick: Option<usize>) -> Vec<Series> {
    match pick {
        Some(i) if i < series.len() => series.into_iter().skip(i).take(1).collect(),
        _ => series,
    }
}

/// The smoothing `m` turns on (the weight of the previous average, as TensorBoard's slider).
pub const DEFAULT_SMOOTHING: f64 = 0.8;

/// Exponential moving average with TensorBoard's debiasing: `avg = w·avg + (1 − w)·y`, divided
/// by `1 − w^n` after `n` points, so the first points are not pulled toward 0.
pub fn ema(points: &[(f64, f64)], w: f64) -> Vec<(f64, f64)> {
    let mut avg = 0.0;
    let mut debias = 1.0;
    points
        .iter()
        .map(|&(x, y)| {
            avg = w * avg + (1.0 - w) * y;
            debias *= w;
            (x, avg / (1.0 - debias).max(f64::MIN_POSITIVE))
        })
        .collect()
}

/// `series` smoothed with [`ema`] (markers are left as they are).
pub fn smoothed(series: Vec<Series>, smoothing: Option<f64>) -> Vec<Series> {
    let Some(w) = smoothing else {
        return series;
    };
    series
        .into_iter()
        .map(|s| {
            if s.markers {
                s
            } else {
                Series {
                    points: ema(&s.points, w),
                    ..s
                }
            }
        })
        .collect()
}

/// Reduces `points` to at most `buckets` points by averaging equal-width step buckets (x is the
/// bucket's mean step). Points are returned unchanged when they already fit.
pub fn downsample(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if buckets == 0 || points.len() <= buckets {
        return points.to_vec();
    }
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let width = ((x1 - x0) / buckets as f64).max(f64::MIN_POSITIVE);
    let mut out = Vec::with_capacity(buckets);
    let mut cur: Option<(usize, f64, f64, usize)> = None;
    for &(x, y) in points {
        let b = (((x - x0) / width) as usize).min(buckets - 1);
        match &mut cur {
            Some((cb, sx, sy, n)) if *cb == b => {
                *sx += x;
                *sy += y;
                *n += 1;
            }
            _ => {
                if let Some((_, sx, sy, n)) = cur.take() {
                    out.push((sx / n as f64, sy / n as f64));
                }
                cur = Some((b, x, y, 1));
            }
        }
    }
    if let Some((_, sx, sy, n)) = cur {
        out.push((sx / n as f64, sy / n as f64));
    }
    out
}

/// `[min, max]` over all points of all series, padded so a flat line is visible; `None` if
/// there are no points.
pub fn bounds(series: &[Series], axis_y: bool) -> Option<[f64; 2]> {
    let vals = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| if axis_y { p.1 } else { p.0 });
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    if hi - lo < 1e-9 {
        let pad = if lo.abs() > 1e-9 { lo.abs() * 0.1 } else { 1.0 };
        return Some([lo - pad, hi + pad]);
    }
    if axis_y {
        let pad = (hi - lo) * 0.05;
        Some([lo - pad, hi + pad])
    } else {
        Some([lo, hi])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_keeps_short_series_and_averages_buckets() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, i as f64)).collect();
        assert_eq!(downsample(&pts, 20), pts);
        let d = downsample(&pts, 2);
        assert_eq!(d.len(), 2);
        assert!((d[0].1 - 2.0).abs() < 1e-9, "{d:?}");
        assert!((d[1].1 - 7.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn window_takes_last_steps() {
        let m: Vec<MetricsRecord> = (1..=50)
            .map(|s| MetricsRecord {
                step: s,
                ..MetricsRecord::default()
            })
            .collect();
        let w = in_range(&m, ChartRange::Window(10));
        assert_eq!(w.len(), 10);
        assert_eq!(w[0].step, 41);
        assert_eq!(in_range(&m, ChartRange::Whole).len(), 50);
    }

    /// Held-out evaluations appear as markers on the success chart, and the latest one is
    /// found for the status bar.
    #[test]
    fn held_out_evaluations_are_markers_and_the_latest_is_found() {
        use cahl_sessions::records::HeldOutEval;
        let mut m: Vec<MetricsRecord> = (0..5)
            .map(|i| MetricsRecord {
                step: i,
                success_rate: 0.5,
                ..Default::default()
            })
            .collect();
        for (i, r) in [(0usize, 0.12), (4, 0.2)] {
            m[i].eval = Some(HeldOutEval {
                success_rate: r,
                ..Default::default()
            });
        }
        let s = kind_series(ChartKind::Success, &m);
        assert_eq!(s[0].name, "held-out");
        assert!(s[0].markers && !s[1].markers);
        assert_eq!(s[0].points, vec![(0.0, 0.12), (4.0, 0.2)]);
        assert_eq!(latest_held_out(&m), Some((4, 0.2)));
        assert_eq!(latest_held_out(&m[1..4]), None);
    }

    #[test]
    fn ema_is_debiased_and_leaves_markers() {
        let pts = vec![(1.0, 1.0), (2.0, 1.0), (3.0, 0.0)];
        let e = ema(&pts, 0.5);
        assert!(
            (e[0].1 - 1.0).abs() < 1e-12,
            "debiased: the first point is itself"
        );
        assert!((e[1].1 - 1.0).abs() < 1e-12);
        // avg3 = 0.5*0.75 + 0 = 0.375 over 1 - 0.125.
        assert!((e[2].1 - 0.375 / 0.875).abs() < 1e-12);
        let s = smoothed(
            vec![Series {
                name: "held-out".into(),
                points: pts.clone(),
                markers: true,
            }],
            Some(0.5),
        );
        assert_eq!(s[0].points, pts);
    }

    #[test]
    fn bounds_pad_flat_lines_and_skip_nan() {
        let s = vec![Series {
            name: "a".into(),
            points: vec![(1.0, 0.5), (2.0, 0.5)],
            markers: false,
        }];
        let b = bounds(&s, true).expect("bounds");
        assert!(b[0] < 0.5 && b[1] > 0.5);
        let m = vec![MetricsRecord::default()];
        assert!(reward_series(&m)[0].points.is_empty());
        assert_eq!(bounds(&reward_series(&m), true), None);
    }
}

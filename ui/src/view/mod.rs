//! Rendering only: every function draws [`AppState`] into a ratatui [`Frame`] and changes
//! nothing. Works with any ratatui backend (the terminal, or `TestBackend` in tests).

pub mod debugger;
pub mod help;
pub mod trajectory;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Clear, Dataset, GraphType, Paragraph, Wrap};
use ratatui::Frame;

use crate::state::charts::{self, Series};
use crate::state::{AppState, InputKind, Level, Mode, Pane};
use cahl_sessions::RunState;

/// Colours of chart series, in order.
pub const SERIES_COLORS: [Color; 8] = [
    Color::Cyan,
    Color::Yellow,
    Color::Green,
    Color::Magenta,
    Color::Red,
    Color::Blue,
    Color::LightGreen,
    Color::LightRed,
];

/// Draws the whole UI.
pub fn draw(f: &mut Frame, s: &AppState) {
    let area = f.area();
    if let Some(d) = &s.debugger {
        debugger::draw(f, area, d);
    } else {
        draw_dashboard(f, area, s);
    }
    if let (Some(v), None) = (&s.cases, &s.debugger) {
        draw_cases(f, area, v);
    }
    if s.help {
        draw_help(f, area, s.debugger.is_some());
    }
}

/// The case library: one row per case, one column per checkpoint of the last `cases run`.
fn draw_cases(f: &mut Frame, area: Rect, v: &crate::state::cases::CasesView) {
    let mut lines: Vec<Line> = Vec::new();
    let cks: Vec<String> = v
        .report
        .as_ref()
        .map(|rep| rep.checkpoints.clone())
        .unwrap_or_default();
    // Column widths from what they hold.
    let ew = v
        .cases
        .iter()
        .map(|c| c.expect.name().chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let cw: Vec<usize> = (0..cks.len())
        .map(|i| {
            let cells = v.report.iter().flat_map(|rep| {
                rep.rows
                    .iter()
                    .filter_map(move |r| r.cells.get(i).map(|c| c.short().chars().count()))
            });
            cells.chain([cks[i].chars().count(), 7]).max().unwrap_or(7)
        })
        .collect();
    let lead = 1 + 9 + 1 + ew + 1 + 8;
    match &v.report {
        Some(rep) => lines.push(Line::styled(
            format!(
                " last run {} on {} · ✓ = the runs meet the expectation · solved/runs · top failure",
                rep.created, rep.model
            ),
            Style::new().dim(),
        )),
        None if !v.cases.is_empty() => lines.push(Line::styled(
            " not run yet",
            Style::new().fg(Color::Yellow),
        )),
        None => {}
    }
    if v.cases.is_empty() {
        lines.push(Line::raw(
            " no cases yet: open the debugger on a trajectory (d), shape a plan, press a",
        ));
    } else {
        let mut head = vec![Span::styled(
            format!(" {:<9} {:<ew$} {:<8}", "case", "expects", "plan"),
            Style::new().bold(),
        )];
        for (c, w) in cks.iter().zip(&cw) {
            head.push(Span::styled(format!("│ {c:<w$} "), Style::new().bold()));
        }
        lines.push(Line::from(head));
        for c in &v.cases {
            let mut row = vec![Span::raw(format!(
                " {:<9} {:<ew$} {:<8}",
                c.id,
                c.expect.name(),
                format!(
                    "{} step{}",
                    c.plan.len(),
                    if c.plan.len() == 1 { "" } else { "s" }
                )
            ))];
            let cells = v
                .report
                .as_ref()
                .and_then(|rep| rep.rows.iter().find(|r| r.id == c.id))
                .map(|r| r.cells.clone());
            for (i, w) in cw.iter().enumerate() {
                let (text, style) = match cells.as_ref().and_then(|cs| cs.get(i)) {
                    Some(cell) if cell.error.is_some() => {
                        ("error".to_string(), Style::new().fg(Color::Yellow))
                    }
                    Some(cell) => (
                        cell.short(),
                        Style::new().fg(if cell.pass { Color::Green } else { Color::Red }),
                    ),
                    None => ("not run".to_string(), Style::new().dim()),
                };
                row.push(Span::raw("│ "));
                row.push(Span::styled(format!("{text:<w$} "), style));
            }
            lines.push(Line::from(row));
            let task = if c.task.id.is_empty() {
                "(typed task)"
            } else {
                &c.task.id
            };
            lines.push(Line::styled(
                format!(
                    "   {task} · {}",
                    if c.note.is_empty() {
                        "no note"
                    } else {
                        &c.note
                    }
                ),
                Style::new().dim(),
            ));
        }
        if let Some(rep) = &v.report {
            let mut pass = vec![Span::styled(
                format!(" {:<w$}", "passing", w = lead - 1),
                Style::new().bold(),
            )];
            for (p, w) in rep.passing().into_iter().zip(&cw) {
                pass.push(Span::styled(
                    format!("│ {:<w$} ", format!("{p}/{}", rep.rows.len())),
                    Style::new().bold(),
                ));
            }
            lines.push(Line::from(pass));
        }
    }
    for p in &v.problems {
        lines.push(Line::styled(
            format!(" {p}"),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(
            " re-run them: cahl-tui cases run {} [--checkpoint A --checkpoint B]",
            v.session
        ),
        Style::new().fg(Color::Cyan),
    ));
    let scroll = v.scroll.min(lines.len().saturating_sub(1)) as u16;
    let width = lines.iter().map(|l| l.width()).max().unwrap_or(20) + 2;
    let r = centered(
        area,
        (width as u16).max(40),
        (lines.len() as u16 + 2).min(area.height.saturating_sub(2)),
    );
    f.render_widget(ratatui::widgets::Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(" cases · j/k scroll · any other key closes "))
            .scroll((scroll, 0)),
        r,
    );
}

fn title_line(s: &AppState) -> Line<'static> {
    let mode = match s.mode {
        Mode::Live => "TRAIN",
        Mode::Replay => "REPLAY",
        Mode::Debug => "DEBUG",
    };
    let mut spans = vec![
        Span::styled(" cahl-tui ", Style::new().bold().reversed()),
        Span::styled(format!(" {mode} "), Style::new().bold().fg(Color::Cyan)),
    ];
    if let Some(i) = &s.run_info {
        spans.push(Span::raw(format!(
            " model {} · mode {} · seed {} ",
            if i.model.is_empty() { "?" } else { &i.model },
            if i.mode.is_empty() { "?" } else { &i.mode },
            i.seed
        )));
        if i.oracle {
            spans.push(Span::styled(
                " ORACLE continuation (gold-ranked) ",
                Style::new().bold().fg(Color::Yellow),
            ));
        }
        if !i.backend.is_empty() {
            spans.push(Span::raw(format!(" rollouts {} ", i.backend)));
        }
    }
    spans.push(Span::styled(" ? help ", Style::new().dim()));
    // Staleness: steps between the policy a rollout was sampled with and the one it trains.
    if let Some((step, v)) = s.trajs.policy {
        let stale = step.saturating_sub(1).saturating_sub(v);
        spans.push(Span::styled(
            format!(" policy v{v}, {stale} stale "),
            if stale > 0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new().dim()
            },
        ));
    }
    if let Some(p) = &s.session_path {
        spans.push(Span::styled(
            format!(" {}", p.display()),
            Style::new().dim(),
        ));
    }
    Line::from(spans)
}

fn draw_dashboard(f: &mut Frame, area: Rect, s: &AppState) {
    let mut banner: Vec<Line> = Vec::new();
    if let Some(e) = &s.last_error {
        banner.push(Line::styled(
            format!(" engine error: {e}"),
            Style::new().fg(Color::White).bg(Color::Red),
        ));
    }
    if !s.problems.is_empty() {
        let n = s.problems.len();
        let first = &s.problems[0];
        let what = if n == 1 {
            "1 file problem".to_string()
        } else {
            format!("{n} file problems (first shown, all in messages)")
        };
        let style = Style::new().fg(Color::Black).bg(Color::Yellow);
        banner.push(Line::styled(
            format!(" ⚠ {what}; the readable part is shown"),
            style,
        ));
        banner.push(Line::styled(format!("   {first}"), style));
    }
    // A small terminal shows one pane at a time under a tab line (the middle row); a larger one
    // the charts there and the stream beside the messages.
    let compact = area.width < COMPACT_WIDTH || area.height < COMPACT_HEIGHT;
    let middle_h = if compact {
        1
    } else {
        (area.height.saturating_sub(4) * 2 / 5).max(6)
    };
    let [title, banner_area, middle, body, status, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner.len() as u16),
        Constraint::Length(middle_h),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(title_line(s)), title);
    f.render_widget(Paragraph::new(banner), banner_area);
    draw_status(f, status, s);
    draw_bottom(f, bottom, s);
    if compact {
        let tab = |on: bool, text: &str| {
            if on {
                Span::styled(format!(" {text} "), Style::new().reversed().bold())
            } else {
                Span::styled(format!(" {text} "), Style::new().dim())
            }
        };
        let stream = !s.compact_charts;
        f.render_widget(
            Paragraph::new(Line::from(vec![
                tab(s.compact_charts, "1 charts"),
                tab(stream && s.focus == Pane::Trajectories, "2 trajectories"),
                tab(stream && s.focus == Pane::Log, "tab: messages"),
            ])),
            middle,
        );
        if s.compact_charts {
            let [a, b] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(body);
            draw_chart_pair(f, a, b, s);
        } else if s.focus == Pane::Log {
            draw_log(f, body, s);
        } else if s.trajs.expanded {
            trajectory::draw_detail(f, body, s);
        } else {
            trajectory::draw_list(f, body, s);
        }
        return;
    }
    draw_charts(f, middle, s);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(70), Constraint::Percentage(30)]).areas(body);
    if s.trajs.expanded {
        trajectory::draw_detail(f, left, s);
    } else {
        trajectory::draw_list(f, left, s);
    }
    draw_log(f, right, s);
}

/// Three y-axis labels (low, middle, high) with as many decimals as the range needs to tell
/// them apart (scientific notation for tiny ranges such as a KL of 1e-4).
fn axis_labels(lo: f64, hi: f64) -> [String; 3] {
    let mid = (lo + hi) / 2.0;
    let big = lo.abs().max(hi.abs());
    let half = ((hi - lo) / 2.0).abs();
    let decimals = if half > 0.0 {
        (-half.log10()).ceil().max(0.0) as usize + 1
    } else {
        2
    };
    let fmt = |v: f64| {
        // No "-0.000".
        let v = if v == 0.0 { 0.0 } else { v };
        if big >= 10_000.0 || decimals > 4 {
            format!("{v:.2e}")
        } else {
            format!("{v:.decimals$}")
        }
    };
    [fmt(lo), fmt(mid), fmt(hi)]
}

fn fmt_axis(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.1e}", v)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws one braille chart of `series` (downsampled to the width) with labelled axes.
pub fn draw_series_chart(
    f: &mut Frame,
    area: Rect,
    title: String,
    y_name: &str,
    series: Vec<Series>,
) {
    // The legend sits on the bottom border, outside the plot: each series in its colour with
    // its current value (its last point).
    let mut spans = vec![Span::raw(" ")];
    for (i, s) in series.iter().enumerate() {
        let color = SERIES_COLORS[i % SERIES_COLORS.len()];
        let now = s.last().map_or("-".into(), fmt_axis);
        spans.push(Span::styled(
            format!("{} {} {now} ", if s.markers { "■" } else { "━" }, s.name),
            Style::new().fg(color),
        ));
    }
    let block = Block::bordered()
        .title(title)
        .title_bottom(Line::from(spans));
    let buckets = (area.width.saturating_sub(10) as usize) * 2;
    let series: Vec<Series> = series
        .into_iter()
        .map(|s| Series {
            points: if s.markers {
                s.points
            } else {
                charts::downsample(&s.points, buckets)
            },
            name: s.name,
            markers: s.markers,
        })
        .collect();
    let (Some(xb), Some(yb)) = (
        charts::bounds(&series, false),
        charts::bounds(&series, true),
    ) else {
        f.render_widget(
            Paragraph::new("no data yet")
                .block(block)
                .style(Style::new().dim()),
            area,
        );
        return;
    };
    let datasets: Vec<Dataset> = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Dataset::default()
                .name(s.name.clone())
                .marker(if s.markers {
                    Marker::Block
                } else {
                    Marker::Braille
                })
                .graph_type(if s.markers {
                    GraphType::Scatter
                } else {
                    GraphType::Line
                })
                .style(Style::new().fg(SERIES_COLORS[i % SERIES_COLORS.len()]))
                .data(&s.points)
        })
        .collect();
    let xmid = (xb[0] + xb[1]) / 2.0;
    let chart = Chart::new(datasets)
        .block(block)
        .legend_position(None)
        .x_axis(
            Axis::default()
                .title("step")
                .style(Style::new().dim())
                .bounds(xb)
                .labels([
                    format!("{:.0}", xb[0]),
                    format!("{xmid:.0}"),
                    format!("{:.0}", xb[1]),
                ]),
        )
        .y_axis(
            Axis::default()
                .title(y_name.to_string())
                .style(Style::new().dim())
                .bounds(yb)
                .labels(axis_labels(yb[0], yb[1])),
        );
    f.render_widget(chart, area);
}

/// Below this width or height the dashboard shows one pane at a time.
pub const COMPACT_WIDTH: u16 = 100;
/// See [`COMPACT_WIDTH`].
pub const COMPACT_HEIGHT: u16 = 30;

fn draw_charts(f: &mut Frame, area: Rect, s: &AppState) {
    let [l, r] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    draw_chart_pair(f, l, r, s);
}

/// The reward chart in `l` and the chosen right-hand chart in `r`.
fn draw_chart_pair(f: &mut Frame, l: Rect, r: Rect, s: &AppState) {
    let m = charts::in_range(&s.metrics, s.range);
    let range = match s.smoothing {
        Some(w) => format!("{} · EMA {w}", s.range.label()),
        None => s.range.label(),
    };
    draw_series_chart(
        f,
        l,
        format!(" mean reward · {range} "),
        "reward",
        charts::smoothed(charts::reward_series(m), s.smoothing),
    );
    draw_series_chart(
        f,
        r,
        format!(" {} · {range} · c: next ", s.chart.title()),
        match s.chart {
            charts::ChartKind::Success => "rate",
            charts::ChartKind::Components | charts::ChartKind::ExecutorComponents => "reward",
            charts::ChartKind::Loss => "loss",
            charts::ChartKind::Kl => "KL",
        },
        charts::smoothed(
            charts::pick(
                charts::kind_series(s.chart, m),
                s.component.filter(|_| s.chart.is_components()),
            ),
            s.smoothing,
        ),
    );
}

fn focus_block(title: String, focused: bool) -> Block<'static> {
    let b = Block::bordered().title(title);
    if focused {
        b.border_style(Style::new().fg(Color::Cyan))
    } else {
        b
    }
}

fn draw_log(f: &mut Frame, area: Rect, s: &AppState) {
    let block = focus_block(" messages ".into(), s.focus == Pane::Log);
    let inner_h = area.height.saturating_sub(2) as usize;
    let end = s.log.len().saturating_sub(s.log_scroll);
    let start = end.saturating_sub(inner_h);
    let lines: Vec<Line> = s
        .log
        .iter()
        .skip(start)
        .take(end - start)
        .map(|l| {
            let style = match l.level {
                Level::Info => Style::new(),
                Level::Warn => Style::new().fg(Color::Yellow),
                Level::Error => Style::new().fg(Color::Red),
            };
            Line::styled(l.text.clone(), style)
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// Formats seconds as `1h02m`, `5m12s` or `42s`.
pub fn fmt_duration(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "?".into();
    }
    let t = s.round() as u64;
    if t >= 3600 {
        format!("{}h{:02}m", t / 3600, (t % 3600) / 60)
    } else if t >= 60 {
        format!("{}m{:02}s", t / 60, t % 60)
    } else {
        format!("{t}s")
    }
}

/// Formats a byte count as GiB/MiB.
pub fn fmt_bytes(b: u64) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

fn draw_status(f: &mut Frame, area: Rect, s: &AppState) {
    let sep = Span::styled(" │ ", Style::new().dim());
    let state_style = match s.run_state {
        RunState::Running => Style::new().fg(Color::Green),
        RunState::Paused => Style::new().fg(Color::Yellow),
        RunState::Stopping => Style::new().fg(Color::Magenta),
        RunState::Finished => Style::new().fg(Color::Blue),
    };
    let state = if s.mode == Mode::Replay {
        if s.engine_connected {
            "following"
        } else {
            "replay"
        }
        .to_string()
    } else {
        s.run_state.label().to_string()
    };
    let tps = s.tokens_per_s();
    let mut spans = vec![
        Span::styled(
            format!(" {state} "),
            state_style.add_modifier(Modifier::BOLD),
        ),
        sep.clone(),
        Span::raw(format!("step {}/{}", s.last_step(), s.total_steps)),
        sep.clone(),
        Span::raw(if tps.is_finite() {
            format!("{tps:.0} tok/s")
        } else {
            "- tok/s".into()
        }),
        sep.clone(),
        Span::raw(format!(
            "ETA {}",
            s.eta_s().map_or("-".into(), fmt_duration)
        )),
        sep.clone(),
        Span::raw(if s.device.is_empty() {
            "device ?".into()
        } else {
            s.device.clone()
        }),
    ];
    if let Some((step, rate)) = charts::latest_held_out(&s.metrics) {
        spans.push(sep.clone());
        spans.push(Span::styled(
            format!("held-out {:.0}% @{step}", 100.0 * rate),
            Style::new().bold(),
        ));
    }
    if let Some(mem) = s.progress.as_ref().and_then(|p| p.memory_bytes) {
        spans.push(sep.clone());
        spans.push(Span::raw(format!("mem {}", fmt_bytes(mem))));
    }
    if let Some(p) = &s.progress {
        if s.mode == Mode::Live && !p.phase.is_empty() {
            spans.push(sep.clone());
            spans.push(Span::raw(p.phase.clone()));
        }
    }
    f.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().bg(Color::DarkGray)),
        area,
    );
}

fn draw_bottom(f: &mut Frame, area: Rect, s: &AppState) {
    let line = if let Some(input) = &s.input {
        let prompt = match input.kind {
            InputKind::Search => "search: ",
            InputKind::Jump => "jump to step: ",
            InputKind::ConfirmStop => "stop training and save a checkpoint? (y/n) ",
        };
        Line::from(vec![
            Span::styled(prompt, Style::new().bold().fg(Color::Cyan)),
            Span::raw(input.text.clone()),
            Span::styled("█", Style::new().fg(Color::Cyan)),
        ])
    } else if let Some(msg) = &s.flash {
        Line::styled(format!(" {msg}"), Style::new().fg(Color::Yellow))
    } else {
        let hints = if s.mode == Mode::Live {
            " ? help · enter expand · f filter · space freeze · / search · g jump · c chart · p pause · s save · x stop · d debug · q quit"
        } else {
            " ? help · enter expand · f filter · space freeze · / search · g jump · c chart · w window · d debug · q quit"
        };
        Line::styled(hints, Style::new().dim())
    };
    f.render_widget(Paragraph::new(line), area);
}

/// A rectangle of `w`×`h` centred in `area` (clamped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_help(f: &mut Frame, area: Rect, in_debugger: bool) {
    let (title, keys) = if in_debugger {
        (" debugger keys (any key closes) ", help::DEBUGGER_KEYS)
    } else {
        (" keys (any key closes) ", help::DASHBOARD_KEYS)
    };
    // As wide as the longest entry; in two columns when one does not fit the height (the
    // debugger's list was clipped at 80x24); wrapped when even that is too narrow.
    let colw = keys
        .iter()
        .map(|(_, d)| 20 + d.chars().count())
        .max()
        .unwrap_or(20);
    let n = keys.len();
    let two = n + 2 > area.height as usize && area.width as usize >= 2 * colw + 2;
    let rows = if two { n.div_ceil(2) } else { n };
    let entry = |i: usize, pad: bool| -> Vec<Span<'static>> {
        let Some((k, d)) = keys.get(i) else {
            return Vec::new();
        };
        let d = if pad {
            format!("{d:<w$}", w = colw - 20)
        } else {
            d.to_string()
        };
        vec![
            Span::styled(format!(" {k:<18} "), Style::new().bold().fg(Color::Cyan)),
            Span::raw(d),
        ]
    };
    let lines: Vec<Line> = (0..rows)
        .map(|r| {
            let mut spans = entry(r, two);
            if two {
                spans.extend(entry(r + rows, false));
            }
            Line::from(spans)
        })
        .collect();
    let width = (if two { 2 * colw + 2 } else { colw + 2 }).min(area.width as usize);
    // Lines wrap inside the border: count the rows they take.
    let inner = width.saturating_sub(2).max(1);
    let height: usize = lines.iter().map(|l| l.width().max(1).div_ceil(inner)).sum();
    let rect = centered(area, width as u16, height as u16 + 2);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(title))
            .wrap(Wrap { trim: false }),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::axis_labels;

    /// A KL range of 1e-4 got the labels "0.001 / 0.001 / -0.000"; now they differ.
    #[test]
    fn axis_labels_tell_their_values_apart() {
        let [a, b, c] = axis_labels(-0.0001, 0.0012);
        assert!(a != b && b != c, "{a} {b} {c}");
        assert!(!a.starts_with("-0.0") || a.contains('e'), "{a}");
        assert_eq!(axis_labels(0.0, 1.0), ["0.00", "0.50", "1.00"]);
        assert_eq!(axis_labels(0.0, 2.0), ["0.0", "1.0", "2.0"]);
        assert_eq!(axis_labels(-1e-9, 1e-9)[1], "0.00e0");
    }
}

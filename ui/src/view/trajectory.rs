//! The trajectory stream (one line per trajectory) and the expanded plan tree.

use cahl_sessions::{CallRecord, RewardBreakdown, TrajectoryRecord};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::focus_block;
use crate::state::trajs::{plan_rows, short_label, TrajItem};
use crate::state::{AppState, Pane};

/// Formats a reward (`-` when unknown).
pub fn fmt_reward(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.2}")
    } else {
        "  -  ".into()
    }
}

/// `name({"arg":1})`, compact.
pub fn fmt_call(c: &CallRecord) -> String {
    let args = serde_json::to_string(&c.arguments).unwrap_or_default();
    format!("{}({})", c.name, args)
}

/// A weight without trailing zeros: 2, 0.5, 0.25.
fn fmt_weight(w: f64) -> String {
    let s = format!("{w:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `+4.00 (format +1.00, semantics +1.00×2, syntax +1.00)` plus reasons (weights other than 1
/// shown where recorded).
pub fn fmt_breakdown(r: &RewardBreakdown) -> String {
    // A component whose weight is not 1 shows it: "semantics +1.00×2".
    let comps: Vec<String> = r
        .components
        .iter()
        .map(|(k, v)| match r.weights.get(k) {
            Some(w) if (*w - 1.0).abs() > 1e-12 => {
                format!("{k} {}×{}", fmt_reward(*v).trim(), fmt_weight(*w))
            }
            _ => format!("{k} {}", fmt_reward(*v).trim()),
        })
        .collect();
    let mut s = fmt_reward(r.total).trim().to_string();
    if !comps.is_empty() {
        s.push_str(&format!(" ({})", comps.join(", ")));
    }
    if !r.reasons.is_empty() {
        s.push_str(&format!(" — {}", r.reasons.join("; ")));
    }
    s
}

/// `id` in `w` columns: whole when it fits, else its end (where ids differ) after an ellipsis.
fn fit_id(id: &str, w: usize) -> String {
    let n = id.chars().count();
    if n <= w {
        format!("{id:<w$}")
    } else {
        let tail: String = id.chars().skip(n - w.saturating_sub(1)).collect();
        format!("…{tail}")
    }
}

fn item_line(it: &TrajItem, selected: bool, width: usize, id_w: usize) -> Line<'static> {
    let (mark, mark_style) = if it.success {
        ("✓", Style::new().fg(Color::Green))
    } else {
        ("✗", Style::new().fg(Color::Red))
    };
    // The failure label of the best plan (magenta: planner side, yellow: executor side), bold
    // when the task is flagged misaligned; blank on success.
    let mis = match (&it.failure, it.success) {
        (Some(l), false) => {
            let color = match it.failure_side.as_deref() {
                Some("planner") => Color::Magenta,
                Some("executor") => Color::Yellow,
                _ => Color::Gray,
            };
            let mut st = Style::new().fg(color);
            if it.misaligned {
                st = st.bold();
            }
            Span::styled(format!(" {:<8}", short_label(l)), st)
        }
        _ if it.misaligned => Span::styled(
            format!(" {:<8}", "M"),
            Style::new().fg(Color::Magenta).bold(),
        ),
        _ => Span::raw(" ".repeat(9)),
    };
    let shape = match it.plan_len {
        Some((g, n)) => format!("{g}×{n:<2}"),
        None => " ?  ".into(),
    };
    let head = format!(" {:>5} ", it.step);
    let id = fit_id(&it.task_id, id_w);
    let mut spans = vec![
        Span::raw(if selected { "▶" } else { " " }),
        Span::styled(head, Style::new().dim()),
        Span::styled(mark, mark_style),
        mis,
        Span::raw(format!(" {id} ")),
        Span::raw(format!("{shape} ")),
        Span::raw(format!(
            "P{} E{} ",
            fmt_reward(it.planner_reward),
            fmt_reward(it.executor_reward)
        )),
    ];
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    if let Some(t) = &it.task_text {
        let room = width.saturating_sub(used);
        let text: String = t.replace('\n', " ").chars().take(room).collect();
        spans.push(Span::styled(text, Style::new().dim()));
    }
    let line = Line::from(spans);
    if selected {
        line.style(Style::new().add_modifier(Modifier::REVERSED))
    } else {
        line
    }
}

/// Draws the one-line-per-trajectory list.
pub fn draw_list(f: &mut Frame, area: Rect, s: &AppState) {
    let t = &s.trajs;
    let vis = t.visible();
    let mut title = format!(" trajectories · {} · {} shown", t.filter.label(), vis.len());
    if !t.search.is_empty() {
        title.push_str(&format!(" · search '{}'", t.search));
    }
    if t.frozen_at.is_some() {
        title.push_str(&format!(" · FROZEN (+{} new)", t.hidden_by_freeze()));
    }
    if t.dropped > 0 {
        title.push_str(&format!(" · {} older on disk", t.dropped));
    }
    title.push(' ');
    let block = focus_block(title, s.focus == Pane::Trajectories);
    let h = area.height.saturating_sub(3) as usize;
    let cur = t.current();
    let pos = cur
        .and_then(|c| vis.iter().position(|x| *x == c))
        .unwrap_or(0);
    let offset = (pos + 1).saturating_sub(h.max(1));
    let width = area.width.saturating_sub(2) as usize;
    // The id column fits the longest id shown (at most a third of the width, at least 8).
    let id_w = vis
        .iter()
        .filter_map(|seq| t.get(*seq))
        .map(|it| it.task_id.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, (width / 3).max(8));
    let mut lines = vec![Line::styled(
        format!(
            "  step  ok failure  {:<id_w$} plans reward (planner, executor)   task text",
            "task"
        ),
        Style::new().dim().underlined(),
    )];
    if vis.is_empty() {
        lines.push(Line::styled(
            if t.is_empty() {
                "  no trajectories yet"
            } else {
                "  nothing matches the filter/search"
            },
            Style::new().dim(),
        ));
    }
    lines.extend(
        vis.iter()
            .skip(offset)
            .take(h)
            .filter_map(|seq| t.get(*seq))
            .map(|it| item_line(it, Some(it.seq) == cur, width, id_w)),
    );
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn push_multiline(
    out: &mut Vec<Line<'static>>,
    indent: &str,
    label: &str,
    text: &str,
    style: Style,
) {
    let mut first = true;
    for l in text.lines() {
        let prefix = if first {
            format!("{indent}{label}")
        } else {
            format!("{indent}{}", " ".repeat(label.chars().count()))
        };
        first = false;
        out.push(Line::from(vec![
            Span::styled(prefix, Style::new().dim()),
            Span::styled(l.to_string(), style),
        ]));
    }
    if first {
        out.push(Line::from(vec![
            Span::styled(format!("{indent}{label}"), Style::new().dim()),
            Span::styled("(empty)", Style::new().dim()),
        ]));
    }
}

/// The expanded view of a trajectory: task and gold, then plan → sub-tasks → executor samples.
pub fn trajectory_lines(r: &TrajectoryRecord) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let ok = |b: bool| {
        if b {
            Span::styled("✓ success", Style::new().fg(Color::Green))
        } else {
            Span::styled("✗ failed", Style::new().fg(Color::Red))
        }
    };
    out.push(Line::from(vec![
        Span::styled(format!("task {} ", r.task.id), Style::new().bold()),
        Span::raw(format!(
            "[{}] step {} seed {} {}",
            r.task.split,
            r.step,
            r.seed,
            r.policy_version
                .map(|v| format!("policy v{v} "))
                .unwrap_or_default()
        )),
        ok(r.success),
        if r.misaligned {
            Span::styled("  misaligned", Style::new().fg(Color::Magenta).bold())
        } else {
            Span::raw("")
        },
    ]));
    push_multiline(&mut out, "  ", "request: ", &r.task.text, Style::new());
    if !r.task.gold_plan.is_empty() {
        out.push(Line::styled("  gold plan:", Style::new().dim()));
        for (i, g) in r.task.gold_plan.iter().enumerate() {
            out.push(Line::styled(
                format!("    {}. {g}", i + 1),
                Style::new().fg(Color::Blue),
            ));
        }
    }
    if !r.task.gold_calls.is_empty() {
        let calls: Vec<String> = r.task.gold_calls.iter().map(fmt_call).collect();
        out.push(Line::styled(
            format!("  gold calls: {}", calls.join(" → ")),
            Style::new().fg(Color::Blue),
        ));
    }
    for p in &r.plans {
        out.push(Line::raw(""));
        let adv = p
            .advantage
            .map(|a| format!(" adv {a:+.2}"))
            .unwrap_or_default();
        out.push(Line::from(vec![
            Span::styled(
                // Flat and steptool records hold trajectories without a plan.
                if p.subtasks.is_empty() && p.raw_text.is_empty() {
                    format!("trajectory #{} ", p.index)
                } else {
                    format!("plan #{} ", p.index)
                },
                Style::new().bold().fg(Color::Cyan),
            ),
            Span::raw(format!("reward {}{adv} ", fmt_breakdown(&p.reward))),
            ok(p.success),
            {
                // With several executions: how many solved the task.
                let k = p.steps.iter().map(|s| s.execution + 1).max().unwrap_or(1);
                if k > 1 && p.success_rate.is_finite() {
                    Span::raw(format!(
                        " ({}/{k} executions solved)",
                        (p.success_rate * k as f64).round() as usize
                    ))
                } else {
                    Span::raw("")
                }
            },
            match (&p.failure, &p.failure_side) {
                (Some(f), Some(side)) => Span::styled(
                    format!("  {side} side: {f}"),
                    Style::new().fg(if side == "planner" {
                        Color::Magenta
                    } else {
                        Color::Yellow
                    }),
                ),
                (Some(f), None) => Span::styled(format!("  {f}"), Style::new().dim()),
                _ => Span::raw(""),
            },
        ]));
        if let Some(e) = &p.parse_error {
            out.push(Line::styled(
                format!("  parse error: {e}"),
                Style::new().fg(Color::Red),
            ));
            push_multiline(&mut out, "  ", "raw: ", &p.raw_text, Style::new());
        }
        for i in 0..plan_rows(p) {
            let runs: Vec<_> = p.steps.iter().filter(|s| s.subtask_index == i).collect();
            let label = match p.subtasks.get(i) {
                Some(st) => format!("  {}. {st}", i + 1),
                None => format!("  {}", runs.first().map_or("", |s| s.subtask.as_str())),
            };
            out.push(Line::styled(label, Style::new().bold()));
            if runs.is_empty() {
                out.push(Line::styled("     (not executed)", Style::new().dim()));
                continue;
            }
            let several = p.steps.iter().any(|s| s.execution > 0);
            for step in runs {
                if several {
                    out.push(Line::styled(
                        format!("     execution {}", step.execution + 1),
                        Style::new().fg(Color::Cyan),
                    ));
                }
                if let Some(prompt) = &step.prompt {
                    let n = prompt.lines().count();
                    out.push(Line::styled(
                        format!("     executor prompt: {n} lines (full text in the debugger)"),
                        Style::new().dim(),
                    ));
                }
                for (j, smp) in step.samples.iter().enumerate() {
                    let cont = j == step.continued;
                    let mut adv = smp
                        .advantage
                        .map(|a| format!(" adv {a:+.2}"))
                        .unwrap_or_default();
                    if let Some(ret) = smp.step_return {
                        adv = format!(" return {ret:+.2}{adv}");
                    }
                    out.push(Line::from(vec![
                        Span::styled(
                            format!("     {} sample {j} ", if cont { "▶" } else { "·" }),
                            if cont {
                                Style::new().fg(Color::Green).bold()
                            } else {
                                Style::new()
                            },
                        ),
                        Span::raw(format!("reward {}{adv}", fmt_breakdown(&smp.reward))),
                        Span::styled(
                            if cont { "  (continued)" } else { "" },
                            Style::new().fg(Color::Green),
                        ),
                    ]));
                    push_multiline(&mut out, "         ", "raw: ", &smp.raw_text, Style::new());
                    if let Some(e) = &smp.parse_error {
                        out.push(Line::styled(
                            format!("         parse error: {e}"),
                            Style::new().fg(Color::Red),
                        ));
                    }
                    for c in &smp.calls {
                        out.push(Line::from(vec![
                            Span::styled("         call: ", Style::new().dim()),
                            Span::styled(fmt_call(c), Style::new().fg(Color::Yellow)),
                        ]));
                    }
                    if let Some(o) = &smp.observation {
                        let text = serde_json::to_string(o).unwrap_or_default();
                        out.push(Line::from(vec![
                            Span::styled("         result: ", Style::new().dim()),
                            Span::raw(text),
                        ]));
                    }
                }
            }
        }
        if let Some(fr) = &p.final_response {
            push_multiline(&mut out, "  ", "final: ", fr, Style::new());
        }
    }
    out
}

/// `lines` wrapped to `width` columns: a continuation keeps the line's indent (plus two), and a
/// line breaks after a space or a `,` where it can, so JSON is not split inside a token.
pub fn wrap_lines(lines: Vec<Line<'static>>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(8);
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.width() <= width {
            out.push(line);
            continue;
        }
        let line_style = line.style;
        let chars: Vec<(char, Style)> = line
            .spans
            .iter()
            .flat_map(|s| s.content.chars().map(move |c| (c, s.style)))
            .collect();
        let indent = chars
            .iter()
            .take_while(|(c, _)| *c == ' ')
            .count()
            .min(width / 2)
            + 2;
        let mut start = 0;
        let mut first = true;
        while start < chars.len() {
            let avail = if first { width } else { width - indent };
            let end = if chars.len() - start <= avail {
                chars.len()
            } else {
                // The last break opportunity within reach, else a hard break.
                (start + 1..start + avail)
                    .rev()
                    .find(|&i| matches!(chars[i - 1].0, ' ' | ','))
                    .unwrap_or(start + avail)
            };
            let mut spans: Vec<Span<'static>> = Vec::new();
            if !first {
                spans.push(Span::raw(" ".repeat(indent)));
            }
            let mut cur = String::new();
            let mut cur_style = chars[start].1;
            for &(c, st) in &chars[start..end] {
                if st != cur_style && !cur.is_empty() {
                    spans.push(Span::styled(std::mem::take(&mut cur), cur_style));
                }
                cur_style = st;
                cur.push(c);
            }
            if !cur.is_empty() {
                spans.push(Span::styled(cur, cur_style));
            }
            out.push(Line::from(spans).style(line_style));
            start = end;
            first = false;
        }
    }
    out
}

/// Draws the expanded trajectory (or a loading note while it is read from disk).
pub fn draw_detail(f: &mut Frame, area: Rect, s: &AppState) {
    let item = s.trajs.current().and_then(|q| s.trajs.get(q));
    let title = match item {
        Some(it) => format!(
            " trajectory {} · step {} · enter: back · d: debug ",
            it.task_id, it.step
        ),
        None => " trajectory ".into(),
    };
    let block = focus_block(title, s.focus == Pane::Trajectories);
    let lines = match item.and_then(|it| it.record.as_deref()) {
        Some(rec) => trajectory_lines(rec),
        None => vec![Line::styled("loading…", Style::new().dim())],
    };
    let lines = wrap_lines(lines, area.width.saturating_sub(2) as usize);
    let max = lines.len().saturating_sub(1);
    let scroll = s.trajs.detail_scroll.min(max) as u16;
    f.render_widget(Paragraph::new(lines).block(block).scroll((scroll, 0)), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cahl_sessions::records::{ExecSample, PlanRecord, StepRecord};

    fn text(lines: &[Line<'_>]) -> String {
        lines
            .iter()
            .map(|l| {
                l.spans
                    .iter()
                    .map(|s| s.content.as_ref())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The total 4.00 of format 1, syntax 1, semantics 1 reads right once the weights show.
    #[test]
    fn a_breakdown_shows_weights_that_are_not_one() {
        let r = RewardBreakdown {
            total: 4.0,
            components: [("format", 1.0), ("semantics", 1.0), ("syntax", 1.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            weights: [("format", 1.0), ("semantics", 2.0), ("syntax", 1.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Default::default()
        };
        let s = fmt_breakdown(&r);
        assert!(s.contains("semantics +1.00×2"), "{s}");
        assert!(s.contains("format +1.00,"), "{s}");
    }

    /// A long call wraps after a comma or space with the line's indent kept, never inside a
    /// JSON token.
    #[test]
    fn wrapping_keeps_indent_and_json_tokens() {
        let l = Line::from(vec![
            Span::raw("         call: "),
            Span::raw(
                r#"transfer({"token":"tok-alice-1","from_account":"checking","to_account":"savings","amount":40})"#,
            ),
        ]);
        let out = wrap_lines(vec![l], 40);
        let rows: Vec<String> = out.iter().map(|l| text(std::slice::from_ref(l))).collect();
        assert!(rows.len() > 1, "{rows:?}");
        for r in &rows[1..] {
            assert!(r.starts_with("           "), "indent kept: {r:?}");
        }
        for r in &rows {
            assert!(r.chars().count() <= 40, "{r:?}");
        }
        let joined: String = rows
            .iter()
            .map(|r| r.trim_start())
            .collect::<Vec<_>>()
            .concat();
        for token in [
            "\"tok-alice-1\"",
            "\"from_account\"",
            "\"checking\"",
            "40})",
        ] {
            assert!(joined.contains(token), "{token} split: {rows:?}");
        }
        // Short lines are left alone.
        let short = wrap_lines(vec![Line::raw("abc")], 40);
        assert_eq!(text(&short), "abc");
    }

    #[test]
    fn ids_fit_their_column_keeping_the_end() {
        assert_eq!(fit_id("abc", 5), "abc  ");
        assert_eq!(fit_id("builtin-train-0-369", 19), "builtin-train-0-369");
        assert_eq!(fit_id("builtin-train-0-369", 8), "…n-0-369");
    }

    /// A steptool record: trajectories without a plan, each turn with its return and
    /// advantage; the turns are listed (they were hidden when a record had no sub-tasks).
    #[test]
    fn steptool_turns_show_with_their_returns() {
        let turn = |t: usize, ret: f64, adv: f64| StepRecord {
            subtask_index: t,
            subtask: format!("turn {}", t + 1),
            samples: vec![ExecSample {
                raw_text: "<think>x</think>".into(),
                step_return: Some(ret),
                advantage: Some(adv),
                ..Default::default()
            }],
            ..Default::default()
        };
        let rec = TrajectoryRecord {
            mode: "steptool".into(),
            plans: vec![PlanRecord {
                index: 0,
                steps: vec![turn(0, 2.99, 0.5), turn(1, 1.0, -0.25)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = text(&trajectory_lines(&rec));
        assert!(out.contains("trajectory #0"), "{out}");
        assert!(out.contains("turn 1") && out.contains("turn 2"), "{out}");
        assert!(out.contains("return +2.99 adv +0.50"), "{out}");
        assert!(out.contains("return +1.00 adv -0.25"), "{out}");
    }
}

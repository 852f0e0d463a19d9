//! The debugger screen: task, branches, editable plan, step detail, and the comparison view.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use super::trajectory::{fmt_breakdown, fmt_call};
use crate::state::debugger::{call_divergence, plan_divergence, Branch, DebuggerState, ModelState};

/// The header's model status: what runs the executor, or why nothing can yet.
fn model_spans(d: &DebuggerState) -> Vec<Span<'static>> {
    let mut out = match &d.model {
        ModelState::Ready { describe, .. } => vec![Span::styled(
            format!("model: {describe}"),
            Style::new().fg(Color::Green),
        )],
        ModelState::Missing => vec![Span::styled(
            "no model: editing and comparison only (--model to run)",
            Style::new().fg(Color::Yellow),
        )],
        ModelState::OnDemand(what) => vec![Span::styled(
            format!("model: {what} · not loaded yet: n/r/p or L loads it"),
            Style::new().fg(Color::Yellow),
        )],
        ModelState::Loading { what, step } => vec![Span::styled(
            format!(
                "loading model… {what} · {}",
                match step {
                    Some(s) => format!("adapters of checkpoint step {s}"),
                    None => "fresh adapters (no checkpoint yet)".into(),
                }
            ),
            Style::new().fg(Color::Yellow).bold(),
        )],
        ModelState::Failed { error, .. } => vec![Span::styled(
            format!("model failed to load: {error} (L retries)"),
            Style::new().fg(Color::Red),
        )],
    };
    if let Some(n) = d.newer_checkpoint {
        out.push(Span::styled(
            format!(" · newer checkpoint step {n}: L reloads"),
            Style::new().fg(Color::Magenta),
        ));
    }
    out
}

/// Draws the debugger into `area`.
pub fn draw(f: &mut Frame, area: Rect, d: &DebuggerState) {
    let [head, tabs, body, msg, hints] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let id = if d.task.id.is_empty() {
        "(typed)"
    } else {
        &d.task.id
    };
    let title = vec![
        Span::styled(" cahl-tui ", Style::new().bold().reversed()),
        Span::styled(" DEBUGGER ", Style::new().bold().fg(Color::Cyan)),
        Span::raw(format!(" task {id} · {}", d.source)),
    ];
    let mut model = vec![Span::raw(" ")];
    model.extend(model_spans(d));
    let head_lines = vec![
        Line::from(title),
        Line::from(model),
        Line::from(vec![
            Span::styled(" request: ", Style::new().dim()),
            Span::raw(d.task.text.replace('\n', " ")),
        ]),
    ];
    f.render_widget(Paragraph::new(head_lines).wrap(Wrap { trim: false }), head);
    let mut tab_spans = vec![Span::styled(" branches: ", Style::new().dim())];
    for (i, b) in d.branches.iter().enumerate() {
        let label = format!(" {} [{}/{}] ", b.name, b.steps.len(), b.subtasks.len());
        tab_spans.push(if i == d.current {
            Span::styled(label, Style::new().reversed().bold())
        } else {
            Span::raw(label)
        });
    }
    tab_spans.push(Span::styled(
        format!("  seed {}", d.branch().seed),
        Style::new().dim(),
    ));
    f.render_widget(Paragraph::new(Line::from(tab_spans)), tabs);
    if d.compare {
        draw_compare(f, body, d);
    } else {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)])
                .areas(body);
        match &d.editor {
            Some(ta) => f.render_widget(ta, left),
            None => draw_plan(f, left, d),
        }
        draw_step(f, right, d);
    }
    let message = d.message.clone().unwrap_or_default();
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(" {message}"),
            Style::new().fg(Color::Yellow),
        )),
        msg,
    );
    let reload = if d.model.loadable().is_some() {
        " · L model"
    } else {
        ""
    };
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(" ? keys · e edit · n step · r run to end · z reset · b branch · c compare · p planner · S save{reload} · esc close"),
            Style::new().dim(),
        )),
        hints,
    );
}

fn plan_lines(b: &Branch, gold: &[String], selected: Option<usize>) -> Vec<Line<'static>> {
    let div = plan_divergence(&b.subtasks, gold);
    let mut lines = Vec::new();
    if b.subtasks.is_empty() {
        lines.push(Line::styled("(empty plan)", Style::new().dim()));
    }
    for (i, st) in b.subtasks.iter().enumerate() {
        let (mark, style) = match b.steps.get(i) {
            Some(o)
                if o.parse_error.is_none()
                    && o.reward.total.is_finite()
                    && o.reward.total > 0.0 =>
            {
                ("✓", Style::new().fg(Color::Green))
            }
            Some(_) => ("✗", Style::new().fg(Color::Red)),
            None if i == b.steps.len() => ("▶", Style::new().fg(Color::Cyan)),
            None => ("·", Style::new().dim()),
        };
        let diverges = if div == Some(i) {
            Span::styled("≠ ", Style::new().fg(Color::Magenta).bold())
        } else {
            Span::raw("  ")
        };
        let mut line = Line::from(vec![
            Span::styled(format!("{mark} "), style),
            diverges,
            Span::raw(format!("{}. {st}", i + 1)),
        ]);
        if selected == Some(i) {
            line = line.style(Style::new().reversed());
        }
        lines.push(line);
    }
    if let Some(i) = div {
        lines.push(Line::styled(
            format!("≠ differs from the gold plan at sub-task {}", i + 1),
            Style::new().fg(Color::Magenta),
        ));
    }
    if let Some(i) = div.filter(|i| *i >= b.subtasks.len()) {
        lines.push(Line::styled(
            format!(
                "  ≠ gold: gold has {} sub-tasks, plan stops at {i}",
                gold.len()
            ),
            Style::new().fg(Color::Magenta),
        ));
    }
    if let Some(e) = &b.error {
        lines.push(Line::styled(
            format!("error: {e}"),
            Style::new().fg(Color::Red),
        ));
    }
    lines
}

fn draw_plan(f: &mut Frame, area: Rect, d: &DebuggerState) {
    let b = d.branch();
    let src = if b.from_trace {
        " (recorded trace)"
    } else {
        ""
    };
    let block = Block::bordered().title(format!(" plan · {}{src} · e: edit ", b.name));
    let mut lines = plan_lines(b, &d.task.gold_plan, Some(d.selected_step));
    if let Some(i) = call_divergence(&b.steps, &d.task.gold_calls, b.finished()) {
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            format!("calls diverge from gold at call #{}", i + 1),
            Style::new().fg(Color::Magenta).bold(),
        ));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

fn draw_step(f: &mut Frame, area: Rect, d: &DebuggerState) {
    let b = d.branch();
    let i = d.selected_step;
    let block = Block::bordered().title(format!(" step {} · J/K scroll ", i + 1));
    let mut lines: Vec<Line> = Vec::new();
    match b.steps.get(i) {
        None => {
            let text = if d.busy() && i == b.steps.len() {
                "running…".to_string()
            } else if matches!(d.model, ModelState::Loading { .. }) {
                "not run yet: loading the model…".to_string()
            } else if d.model == ModelState::Missing {
                "not run. Running the executor needs a model (--model or a session checkpoint)."
                    .to_string()
            } else {
                "not run yet: n runs the next sub-task, r runs to the end".to_string()
            };
            lines.push(Line::styled(text, Style::new().dim()));
        }
        Some(o) => {
            let section =
                |t: &str| Line::styled(t.to_string(), Style::new().bold().fg(Color::Cyan));
            lines.push(section("reward"));
            lines.push(Line::raw(format!("  {}", fmt_breakdown(&o.reward))));
            lines.push(section("parsed calls"));
            if let Some(e) = &o.parse_error {
                lines.push(Line::styled(
                    format!("  parse error: {e}"),
                    Style::new().fg(Color::Red),
                ));
            }
            if o.calls.is_empty() {
                lines.push(Line::styled("  (none)", Style::new().dim()));
            }
            for c in &o.calls {
                lines.push(Line::styled(
                    format!("  {}", fmt_call(c)),
                    Style::new().fg(Color::Yellow),
                ));
            }
            lines.push(section("tool result"));
            lines.push(Line::raw(format!(
                "  {}",
                o.tool_result
                    .as_ref()
                    .map_or("(none)".to_string(), |v| serde_json::to_string(v)
                        .unwrap_or_default())
            )));
            lines.push(section("raw output"));
            lines.extend(o.raw_output.lines().map(|l| Line::raw(format!("  {l}"))));
            lines.push(section("executor prompt"));
            lines.extend(
                o.prompt
                    .lines()
                    .map(|l| Line::styled(format!("  {l}"), Style::new().dim())),
            );
        }
    }
    let scroll = d.detail_scroll.min(lines.len().saturating_sub(1)) as u16;
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        area,
    );
}

fn calls_line(b: &Branch) -> Vec<Line<'static>> {
    let calls: Vec<String> = b
        .steps
        .iter()
        .flat_map(|s| s.calls.iter().map(fmt_call))
        .collect();
    if calls.is_empty() {
        let text = if b.steps.is_empty() {
            "  (no calls yet)"
        } else {
            "  (no calls made)"
        };
        return vec![Line::styled(text, Style::new().dim())];
    }
    calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| Line::styled(format!("  {}. {c}", i + 1), Style::new().fg(Color::Yellow)))
        .collect()
}

fn draw_compare(f: &mut Frame, area: Rect, d: &DebuggerState) {
    let cols = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(area);
    let gold = &d.task.gold_plan;
    let column = |b: &Branch| {
        let mut lines = plan_lines(b, gold, None);
        lines.push(Line::styled("calls:", Style::new().dim()));
        lines.extend(calls_line(b));
        if let Some(i) = call_divergence(&b.steps, &d.task.gold_calls, b.finished()) {
            lines.push(Line::styled(
                format!("≠ gold from call #{}", i + 1),
                Style::new().fg(Color::Magenta).bold(),
            ));
        }
        lines
    };
    let orig = &d.branches[0];
    f.render_widget(
        Paragraph::new(column(orig))
            .block(Block::bordered().title(format!(" {} ", orig.name)))
            .wrap(Wrap { trim: false }),
        cols[0],
    );
    let cur = d.branch();
    f.render_widget(
        Paragraph::new(column(cur))
            .block(Block::bordered().title(format!(" {} (current) ", cur.name)))
            .wrap(Wrap { trim: false }),
        cols[1],
    );
    let mut gl: Vec<Line> = if gold.is_empty() {
        vec![Line::styled("(no gold plan)", Style::new().dim())]
    } else {
        gold.iter()
            .enumerate()
            .map(|(i, g)| Line::styled(format!("  {}. {g}", i + 1), Style::new().fg(Color::Blue)))
            .collect()
    };
    gl.push(Line::styled("calls:", Style::new().dim()));
    if let Some(a) = &d.task.gold_answer {
        gl.push(Line::styled(
            format!("  answer: {a}"),
            Style::new().fg(Color::Blue),
        ));
    } else if d.task.gold_calls.is_empty() {
        gl.push(Line::styled("  (no gold calls)", Style::new().dim()));
    }
    gl.extend(d.task.gold_calls.iter().enumerate().map(|(i, c)| {
        Line::styled(
            format!("  {}. {}", i + 1, fmt_call(c)),
            Style::new().fg(Color::Blue),
        )
    }));
    f.render_widget(
        Paragraph::new(gl)
            .block(Block::bordered().title(" gold "))
            .wrap(Wrap { trim: false }),
        cols[2],
    );
}

//! The debugger screen: task, branches, editable plan, step detail, and the comparison view.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use cahl_sessions::{CallRecord, PlanMeasurement, PlanRun};
use ratatui::widgets::{Clear, List, ListItem, ListState};

use super::trajectory::{fmt_breakdown, fmt_call};
use crate::state::debugger::measure::result_words;
use crate::state::debugger::{call_divergence, plan_divergence, Branch, DebuggerState, ModelState};

/// A reward as shown: `+1.25`, or `–` when it is not known.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.2}")
    } else {
        "–".into()
    }
}

/// The judged result of a branch: one line, then the state difference.
fn result_lines(r: &PlanRun, recorded: bool) -> Vec<Line<'static>> {
    let (mark, color) = if r.success {
        ("✓", Color::Green)
    } else {
        ("✗", Color::Red)
    };
    let mut head = vec![
        Span::styled(
            format!("{mark} {}", result_words(r)),
            Style::new().fg(color).bold(),
        ),
        Span::raw(format!(" · planner {}", num(r.planner_reward))),
    ];
    if r.executor_reward.is_finite() {
        head.push(Span::raw(format!(" · executor {}", num(r.executor_reward))));
    }
    if recorded {
        head.push(Span::styled(" (as recorded)", Style::new().dim()));
    }
    let mut lines = vec![Line::from(head)];
    if let Some(d) = &r.failure_detail {
        lines.push(Line::styled(format!("  {d}"), Style::new().dim()));
    }
    for d in &r.state_diff {
        lines.push(Line::styled(
            format!("  state ≠ {d}"),
            Style::new().fg(Color::Magenta),
        ));
    }
    lines
}

/// A plan's measurement: success count and rate, planner reward spread, failure labels.
fn measurement_lines(m: &PlanMeasurement) -> Vec<Line<'static>> {
    let n = m.runs.len();
    let k = m.successes();
    let how = if m.greedy {
        "greedy run".to_string()
    } else {
        format!("{n} sampled runs")
    };
    let color = if 2 * k >= n && n > 0 {
        Color::Green
    } else {
        Color::Red
    };
    let (mean, min, max) = m.planner_reward_stats();
    let mut lines = vec![
        Line::from(vec![
            Span::styled("measured: ", Style::new().bold().fg(Color::Cyan)),
            Span::styled(
                if n == 0 {
                    "no runs".to_string()
                } else {
                    format!("{k}/{n} solved ({:.0}%)", 100.0 * m.success_rate())
                },
                Style::new().fg(color).bold(),
            ),
            Span::raw(format!(" · {how}, seed {}", m.seed)),
        ]),
        Line::raw(format!(
            "  planner reward mean {} [min {}, max {}]",
            num(mean),
            num(min),
            num(max)
        )),
    ];
    let fails = m.failure_counts();
    if !fails.is_empty() {
        let parts: Vec<String> = fails.iter().map(|(l, c)| format!("{l} {c}")).collect();
        lines.push(Line::styled(
            format!("  failures: {}", parts.join(", ")),
            Style::new().fg(Color::Red),
        ));
    }
    if !m.model.is_empty() {
        lines.push(Line::styled(
            format!("  by {}", m.model),
            Style::new().dim(),
        ));
    }
    lines
}

/// The result and measurement of a branch (empty when it has neither).
fn outcome_lines(b: &Branch) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(r) = &b.result {
        lines.push(Line::raw(""));
        lines.extend(result_lines(r, b.from_trace));
    }
    if let Some(m) = &b.measurement {
        lines.push(Line::raw(""));
        lines.extend(measurement_lines(m));
    }
    lines
}

/// A call with each argument that differs from the gold call of the same name (the first one
/// not matched yet) marked: `transfer(to="bob" amount=50≠gold 80)`.
fn call_spans(c: &CallRecord, gold: Option<&CallRecord>) -> Vec<Span<'static>> {
    let yellow = Style::new().fg(Color::Yellow);
    let Some(args) = c.arguments.as_object() else {
        return vec![Span::styled(fmt_call(c), yellow)];
    };
    // Without a gold call of that name every argument is shown as made.
    let empty = serde_json::Map::new();
    let gargs = match gold.map(|g| g.arguments.as_object()) {
        Some(Some(g)) => g,
        Some(None) => return vec![Span::styled(fmt_call(c), yellow)],
        None => &empty,
    };
    let has_gold = gold.is_some();
    let mut out = vec![Span::styled(format!("{}(", c.name), yellow)];
    let mut first = true;
    let mut sep = |out: &mut Vec<Span<'static>>| {
        if !std::mem::take(&mut first) {
            out.push(Span::styled(", ", yellow));
        }
    };
    for (k, v) in args {
        sep(&mut out);
        match gargs.get(k) {
            Some(gv) if gv == v => out.push(Span::styled(format!("{k}={v}"), yellow)),
            Some(gv) => out.push(Span::styled(
                format!("{k}={v}≠gold {gv}"),
                Style::new().fg(Color::Red).bold(),
            )),
            None if !has_gold => out.push(Span::styled(format!("{k}={v}"), yellow)),
            None => out.push(Span::styled(
                format!("{k}={v} (not in gold)"),
                Style::new().fg(Color::Red),
            )),
        }
    }
    for (k, gv) in gargs.iter().filter(|(k, _)| !args.contains_key(*k)) {
        sep(&mut out);
        out.push(Span::styled(
            format!("{k} missing (gold {gv})"),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    out.push(Span::styled(")", yellow));
    out
}

/// Pairs each call with the gold call of the same name it is compared with: an exact match
/// first, else the first unmatched one of that name.
fn gold_partners<'a>(calls: &[&CallRecord], gold: &'a [CallRecord]) -> Vec<Option<&'a CallRecord>> {
    let mut used = vec![false; gold.len()];
    let mut out = vec![None; calls.len()];
    for (i, c) in calls.iter().enumerate() {
        if let Some(j) = (0..gold.len()).find(|&j| !used[j] && gold[j] == **c) {
            used[j] = true;
            out[i] = Some(&gold[j]);
        }
    }
    for (i, c) in calls.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        if let Some(j) = (0..gold.len()).find(|&j| !used[j] && gold[j].name == c.name) {
            used[j] = true;
            out[i] = Some(&gold[j]);
        }
    }
    out
}

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
        let mut label = format!(" {} [{}/{}]", b.name, b.steps.len(), b.subtasks.len());
        match &b.result {
            Some(r) if r.success => label.push_str(" ✓"),
            Some(_) => label.push_str(" ✗"),
            None => {}
        }
        if let Some(m) = &b.measurement {
            label.push_str(&format!(" {}/{}", m.successes(), m.runs.len()));
        }
        label.push(' ');
        tab_spans.push(if i == d.current {
            Span::styled(label, Style::new().reversed().bold())
        } else {
            Span::raw(label)
        });
    }
    tab_spans.push(Span::styled(
        format!("  seed {} · m runs {}", d.branch().seed, d.samples),
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
    match &d.case_input {
        Some(text) => {
            let label = " case: expect (solves/fails/label) + note › ";
            // The end of what was typed stays in view.
            let room = (msg.width as usize).saturating_sub(label.chars().count() + 2);
            let n = text.chars().count();
            let shown = if n > room {
                let tail: String = text.chars().skip(n - room.saturating_sub(1)).collect();
                format!("…{tail}")
            } else {
                text.clone()
            };
            f.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::styled(label, Style::new().bold().fg(Color::Cyan)),
                    Span::raw(format!("{shown}▏")),
                ])),
                msg,
            )
        }
        None => {
            let message = d.message.clone().unwrap_or_default();
            f.render_widget(
                Paragraph::new(Line::styled(
                    format!(" {message}"),
                    Style::new().fg(Color::Yellow),
                )),
                msg,
            );
        }
    }
    let reload = if d.model.loadable().is_some() {
        " · L model"
    } else {
        ""
    };
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(" ? keys · e edit · n/r step/run · m/g measure · c compare · b branch · o adapters · a case · S save{reload} · esc"),
            Style::new().dim(),
        )),
        hints,
    );
    if let Some(at) = d.picker {
        draw_picker(f, area, d, at);
    }
}

/// The checkpoint picker: fresh adapters, then every checkpoint; the loaded one marked.
fn draw_picker(f: &mut Frame, area: Rect, d: &DebuggerState, at: usize) {
    let choices = d.checkpoint_choices();
    let loaded = d.loaded_step();
    let items: Vec<ListItem> = choices
        .iter()
        .map(|c| {
            let name = match c {
                Some(s) => format!("checkpoint step {s}"),
                None => "fresh adapters (the base model)".to_string(),
            };
            let mark = if loaded == Some(*c) { "● " } else { "  " };
            ListItem::new(format!("{mark}{name}"))
        })
        .collect();
    let h = (choices.len() as u16 + 2)
        .min(area.height.saturating_sub(2))
        .max(3);
    let w = 48.min(area.width);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    let mut st = ListState::default().with_selected(Some(at.min(choices.len() - 1)));
    f.render_stateful_widget(
        List::new(items)
            .block(Block::bordered().title(" adapters · enter loads · esc "))
            .highlight_style(Style::new().reversed()),
        r,
        &mut st,
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
    lines.extend(outcome_lines(b));
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
            // Compared with the gold calls not made by the earlier steps.
            let earlier: Vec<&CallRecord> =
                b.steps[..i].iter().flat_map(|s| s.calls.iter()).collect();
            let mine: Vec<&CallRecord> = o.calls.iter().collect();
            let all: Vec<&CallRecord> = earlier
                .iter()
                .copied()
                .chain(mine.iter().copied())
                .collect();
            let partners = gold_partners(&all, &d.task.gold_calls);
            for (c, g) in mine.iter().zip(&partners[earlier.len()..]) {
                let mut spans = vec![Span::raw("  ")];
                spans.extend(call_spans(c, *g));
                lines.push(Line::from(spans));
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

fn calls_line(b: &Branch, gold: &[CallRecord]) -> Vec<Line<'static>> {
    let calls: Vec<&CallRecord> = b.steps.iter().flat_map(|s| s.calls.iter()).collect();
    if calls.is_empty() {
        let text = if b.steps.is_empty() {
            "  (no calls yet)"
        } else {
            "  (no calls made)"
        };
        return vec![Line::styled(text, Style::new().dim())];
    }
    let partners = gold_partners(&calls, gold);
    calls
        .iter()
        .zip(partners)
        .enumerate()
        .map(|(i, (c, g))| {
            let mut spans = vec![Span::styled(
                format!("  {}. ", i + 1),
                Style::new().fg(Color::Yellow),
            )];
            spans.extend(call_spans(c, g));
            Line::from(spans)
        })
        .collect()
}

fn draw_compare(f: &mut Frame, area: Rect, d: &DebuggerState) {
    let cols = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(area);
    let gold = &d.task.gold_plan;
    let column = |b: &Branch| {
        let mut lines = plan_lines(b, gold, None);
        lines.push(Line::styled("calls:", Style::new().dim()));
        lines.extend(calls_line(b, &d.task.gold_calls));
        if let Some(i) = call_divergence(&b.steps, &d.task.gold_calls, b.finished()) {
            lines.push(Line::styled(
                format!("≠ gold from call #{}", i + 1),
                Style::new().fg(Color::Magenta).bold(),
            ));
        }
        lines.extend(outcome_lines(b));
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
    // Written as the branches' calls are (`name(k=v, …)`), so the columns read side by side.
    gl.extend(d.task.gold_calls.iter().enumerate().map(|(i, c)| {
        let text: String = call_spans(c, None)
            .iter()
            .map(|s| s.content.as_ref())
            .collect();
        Line::styled(format!("  {}. {text}", i + 1), Style::new().fg(Color::Blue))
    }));
    f.render_widget(
        Paragraph::new(gl)
            .block(Block::bordered().title(" gold "))
            .wrap(Wrap { trim: false }),
        cols[2],
    );
}

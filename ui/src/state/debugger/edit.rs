//! Editing a branch's plan in a text area: one sub-task per line; applying an edit makes a new
//! branch with the same seed (or updates an edit branch that has not run yet).

use ratatui_textarea::TextArea;

use super::{Branch, DebuggerState};

/// Parses editor lines into sub-tasks: trims, drops blank lines and a leading `N.`/`-` marker.
pub fn parse_plan_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let t = l.trim();
            let t = t.strip_prefix("- ").unwrap_or(t);
            let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 && t[digits..].starts_with(['.', ')']) {
                t[digits + 1..].trim().to_string()
            } else {
                t.to_string()
            }
        })
        .filter(|l| !l.is_empty())
        .collect()
}

impl DebuggerState {
    pub(super) fn open_editor(&mut self) {
        let lines: Vec<String> = self.branch().subtasks.clone();
        let mut ta = TextArea::new(if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        });
        ta.set_block(
            ratatui::widgets::Block::bordered()
                .title(" edit plan: one sub-task per line · Esc apply · Ctrl-Z undo "),
        );
        self.editor = Some(ta);
        self.message =
            Some("editing: split = Enter inside a line, merge = Backspace at line start".into());
    }

    pub(super) fn close_editor(&mut self) {
        let Some(ta) = self.editor.take() else {
            return;
        };
        let plan = parse_plan_lines(ta.lines());
        if plan == self.branch().subtasks {
            self.message = Some("plan unchanged".into());
            return;
        }
        let cur = &self.branches[self.current];
        // Only the user's own edit that has not run yet is changed in place; the original, a
        // recorded branch and the planner's plans stay as they were (the edit is a new branch).
        let reuse = self.current != 0
            && cur.name.starts_with("edit")
            && cur.steps.is_empty()
            && !cur.from_trace;
        if reuse {
            self.branches[self.current].subtasks = plan;
            self.branches[self.current].error = None;
            // a measurement was of the old plan, and so is a job still running on it
            self.branches[self.current].measurement = None;
            self.branches[self.current].result = None;
            if self.pending.is_some_and(|p| p.branch == self.current) {
                self.pending = None;
            }
            self.message = Some(format!(
                "branch '{}' updated",
                self.branches[self.current].name
            ));
        } else {
            let n = self
                .branches
                .iter()
                .filter(|b| b.name.starts_with("edit"))
                .count()
                + 1;
            let seed = cur.seed;
            self.branches.push(Branch {
                name: format!("edit {n}"),
                subtasks: plan,
                seed,
                ..Branch::default()
            });
            self.current = self.branches.len() - 1;
            self.message = Some(format!("new branch 'edit {n}' (same seed {seed})"));
        }
        self.selected_step = 0;
        self.detail_scroll = 0;
    }
}

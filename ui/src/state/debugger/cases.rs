//! Saving a probe into the session's case library (`a`): the current branch's plan, seed and
//! runs per measurement, with what the user expects (`solves`, `fails` or a failure label) and a
//! note. `cahl-tui cases run SESSION` re-runs the library against checkpoints.

use cahl_sessions::{CaseRecord, Expect, CASE_VERSION};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::{DebugAction, DebuggerState};

impl DebuggerState {
    pub(super) fn open_case_prompt(&mut self) {
        if self.branch().subtasks.is_empty() {
            self.message = Some("the plan is empty: nothing to save as a case".into());
            return;
        }
        self.case_input = Some(String::new());
        self.message = Some(
            "save as a case: what you expect (solves, fails or a label such as \\
             plan_too_coarse), then a note · enter saves · esc cancels"
                .into(),
        );
    }

    pub(super) fn case_key(&mut self, key: KeyEvent) -> Option<DebugAction> {
        let text = self.case_input.as_mut()?;
        match key.code {
            KeyCode::Esc => {
                self.case_input = None;
                self.message = Some("case not saved".into());
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            KeyCode::Enter => {
                let typed = text.trim().to_string();
                let (first, note) = typed
                    .split_once(char::is_whitespace)
                    .map(|(a, b)| (a.to_string(), b.trim().to_string()))
                    .unwrap_or((typed.clone(), String::new()));
                let expect = match Expect::parse(if first.is_empty() { "solves" } else { &first }) {
                    Ok(e) => e,
                    Err(e) => {
                        self.message = Some(e);
                        return None;
                    }
                };
                self.case_input = None;
                return Some(DebugAction::SaveCase(Box::new(self.case_of(expect, note))));
            }
            _ => {}
        }
        None
    }

    /// The current branch as a case expecting `expect`.
    pub fn case_of(&self, expect: Expect, note: String) -> CaseRecord {
        let b = self.branch();
        CaseRecord {
            version: CASE_VERSION,
            id: String::new(),
            source: format!("{} · branch '{}'", self.source, b.name),
            task: self.task.clone(),
            plan: b.subtasks.clone(),
            seed: b.seed,
            samples: self.samples,
            greedy: b.measurement.as_ref().is_some_and(|m| m.greedy),
            expect,
            note,
        }
    }
}

//! The one-line prompt at the bottom of the dashboard: search (`/`), jump to a step (`g`) and
//! the stop confirmation (`x`).

use cahl_sessions::TrainCommand;
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::{AppState, Effect, Level, Pane};

/// A one-line prompt at the bottom of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// `/`: search by task text or id.
    Search,
    /// `g`: jump to a step.
    Jump,
    /// `x`: confirm stopping the run.
    ConfirmStop,
}

/// The active prompt and what was typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// What the prompt is for.
    pub kind: InputKind,
    /// Text typed so far.
    pub text: String,
}

pub(super) fn on_input_key(s: &mut AppState, k: KeyEvent) -> Vec<Effect> {
    let Some(input) = s.input.as_mut() else {
        return Vec::new();
    };
    if input.kind == InputKind::ConfirmStop {
        let yes = matches!(k.code, KeyCode::Char('y') | KeyCode::Char('Y'));
        s.input = None;
        if yes {
            s.flash = Some("stop requested: the trainer will save and stop".into());
            s.log(Level::Info, "stop requested");
            return vec![Effect::Command(TrainCommand::Stop)];
        }
        s.flash = Some("stop cancelled".into());
        return Vec::new();
    }
    match k.code {
        KeyCode::Esc => s.input = None,
        KeyCode::Backspace => {
            input.text.pop();
        }
        KeyCode::Char(c) if input.kind == InputKind::Search || c.is_ascii_digit() => {
            input.text.push(c);
        }
        KeyCode::Enter => {
            let Some(input) = s.input.take() else {
                return Vec::new();
            };
            match input.kind {
                InputKind::Search => {
                    let q = input.text.trim().to_string();
                    s.trajs.search = q.clone();
                    s.trajs.selected = None;
                    s.trajs.expanded = false;
                    if q.is_empty() {
                        s.flash = Some("search cleared".into());
                        return Vec::new();
                    }
                    let n = s.trajs.visible().len();
                    let missing = s.trajs.iter().any(|it| it.task_text.is_none());
                    if missing {
                        // Older sessions' index lacks some texts: the count grows as they load.
                        s.flash = Some(format!(
                            "search '{q}': {n} matching so far (reading task texts…)"
                        ));
                        return vec![Effect::LoadTexts];
                    }
                    s.flash = Some(format!("search '{q}': {n} matching"));
                }
                InputKind::Jump => match input.text.parse::<u64>() {
                    Ok(step) => {
                        s.trajs.expanded = false;
                        if s.trajs.jump_to_step(step) {
                            let at = s
                                .trajs
                                .current()
                                .and_then(|q| s.trajs.get(q))
                                .map_or(step, |it| it.step);
                            s.flash = Some(format!("jumped to step {at}"));
                            s.focus = Pane::Trajectories;
                        } else {
                            s.flash = Some("no trajectories to jump to".into());
                        }
                    }
                    Err(_) => s.flash = Some("type a step number".into()),
                },
                InputKind::ConfirmStop => {}
            }
        }
        _ => {}
    }
    Vec::new()
}

//! The case library of the session, shown over the dashboard (`v`): the saved cases and the
//! last `cahl-tui cases run` table (one column per checkpoint).

use cahl_sessions::{CaseRecord, CasesReport};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::{AppState, Effect};

/// What the case overlay shows (read from `<session>/cases/` by the event loop).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CasesView {
    /// The saved cases, in file order.
    pub cases: Vec<CaseRecord>,
    /// The last report, if `cases run` wrote one.
    pub report: Option<CasesReport>,
    /// Case files that did not read (skipped), and a report that did not.
    pub problems: Vec<String>,
    /// The session directory (for the command line shown).
    pub session: String,
    /// Scroll (rows).
    pub scroll: usize,
}

/// `v`: read the case library of the session (or say why there is none).
pub(super) fn open(s: &mut AppState) -> Vec<Effect> {
    match s.session_dir() {
        Some(session) => {
            s.flash = Some("reading the case library…".into());
            vec![Effect::LoadCases { session }]
        }
        None => {
            s.flash = Some("no session: cases live in <session>/cases".into());
            Vec::new()
        }
    }
}

/// A key while the overlay is open: j/k scroll, anything else closes it.
pub(super) fn on_key(s: &mut AppState, k: KeyEvent) -> Vec<Effect> {
    let Some(v) = s.cases.as_mut() else {
        return Vec::new();
    };
    match k.code {
        KeyCode::Char('j') | KeyCode::Down => v.scroll += 1,
        KeyCode::Char('k') | KeyCode::Up => v.scroll = v.scroll.saturating_sub(1),
        _ => s.cases = None,
    }
    Vec::new()
}

//! Terminal setup and restore: raw mode and the alternate screen, a guard that restores them on
//! any exit, and a panic hook that restores them before the panic message is printed.

use std::io::{self, Write};
use std::sync::Once;
use std::thread;

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::Terminal;

use super::workers::BACKEND_THREAD;
use super::Result;

/// Restores the terminal: leaves raw mode and the alternate screen, shows the cursor.
pub fn restore_terminal() -> io::Result<()> {
    let r1 = disable_raw_mode();
    let r2 = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    r1.and(r2)
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The backend worker's panics are caught and shown in the UI; any other panic
            // must leave a usable terminal before the message is printed.
            if thread::current().name() != Some(BACKEND_THREAD) {
                let _ = restore_terminal();
            }
            prev(info);
        }));
    });
}

/// Restores the terminal when dropped (normal exit, error, or unwinding).
pub(super) struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        let _ = restore_terminal();
    }
}

/// Enters raw mode and the alternate screen; the guard restores the terminal when dropped.
pub(super) fn setup_terminal() -> Result<(TerminalGuard, Terminal<CrosstermBackend<io::Stdout>>)> {
    install_panic_hook();
    enable_raw_mode()?;
    let guard = TerminalGuard;
    let mut out = io::stdout();
    execute!(out, EnterAlternateScreen, cursor::Hide)?;
    out.flush()?;
    let terminal = Terminal::new(CrosstermBackend::new(out))?;
    Ok((guard, terminal))
}

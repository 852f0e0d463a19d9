//! Termination signals (SIGTERM, SIGINT, SIGHUP) for the terminal commands: the first one asks
//! the command to end as `q` does (a live run stops and saves its checkpoint first), a second
//! one ends the process at once; either way the terminal is restored (raw mode off, main
//! screen, cursor shown). In raw mode Ctrl-C is a key, not a signal; these come from `kill`,
//! a closing terminal, a job scheduler.

use std::io;

/// The signals handled, with their names.
#[cfg(unix)]
const SIGNALS: [(i32, &str); 3] = [
    (signal_hook::consts::SIGTERM, "SIGTERM"),
    (signal_hook::consts::SIGINT, "SIGINT"),
    (signal_hook::consts::SIGHUP, "SIGHUP"),
];

/// A termination signal that arrived: its number and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// The signal's number (15 for SIGTERM).
    pub number: i32,
    /// Its name ("SIGTERM").
    pub name: &'static str,
}

impl Signal {
    /// The conventional exit status of a process ended by this signal (128 + its number).
    pub fn exit_code(self) -> i32 {
        128 + self.number
    }
}

/// Calls `first` on the first termination signal, on a thread of its own; `first` returns
/// false when nobody can act on it any more. On a second signal, or a first that nobody took,
/// restores the terminal and exits with `128 + signal`.
#[cfg(unix)]
pub fn listen(mut first: impl FnMut(Signal) -> bool + Send + 'static) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new(SIGNALS.map(|(n, _)| n))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for number in signals.forever() {
                let name = SIGNALS
                    .iter()
                    .find(|(n, _)| *n == number)
                    .map_or("signal", |(_, s)| s);
                let sig = Signal { number, name };
                seen += 1;
                if seen == 1 && first(sig) {
                    continue;
                }
                let _ = super::terminal::restore_terminal();
                eprintln!("{name}: exiting now");
                std::process::exit(sig.exit_code());
            }
        })?;
    Ok(())
}

/// Without Unix signals there is nothing to listen to.
#[cfg(not(unix))]
pub fn listen(_first: impl FnMut(Signal) -> bool + Send + 'static) -> io::Result<()> {
    Ok(())
}

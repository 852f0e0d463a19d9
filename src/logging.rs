//! Logs go to a file (never to the terminal the UI draws on).
use std::path::Path;

/// Route `tracing` output to `path` (appending). Returns the guard that flushes on drop; `None`
/// when the file cannot be opened or a subscriber is already set.
pub fn to_file(path: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = path.parent()?;
    let name = path.file_name()?;
    let appender = tracing_appender::rolling::never(dir, name);
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CAHL_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init()
        .ok()?;
    Some(guard)
}

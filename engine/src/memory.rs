//! Memory readings of this process (Linux `/proc/self/status`).

/// Peak resident set size of this process in bytes (Linux), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current resident set size of this process in bytes (Linux), if known.
pub fn current_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Current and peak RSS at a point of step `step`, at debug level (`CAHL_LOG=debug`).
pub fn log_memory(step: u64, at: &str) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let mb = |b: Option<u64>| b.map_or(-1.0, |b| b as f64 / 1e6);
        tracing::debug!(
            step,
            rss_mb = mb(current_rss_bytes()),
            peak_mb = mb(peak_rss_bytes()),
            "memory {at}"
        );
    }
}

//! The run's data as read from the session files: metrics (for the charts), trajectory entries
//! (for the stream) and checkpoints. Replay and live mode both get it only from the files, as
//! [`DiskBatch`]es built by the loop's session reader, so both show the same thing the same way.

use std::path::PathBuf;

use cahl_sessions::{
    CheckpointRecord, MetricsRecord, RunInfo, TrajectoryRecord, TrajectorySummary,
};

use super::{AppState, Effect, Level};

/// New data read from a session's files (replay, and live mode following its own session).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiskBatch {
    /// Metrics were re-read from scratch: replace instead of append.
    pub metrics_reset: bool,
    /// Trajectories were re-read from scratch: clear the list first.
    pub trajectories_reset: bool,
    /// New metrics.
    pub metrics: Vec<MetricsRecord>,
    /// New trajectory entries `(reader index, summary, full record if parsed)`.
    pub entries: Vec<(usize, TrajectorySummary, Option<Box<TrajectoryRecord>>)>,
    /// Newly committed checkpoints.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Problems found (already formatted).
    pub problems: Vec<String>,
    /// Run info, if (newly) known.
    pub run_info: Option<RunInfo>,
    /// Everything already on disk when the reader was opened (rather than new since the last
    /// read): its checkpoints are listed without a "checkpoint saved" message.
    pub initial: bool,
}

impl AppState {
    fn add_metrics(&mut self, m: MetricsRecord) {
        // A resumed run rewrites the steps after its checkpoint: replace them.
        if self.metrics.last().is_some_and(|l| l.step >= m.step) {
            let keep = self.metrics.partition_point(|x| x.step < m.step);
            self.metrics.truncate(keep);
        }
        self.metrics.push(m);
    }

    /// The session directory (replay may open a JSONL file of the session rather than its
    /// directory).
    pub fn session_dir(&self) -> Option<PathBuf> {
        let p = self.session_path.as_ref()?;
        Some(if p.extension().is_some_and(|e| e == "jsonl") {
            p.parent().map(PathBuf::from).unwrap_or_default()
        } else {
            p.clone()
        })
    }

    /// The newest committed checkpoint: its directory (resolved against the session
    /// directory) and step.
    pub fn latest_checkpoint(&self) -> Option<(PathBuf, u64)> {
        let step = self.checkpoints.iter().map(|c| c.step).max()?;
        Some((self.checkpoint_path(step)?, step))
    }

    /// The directory of the committed checkpoint of `step` (resolved against the session
    /// directory).
    pub fn checkpoint_path(&self, step: u64) -> Option<PathBuf> {
        let ck = self.checkpoints.iter().find(|c| c.step == step)?;
        let rel = PathBuf::from(&ck.path);
        let path = match self.session_dir() {
            Some(dir) if rel.is_relative() => dir.join(rel),
            _ => rel,
        };
        Some(path)
    }
}

pub(super) fn on_disk(s: &mut AppState, b: DiskBatch) {
    if let Some(info) = b.run_info {
        s.total_steps = info.total_steps;
        // Live mode already has the engine's (more detailed) device description from `Started`.
        if s.device.is_empty() {
            s.device = info.device.clone();
        }
        s.run_info = Some(info);
    }
    if b.metrics_reset {
        s.metrics.clear();
        s.log(Level::Warn, "metrics file was replaced; re-read");
    }
    for m in b.metrics {
        s.add_metrics(m);
    }
    if b.trajectories_reset {
        s.trajs.clear();
        s.log(Level::Warn, "trajectories file was replaced; re-read");
    }
    for (i, summary, rec) in b.entries {
        s.trajs.push_entry(i, &summary, rec);
    }
    for c in b.checkpoints {
        if !b.initial {
            s.log(
                Level::Info,
                format!("checkpoint saved: step {} ({})", c.step, c.path),
            );
        }
        s.checkpoints.retain(|x| x.step != c.step);
        s.checkpoints.push(c);
    }
    for p in b.problems {
        s.log(Level::Warn, p.clone());
        s.problems.push(p);
    }
}

/// A trajectory requested with [`Effect::Load`] arrived (or failed).
pub(super) fn on_loaded(
    s: &mut AppState,
    seq: u64,
    result: Result<Box<TrajectoryRecord>, super::TrajectoryLoadError>,
) -> Vec<Effect> {
    match result {
        Ok(rec) => {
            s.trajs.set_record(seq, rec);
            if s.pending_debug == Some(seq) {
                s.pending_debug = None;
                s.flash = None;
                return s.open_debugger_on(seq);
            }
            Vec::new()
        }
        Err(e) => {
            if s.pending_debug == Some(seq) {
                s.pending_debug = None;
            }
            s.flash = Some(format!("cannot load trajectory: {e}"));
            s.log(Level::Warn, format!("cannot load trajectory: {e}"));
            Vec::new()
        }
    }
}

/// Task texts and plan shapes requested with [`Effect::LoadTexts`] arrived.
pub(super) fn on_texts(s: &mut AppState, texts: Vec<(u64, String, (usize, usize))>) {
    for (seq, text, shape) in texts {
        if let Some(it) = s.trajs.get_mut(seq) {
            it.task_text = Some(text);
            it.plan_len = Some(shape);
        }
    }
}

//! The session files as the UI's one source of run data.
//!
//! Metrics, trajectories and checkpoints reach the state only through a [`SessionFeed`]: replay
//! opens it on the recorded session; live mode attaches it to the directory named by the
//! engine's `Started` event and reads again whenever a `Metrics`, `Trajectory` or `Checkpoint`
//! event says the engine appended something (and on the regular poll timer). Both modes turn
//! what the reader found into the same [`DiskBatch`]es, so they show the same thing the same way.

use std::path::Path;

use cahl_sessions::{SessionError, SessionReader, Update};

use crate::state::DiskBatch;

/// Builds a [`DiskBatch`] from a reader's newly read data.
pub fn batch_from_update(reader: &SessionReader, up: Update) -> DiskBatch {
    let mut records: Vec<_> = up.trajectories.into_iter().collect();
    records.sort_by_key(|(i, _)| *i);
    let mut rec_iter = records.into_iter().peekable();
    let entries = up
        .new_entries
        .clone()
        .filter_map(|i| {
            let e = reader.entries().get(i)?;
            let rec = match rec_iter.peek() {
                Some((j, _)) if *j == i => rec_iter.next().map(|(_, r)| Box::new(r)),
                _ => None,
            };
            Some((i, e.summary.clone(), rec))
        })
        .collect();
    DiskBatch {
        metrics_reset: up.metrics_reset,
        trajectories_reset: up.trajectories_reset,
        metrics: up.metrics,
        entries,
        checkpoints: up.checkpoints,
        problems: up.problems.iter().map(|p| p.to_string()).collect(),
        run_info: None,
        initial: false,
    }
}

/// Everything already read by a freshly opened reader.
pub fn initial_batch(reader: &SessionReader) -> DiskBatch {
    DiskBatch {
        metrics_reset: false,
        trajectories_reset: false,
        metrics: reader.metrics().to_vec(),
        entries: reader
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.summary.clone(), None))
            .collect(),
        checkpoints: reader.checkpoints().to_vec(),
        problems: reader.problems().iter().map(|p| p.to_string()).collect(),
        run_info: reader.run_info().cloned(),
        initial: true,
    }
}

/// Follows one session's files and hands out what is new as [`DiskBatch`]es.
#[derive(Debug, Default)]
pub struct SessionFeed {
    reader: Option<SessionReader>,
}

impl SessionFeed {
    /// A feed not attached to a session yet (live mode before `Started`, the debugger).
    pub fn detached() -> Self {
        SessionFeed::default()
    }

    /// Opens `path` (a session directory or a JSONL file) and returns the feed with everything
    /// already there.
    pub fn open(path: &Path) -> Result<(Self, DiskBatch), SessionError> {
        let reader = SessionReader::open(path)?;
        let batch = initial_batch(&reader);
        Ok((
            SessionFeed {
                reader: Some(reader),
            },
            batch,
        ))
    }

    /// The session reader, once attached.
    pub fn reader(&self) -> Option<&SessionReader> {
        self.reader.as_ref()
    }

    /// What is new in the files since the last read. A detached feed first attaches to `dir`
    /// (its first batch is then everything already there); without `dir` it reads nothing.
    /// `Ok(None)`: nothing new.
    pub fn read(&mut self, dir: Option<&Path>) -> Result<Option<DiskBatch>, SessionError> {
        let Some(r) = self.reader.as_mut() else {
            let Some(dir) = dir else {
                return Ok(None);
            };
            let (feed, batch) = SessionFeed::open(dir)?;
            *self = feed;
            return Ok(Some(batch));
        };
        let up = r.poll_new();
        if up.is_empty() {
            return Ok(None);
        }
        let mut batch = batch_from_update(r, up);
        batch.run_info = r.run_info().cloned();
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixture as fx;
    use cahl_sessions::SessionWriter;

    #[test]
    fn a_detached_feed_attaches_on_first_read_then_returns_only_new_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut feed = SessionFeed::detached();
        assert!(feed.read(None).expect("no dir").is_none());
        assert!(feed.read(Some(&dir.path().join("missing"))).is_err());
        let mut w =
            SessionWriter::create(dir.path(), "seed = 7\n", &fx::run_info(10)).expect("create");
        w.append_metrics(&fx::metrics(1)).expect("append");
        let first = feed.read(Some(dir.path())).expect("read").expect("batch");
        assert!(first.initial);
        assert_eq!(first.metrics.len(), 1);
        assert_eq!(first.run_info, Some(fx::run_info(10)));
        assert!(feed.read(Some(dir.path())).expect("read").is_none());
        w.append_trajectory(&fx::trajectory(2, 0)).expect("append");
        let next = feed.read(None).expect("read").expect("batch");
        assert!(!next.initial);
        assert_eq!(next.entries.len(), 1);
        assert!(next.entries[0].2.is_some(), "new lines arrive parsed");
    }
}

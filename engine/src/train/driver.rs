//! The run driver: owns the trainer's thread ([`spawn`]), obeys [`TrainCommand`]s and emits
//! [`TrainEvent`]s along one path: every event goes through the [`Sink`], which first appends
//! the records it carries (metrics, trajectories) to the session and only then forwards the
//! event to the observers. An observer that receives `Metrics` or `Trajectory` can therefore
//! read the record from the session files, as replay does.
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use cahl_sessions::events::{RunState, TrainCommand, TrainEvent};
use cahl_sessions::records::{CheckpointRecord, MetricsRecord};
use cahl_sessions::SessionWriter;

use crate::error::{EngineError, Result};
use crate::model::ops;

use super::health::{no_signal_note, not_completed_reason, Health};
use super::trainer::Trainer;

/// A session reopened for `--resume` ([`resume_session`]).
pub struct Resumed {
    /// The writer, appending after the records of `step`.
    pub writer: SessionWriter,
    /// The step the run continues from (0: from the start).
    pub step: u64,
    /// What was repaired or chosen on the way, one line each, for the terminal and the log.
    pub notes: Vec<String>,
}

/// Reopen session `dir` for `--resume`: repair the JSONL files (torn tails, unreadable lines;
/// each repair is reported in [`Resumed::notes`]), load the newest intact checkpoint into
/// `trainer` (a damaged newer one is skipped, saying why), and drop records of steps after it
/// (they are re-run identically). When records of committed steps are missing, the run goes
/// back to a checkpoint before the first missing step, so every step ends up recorded.
pub fn resume_session(trainer: &mut Trainer, dir: &Path) -> Result<Resumed> {
    let (mut writer, report) = SessionWriter::resume(dir)?;
    let mut notes = report.messages();
    let mut candidates = cahl_sessions::intact_checkpoints(dir)?;
    if let Some(latest) = &report.latest_checkpoint {
        if candidates.first().map(|c| c.step) != Some(latest.step) {
            let why = cahl_sessions::checkpoint_defect(dir, latest)
                .unwrap_or_else(|| "not intact".into());
            notes.push(format!(
                "checkpoint step-{} is damaged ({why}); falling back to the newest intact one",
                latest.step
            ));
        }
    }
    // Records of committed steps must all be there: otherwise resume before the first gap.
    let first_lost = |step: u64| report.lost_steps(step).first().copied();
    while let Some(ck) = candidates.first() {
        match first_lost(ck.step) {
            Some(l) if l <= ck.step => {
                notes.push(format!(
                    "records of step {l} are missing; not resuming from step-{} (it would leave them unrecorded)",
                    ck.step
                ));
                candidates.retain(|c| c.step < l);
            }
            _ => break,
        }
    }
    for ck in candidates {
        let p = dir.join(&ck.path);
        let p = if p.exists() {
            p
        } else {
            std::path::PathBuf::from(&ck.path)
        };
        match trainer.load_checkpoint(&p) {
            Ok(()) => {
                // The KL reference the run started with (grpo.reference = "init").
                trainer.load_reference(dir)?;
                writer.truncate_after_step(ck.step)?;
                notes.push(format!("resuming from checkpoint step-{}", ck.step));
                return Ok(Resumed {
                    writer,
                    step: ck.step,
                    notes,
                });
            }
            Err(e) => notes.push(format!(
                "checkpoint step-{} cannot be loaded ({e}); trying an older one",
                ck.step
            )),
        }
    }
    if report.latest_checkpoint.is_some() {
        notes.push("no usable checkpoint: the run starts again from step 1".into());
    }
    writer.clear_records()?;
    Ok(Resumed {
        writer,
        step: 0,
        notes,
    })
}

/// A running training: its events, the command channel, and the trainer's thread.
pub struct RunHandle {
    /// Everything the run reports, `Started` first and `Finished` last.
    pub events: Receiver<TrainEvent>,
    /// Pause, resume, checkpoint, stop.
    pub commands: Sender<TrainCommand>,
    thread: JoinHandle<Result<()>>,
}

impl RunHandle {
    /// Split into the event receiver, the command sender and the thread's join handle (for an
    /// observer that owns the channels on other threads).
    pub fn into_parts(
        self,
    ) -> (
        Receiver<TrainEvent>,
        Sender<TrainCommand>,
        JoinHandle<Result<()>>,
    ) {
        (self.events, self.commands, self.thread)
    }
}

/// Wait for the trainer's thread: its result, or an error when it panicked.
pub fn join(thread: JoinHandle<Result<()>>) -> Result<()> {
    thread
        .join()
        .unwrap_or_else(|_| Err(EngineError::TrainerPanicked))
}

/// Start `trainer` on its own thread (on the compute pool, see [`ops::on_compute_pool`]),
/// writing to `writer`'s session. The first event is `Started`, the last `Finished`.
pub fn spawn(trainer: Trainer, writer: SessionWriter) -> Result<RunHandle> {
    let (ev_tx, events) = mpsc::channel();
    let (commands, cmd_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || ops::on_compute_pool(|| run(trainer, Some(writer), ev_tx, cmd_rx)))
        .map_err(EngineError::TrainerThread)?;
    Ok(RunHandle {
        events,
        commands,
        thread,
    })
}

/// The one path of events: records go to the session first, then the event to the observers.
pub struct Sink {
    writer: Option<SessionWriter>,
    events: Sender<TrainEvent>,
}

impl Sink {
    /// Emit `e`: append the record it carries to the session (metrics, trajectories), then
    /// send it. A failed write is reported as an `Error` event; the event is still sent.
    pub fn emit(&mut self, e: TrainEvent) {
        if let Some(w) = self.writer.as_mut() {
            let written = match &e {
                TrainEvent::Metrics(m) => w.append_metrics(m).map_err(|e| ("metrics", e)),
                TrainEvent::Trajectory(t) => w.append_trajectory(t).map_err(|e| ("trajectory", e)),
                _ => Ok(()),
            };
            if let Err((what, err)) = written {
                let _ = self
                    .events
                    .send(TrainEvent::Error(format!("writing {what}: {err}")));
            }
        }
        let _ = self.events.send(e);
    }

    /// The session directory, when the run writes one.
    pub fn session_dir(&self) -> Option<PathBuf> {
        self.writer.as_ref().map(|w| w.dir().to_path_buf())
    }

    /// Write a checkpoint of `trainer` into the session (`None` without a session).
    fn save(
        &mut self,
        trainer: &Trainer,
    ) -> Result<Option<cahl_sessions::records::CheckpointRecord>> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(None);
        };
        let tmp = w.checkpoint_dir(trainer.steps_done())?;
        let (pd, ed) = (tmp.planner_dir(), tmp.executor_dir());
        trainer.save_checkpoint(tmp.path(), &pd, &ed)?;
        Ok(Some(w.commit_checkpoint(tmp)?))
    }

    /// [`Sink::save`] with a bounded retry (3 tries, 0.2 s and 1 s apart), for a disk that is
    /// briefly full or busy. The last error names the path that failed.
    fn save_retrying(
        &mut self,
        trainer: &Trainer,
    ) -> Result<Option<cahl_sessions::records::CheckpointRecord>> {
        let mut last = None;
        for wait_ms in [0u64, 200, 1000] {
            std::thread::sleep(Duration::from_millis(wait_ms));
            match self.save(trainer) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::warn!("checkpoint of step {} failed: {e}", trainer.steps_done());
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three tries"))
    }

    /// Write a checkpoint (with retries) and announce it, keeping `last` up to date. When it
    /// cannot be written the run ends here ([`fail_to_persist`]) with the error returned.
    fn checkpoint(&mut self, trainer: &Trainer, last: &mut Option<CheckpointRecord>) -> Result<()> {
        match self.save_retrying(trainer) {
            Ok(Some(rec)) => {
                *last = Some(rec.clone());
                self.emit(TrainEvent::Checkpoint(rec));
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                fail_to_persist(self, trainer, last.clone(), &e);
                Err(e)
            }
        }
    }

    /// Close the session (flushes and syncs the JSONL files).
    fn close(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.close() {
                self.emit(TrainEvent::Error(format!("closing session: {e}")));
            }
        }
    }
}

/// End the run because its result cannot be persisted: an error naming what failed, then
/// `Finished` (not completed); the caller returns the error, so the command exits non-zero.
fn fail_to_persist(
    sink: &mut Sink,
    trainer: &Trainer,
    last: Option<CheckpointRecord>,
    e: &EngineError,
) {
    sink.emit(TrainEvent::Error(format!("checkpoint failed: {e}")));
    sink.close();
    sink.emit(TrainEvent::Finished {
        step: trainer.steps_done(),
        completed: false,
        checkpoint: last,
        message: format!(
            "stopped: the checkpoint of step {} cannot be written ({e})",
            trainer.steps_done()
        ),
    });
}

/// Drive `trainer` to `cfg.steps` on this thread, writing the session and emitting events; obeys
/// commands. Returns when done, stopped, or after repeated step failures (reported as events).
/// [`spawn`] runs this on a thread of its own.
pub fn run(
    mut trainer: Trainer,
    writer: Option<SessionWriter>,
    events: Sender<TrainEvent>,
    commands: Receiver<TrainCommand>,
) -> Result<()> {
    ops::init_cpu_float_mode();
    let total = trainer.cfg.steps;
    let mut sink = Sink { writer, events };
    if let Some(dir) = sink.session_dir() {
        let info = sink
            .writer
            .as_ref()
            .map(|w| w.run_info().clone())
            .unwrap_or_default();
        let device = info.device.clone();
        sink.emit(TrainEvent::Started {
            info,
            total_steps: total,
            start_step: trainer.steps_done(),
            session_dir: dir,
            device,
        });
    }
    if trainer.steps_done() == 0 {
        if let Some(dir) = sink.session_dir() {
            // A resumed run that starts over (no usable checkpoint) keeps the reference it
            // saved when it first started.
            if dir.join("reference").is_dir() {
                trainer.load_reference(&dir)?;
            } else {
                trainer.save_reference(&dir)?;
            }
        }
    }
    let mut paused = false;
    let mut failures = 0;
    let mut health = Health::new();
    let first_step = trainer.steps_done();
    let mut stopped = false;
    let mut last_ckpt = None;
    if trainer.steps_done() == 0 && trainer.eval_enabled() {
        // Baseline (step 0): the untrained adapters on the held-out tasks.
        sink.emit(TrainEvent::Progress {
            step: 0,
            phase: "baseline evaluation".into(),
            tokens_per_s: f64::NAN,
            memory_bytes: crate::memory::current_rss_bytes(),
        });
        match trainer.evaluate() {
            Ok(Some(ev)) => sink.emit(TrainEvent::Metrics(MetricsRecord {
                step: 0,
                elapsed_s: 0.0,
                eval: Some(ev),
                ..MetricsRecord::default()
            })),
            Ok(None) => {}
            Err(e) => sink.emit(TrainEvent::Warning(format!(
                "baseline evaluation failed: {e}"
            ))),
        }
    }
    while trainer.steps_done() < total && !trainer.budget_exhausted() {
        // Commands: drain without blocking; block while paused.
        loop {
            let cmd = if paused {
                match commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => Some(TrainCommand::Stop),
                }
            } else {
                commands.try_recv().ok()
            };
            let Some(cmd) = cmd else { break };
            match cmd {
                TrainCommand::Pause => {
                    paused = true;
                    sink.emit(TrainEvent::Status {
                        state: RunState::Paused,
                        message: "paused".into(),
                    });
                }
                TrainCommand::Resume => {
                    paused = false;
                    sink.emit(TrainEvent::Status {
                        state: RunState::Running,
                        message: "resumed".into(),
                    });
                }
                TrainCommand::SaveCheckpoint => {
                    if sink.writer.is_none() {
                        sink.emit(TrainEvent::Warning(
                            "no session directory: nothing saved".into(),
                        ));
                    }
                    sink.checkpoint(&trainer, &mut last_ckpt)?;
                }
                TrainCommand::Stop => {
                    stopped = true;
                    sink.emit(TrainEvent::Status {
                        state: RunState::Stopping,
                        message: "stopping".into(),
                    });
                    break;
                }
            }
            if !paused {
                break;
            }
        }
        if stopped {
            break;
        }
        match trainer.step() {
            Ok(res) => {
                failures = 0;
                for w in &res.warnings {
                    tracing::warn!("{w}");
                    sink.emit(TrainEvent::Warning(w.clone()));
                }
                for t in res.trajectories {
                    sink.emit(TrainEvent::Trajectory(Box::new(t)));
                }
                match trainer.adapter_max_abs() {
                    Ok(w) => {
                        for a in health.observe(&res.metrics, w) {
                            tracing::warn!("divergence: {a}");
                            sink.emit(TrainEvent::Warning(format!("divergence: {a}")));
                        }
                    }
                    Err(e) => tracing::warn!("reading the adapters' weights: {e}"),
                }
                sink.emit(TrainEvent::Progress {
                    step: res.metrics.step,
                    phase: "step done".into(),
                    tokens_per_s: res.metrics.tokens_per_s,
                    memory_bytes: crate::memory::current_rss_bytes(),
                });
                sink.emit(TrainEvent::Metrics(res.metrics));
            }
            Err(e) => {
                failures += 1;
                tracing::error!("step {} failed: {e}", trainer.steps_done() + 1);
                sink.emit(TrainEvent::Error(format!(
                    "step {} failed: {e}",
                    trainer.steps_done() + 1
                )));
                if failures >= 3 {
                    sink.emit(TrainEvent::Finished {
                        step: trainer.steps_done(),
                        completed: false,
                        checkpoint: last_ckpt.clone(),
                        message: format!("stopped after 3 consecutive failed steps: {e}"),
                    });
                    return Err(e);
                }
                continue;
            }
        }
        let every = trainer.cfg.checkpoint_every;
        if every > 0 && trainer.steps_done().is_multiple_of(every) && trainer.steps_done() < total {
            sink.checkpoint(&trainer, &mut last_ckpt)?;
        }
    }
    // Final checkpoint (also when stopped).
    sink.checkpoint(&trainer, &mut last_ckpt)?;
    sink.close();
    sink.emit(TrainEvent::Status {
        state: RunState::Finished,
        message: "finished".into(),
    });
    let no_update =
        not_completed_reason(trainer.steps_done() - first_step, trainer.update_counts());
    let mut message = match (&no_update, stopped) {
        (Some(why), _) => format!("not completed: {why}"),
        (None, true) => "stopped by user".into(),
        (None, false) => "completed".into(),
    };
    if let Some(note) = no_signal_note(trainer.steps_done() - first_step, trainer.update_counts()) {
        message += &format!("; {note}");
    }
    if !health.alarms().is_empty() {
        message += &format!("; diverged: {}", health.alarms().join("; "));
    }
    sink.emit(TrainEvent::Finished {
        step: trainer.steps_done(),
        completed: !stopped && no_update.is_none(),
        checkpoint: last_ckpt,
        message,
    });
    match no_update {
        Some(why) => Err(EngineError::NoUpdate(why)),
        None => Ok(()),
    }
}

//! The loop's helper threads: terminal input, the engine's event forwarder, and the worker that
//! owns the debugger's model backend. Each turns what it receives into [`Msg`]s on the loop's
//! channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cahl_sessions::{BackendJob, TrainEvent};
use ratatui::crossterm::event::{self, Event};

use super::UiOptions;
use crate::state::Msg;

/// Name of the backend worker thread (a panic there must not restore the terminal).
pub const BACKEND_THREAD: &str = "cahl-ui-backend";

/// Reads terminal input on its own thread (so the loop never blocks on it) until `stop`.
pub(super) fn spawn_input_thread(tx: Sender<Msg>, stop: Arc<AtomicBool>, start: Instant) {
    thread::Builder::new()
        .name("cahl-ui-input".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match event::poll(Duration::from_millis(100)) {
                    Ok(true) => {
                        let msg = match event::read() {
                            Ok(Event::Key(k)) => Msg::Key(k),
                            Ok(Event::Resize(..)) => Msg::Tick(start.elapsed().as_millis() as u64),
                            Ok(_) => continue,
                            Err(_) => break,
                        };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        })
        .ok();
}

/// Moves the engine's events onto the loop's channel; sends [`Msg::EngineGone`] when the
/// engine's channel closes.
pub(super) fn spawn_engine_forwarder(events: Receiver<TrainEvent>, tx: Sender<Msg>) {
    thread::Builder::new()
        .name("cahl-ui-engine".into())
        .spawn(move || {
            for ev in events {
                if tx.send(Msg::Engine(ev)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Msg::EngineGone);
        })
        .ok();
}

/// Starts the worker that owns the backend (and the loader that can replace it), when there is
/// either; takes them out of `opts`.
pub(super) fn spawn_backend_worker(
    opts: &mut UiOptions,
    tx: Sender<Msg>,
) -> Option<Sender<BackendJob>> {
    let mut backend = opts.backend.take();
    let mut loader = opts.loader.take();
    if backend.is_none() && loader.is_none() {
        return None;
    }
    let (jtx, jrx) = mpsc::channel::<BackendJob>();
    thread::Builder::new()
        .name(BACKEND_THREAD.into())
        .spawn(move || {
            for job in jrx {
                let reply = job.run_in(&mut backend, loader.as_deref_mut());
                if tx.send(Msg::Backend(reply)).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(jtx)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use cahl_sessions::{
        BackendError, BackendLoader, BackendReply, DebugStepOutcome, DebugStepRequest, DebugTask,
        ExecutorBackend, PlanRequest,
    };

    use super::*;

    struct Echo;
    impl ExecutorBackend for Echo {
        fn describe(&self) -> String {
            "echo test double".into()
        }
        fn plan(&mut self, _req: PlanRequest) -> Result<Vec<String>, BackendError> {
            panic!("planner exploded")
        }
        fn run_step(&mut self, req: DebugStepRequest) -> Result<DebugStepOutcome, BackendError> {
            Ok(DebugStepOutcome {
                raw_output: format!("step {} seed {}", req.index, req.seed),
                ..DebugStepOutcome::default()
            })
        }
    }

    #[test]
    fn backend_worker_answers_and_survives_a_panicking_backend() {
        let (tx, rx) = mpsc::channel();
        let mut opts = UiOptions {
            backend: Some(Box::new(Echo)),
            ..UiOptions::default()
        };
        let jobs = spawn_backend_worker(&mut opts, tx).expect("worker");
        let task = DebugTask::default();
        jobs.send(BackendJob::Plan {
            ticket: 1,
            req: PlanRequest {
                task: task.clone(),
                seed: 3,
            },
        })
        .expect("send");
        jobs.send(BackendJob::Step {
            ticket: 2,
            req: DebugStepRequest {
                task,
                subtasks: vec!["a".into()],
                index: 0,
                previous: vec![],
                seed: 9,
            },
        })
        .expect("send");
        match rx.recv_timeout(Duration::from_secs(5)).expect("plan reply") {
            Msg::Backend(BackendReply::Plan {
                ticket: 1,
                result: Err(e),
            }) => {
                assert!(e.0.contains("panicked"))
            }
            other => panic!("unexpected {other:?}"),
        }
        match rx.recv_timeout(Duration::from_secs(5)).expect("step reply") {
            Msg::Backend(BackendReply::Step {
                ticket: 2,
                result: Ok(o),
            }) => {
                assert_eq!(o.raw_output, "step 0 seed 9")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Loads [`Echo`] backends; fails for a checkpoint named `bad`, panics for `boom`.
    struct EchoLoader {
        loads: Arc<std::sync::Mutex<Vec<Option<PathBuf>>>>,
    }
    impl BackendLoader for EchoLoader {
        fn describe(&self) -> String {
            "echo loader".into()
        }
        fn load(
            &mut self,
            checkpoint: Option<&Path>,
        ) -> Result<Box<dyn ExecutorBackend>, BackendError> {
            self.loads
                .lock()
                .expect("lock")
                .push(checkpoint.map(Path::to_path_buf));
            match checkpoint.and_then(|c| c.to_str()) {
                Some("bad") => Err("no adapters in bad".into()),
                Some("boom") => panic!("loader exploded"),
                _ => Ok(Box::new(Echo)),
            }
        }
    }

    #[test]
    fn backend_worker_loads_on_demand_and_survives_failed_loads() {
        let loads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut opts = UiOptions {
            loader: Some(Box::new(EchoLoader {
                loads: loads.clone(),
            })),
            ..UiOptions::default()
        };
        assert_eq!(opts.state_options().loader.as_deref(), Some("echo loader"));
        let (tx, rx) = mpsc::channel();
        let jobs = spawn_backend_worker(&mut opts, tx).expect("worker");
        assert!(opts.loader.is_none(), "moved to the worker");
        let step = |ticket| BackendJob::Step {
            ticket,
            req: DebugStepRequest {
                task: DebugTask::default(),
                subtasks: vec!["a".into()],
                index: 0,
                previous: vec![],
                seed: 5,
            },
        };
        let load = |c: Option<&str>, s: Option<u64>| BackendJob::Load {
            checkpoint: c.map(PathBuf::from),
            step: s,
        };
        for j in [
            step(1),
            load(None, None),
            step(2),
            load(Some("bad"), Some(3)),
            step(3),
            load(Some("boom"), Some(4)),
            load(Some("ck/step-5"), Some(5)),
            step(4),
        ] {
            jobs.send(j).expect("send");
        }
        let mut replies = Vec::new();
        for _ in 0..8 {
            match rx.recv_timeout(Duration::from_secs(5)).expect("reply") {
                Msg::Backend(r) => replies.push(r),
                other => panic!("unexpected {other:?}"),
            }
        }
        let step_result = |r: &BackendReply| match r {
            BackendReply::Step { result, .. } => result.clone().map(|o| o.raw_output),
            other => panic!("expected a step reply, got {other:?}"),
        };
        assert_eq!(
            step_result(&replies[0]),
            Err("the model is not loaded".into())
        );
        assert_eq!(
            replies[1],
            BackendReply::Loaded {
                step: None,
                result: Ok("echo test double".into())
            }
        );
        assert_eq!(step_result(&replies[2]), Ok("step 0 seed 5".into()));
        assert_eq!(
            replies[3],
            BackendReply::Loaded {
                step: Some(3),
                result: Err("no adapters in bad".into())
            }
        );
        // A failed reload drops the old copy (at most one copy is held).
        assert_eq!(
            step_result(&replies[4]),
            Err("the model is not loaded".into())
        );
        assert!(matches!(
            &replies[5],
            BackendReply::Loaded { step: Some(4), result: Err(e) } if e.0.contains("panicked")
        ));
        assert!(matches!(
            &replies[6],
            BackendReply::Loaded {
                step: Some(5),
                result: Ok(_)
            }
        ));
        assert_eq!(step_result(&replies[7]), Ok("step 0 seed 5".into()));
        assert_eq!(
            *loads.lock().expect("lock"),
            vec![
                None,
                Some(PathBuf::from("bad")),
                Some(PathBuf::from("boom")),
                Some(PathBuf::from("ck/step-5"))
            ]
        );
    }
}

//! Hosting the debugger in the dashboard: opening it on a trajectory, where it saves, and the
//! model it shares with later debuggers (loaded on demand, kept in sync with new checkpoints).

use std::path::PathBuf;

use cahl_sessions::{BackendJob, BackendReply};

use super::debugger::{DebugAction, DebugInitial, DebuggerState, ModelState};
use super::{load_effect, AppState, Effect, Level, Mode};

impl AppState {
    pub(super) fn debug_save_path(&self, task_id: &str) -> Option<PathBuf> {
        let dir = self
            .opts
            .debug_dir
            .clone()
            .or_else(|| self.session_path.as_ref().map(|p| p.join("debug")))?;
        let safe: String = task_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = if safe.is_empty() { "task".into() } else { safe };
        Some(dir.join(format!("debug-{name}.json")))
    }

    pub(super) fn open_debugger_on(&mut self, seq: u64) -> Vec<Effect> {
        let Some(item) = self.trajs.get(seq) else {
            return Vec::new();
        };
        match &item.record {
            Some(rec) => {
                let initial = DebugInitial::Trajectory {
                    record: rec.clone(),
                    plan_index: None,
                };
                let mut d = DebuggerState::new(initial, self.model.clone());
                d.save_path = self.debug_save_path(&d.task.id);
                self.debugger = Some(Box::new(d));
                self.sync_debugger_model();
                Vec::new()
            }
            None => {
                self.pending_debug = Some(seq);
                self.flash = Some("loading trajectory…".into());
                vec![load_effect(item)]
            }
        }
    }

    /// Copies the model state (and whether a newer checkpoint exists) into the open debugger.
    pub(super) fn sync_debugger_model(&mut self) {
        let newest = self.checkpoints.iter().map(|c| c.step).max();
        let steps: Vec<u64> = self.checkpoints.iter().map(|c| c.step).collect();
        let Some(d) = self.debugger.as_mut() else {
            return;
        };
        d.model = self.model.clone();
        d.checkpoints = steps;
        d.newer_checkpoint = match &self.model {
            ModelState::Ready {
                step,
                reloadable: true,
                ..
            } => newest.filter(|n| step.is_none_or(|s| *n > s)),
            _ => None,
        };
    }

    /// Starts loading the model on demand with the latest checkpoint's adapters.
    pub(super) fn load_model(&mut self) -> Vec<Effect> {
        let latest = self.latest_checkpoint();
        self.load_model_with(latest)
    }

    /// Starts loading the model on demand with the adapters of the checkpoint of `step`
    /// (`None`: fresh adapters, the base model).
    pub(super) fn load_checkpoint(&mut self, step: Option<u64>) -> Vec<Effect> {
        let ck = match step {
            None => None,
            Some(s) => match self.checkpoint_path(s) {
                Some(p) => Some((p, s)),
                None => {
                    let text = format!("no checkpoint of step {s} in this session");
                    self.log(Level::Warn, format!("debugger: {text}"));
                    if let Some(d) = self.debugger.as_mut() {
                        d.message = Some(text);
                    }
                    return Vec::new();
                }
            },
        };
        self.load_model_with(ck)
    }

    fn load_model_with(&mut self, ck: Option<(PathBuf, u64)>) -> Vec<Effect> {
        let Some(what) = self.model.loadable().map(str::to_string) else {
            return Vec::new();
        };
        let what = self.opts.loader.clone().unwrap_or(what);
        let (checkpoint, step) = match ck {
            Some((p, s)) => (Some(p), Some(s)),
            None => (None, None),
        };
        let adapters = match step {
            Some(s) => format!("adapters of checkpoint step {s}"),
            None => "fresh adapters (no checkpoint yet)".to_string(),
        };
        self.log(
            Level::Info,
            format!("debugger: loading {what} with {adapters}"),
        );
        self.model = ModelState::Loading { what, step };
        self.sync_debugger_model();
        vec![Effect::Backend(BackendJob::Load { checkpoint, step })]
    }
}

pub(super) fn debug_action(s: &mut AppState, a: DebugAction) -> Vec<Effect> {
    match a {
        DebugAction::Job(j) => vec![Effect::Backend(j)],
        DebugAction::Save { path, json } => vec![Effect::SaveDebug { path, json }],
        DebugAction::LoadModel => s.load_model(),
        DebugAction::LoadCheckpoint(step) => s.load_checkpoint(step),
        DebugAction::SaveCase(case) => match s.session_dir() {
            Some(session) => vec![Effect::SaveCase { session, case }],
            None => {
                let text = "no session to keep cases in: open the debugger from a session \
                            (replay, train, debug --trace, or debug --open of a file under \
                            <session>/debug/)"
                    .to_string();
                if let Some(d) = s.debugger.as_mut() {
                    d.message = Some(text);
                }
                Vec::new()
            }
        },
        DebugAction::Close => {
            if s.mode == Mode::Debug {
                vec![Effect::Quit]
            } else {
                s.debugger = None;
                Vec::new()
            }
        }
    }
}

/// A debugger backend reply: a (re)loaded model updates the shared model state first.
pub(super) fn on_backend(s: &mut AppState, reply: BackendReply) -> Vec<Effect> {
    if let BackendReply::Loaded { step, result } = &reply {
        let what = match &s.model {
            ModelState::Loading { what, .. } => what.clone(),
            other => other.loadable().unwrap_or("the model").to_string(),
        };
        s.model = match result {
            Ok(describe) => {
                s.log(Level::Info, format!("debugger model ready: {describe}"));
                ModelState::Ready {
                    describe: describe.clone(),
                    step: *step,
                    reloadable: true,
                }
            }
            Err(error) => {
                s.log(
                    Level::Warn,
                    format!("loading the debugger model failed: {error}"),
                );
                ModelState::Failed {
                    what,
                    error: error.to_string(),
                }
            }
        };
        s.sync_debugger_model();
    }
    match s.debugger.as_mut().and_then(|d| d.on_reply(reply)) {
        Some(a) => debug_action(s, a),
        None => Vec::new(),
    }
}

//! The debugger's on-demand model: a second copy of a run's model, loaded on the UI's backend
//! worker thread when the debugger first needs it.
use std::path::Path;

use cahl_sessions::debug::{BackendError, BackendLoader, ExecutorBackend};
use cahl_sessions::SessionReader;

use crate::load::embedded;
use crate::train::TrainConfig;

use super::engine_backend;
use super::lookup::session_config;

/// Loads the model a training run trains, as a second copy for the debugger, when the debugger
/// first needs it (on the UI's backend worker thread, so neither the trainer nor the UI waits).
///
/// Memory: the copy holds the base weights again in the run's dtype (f32 on CPU: 4 bytes per
/// parameter, e.g. ~0.54 GB for SmolLM2-135M, ~2 GB for Qwen2.5-0.5B) plus the adapters; it is
/// only loaded on demand and replaced (not added to) on reload.
pub struct SessionModelLoader {
    /// Model spec (path, or "" / "embedded").
    pub model: String,
    /// The run's configuration (sampling, rewards, dtype).
    pub cfg: TrainConfig,
    /// Base parameter count when known (training: the trainer's copy), for the memory
    /// estimate of the second copy.
    pub params: Option<u64>,
}

impl SessionModelLoader {
    fn bytes(&self) -> Option<u64> {
        let per = match self.cfg.model.dtype.as_str() {
            "f16" | "bf16" => 2,
            _ => 4,
        };
        self.params.map(|p| p * per)
    }

    /// The model of a recorded session (its `config.toml`, else `run.json`), when it can be
    /// loaded from here: for the debugger of `replay`, loaded on demand.
    pub fn of_session(trace: &Path) -> Option<Self> {
        let cfg = session_config(trace);
        let spec = if cfg.model.path.is_empty() {
            SessionReader::open(trace)
                .ok()
                .and_then(|r| r.run_info().map(|i| i.model.clone()))
                .unwrap_or_default()
        } else {
            cfg.model.path.clone()
        };
        let loadable = if embedded::is_embedded(&spec) {
            embedded::available()
        } else {
            Path::new(&spec).exists()
        };
        loadable.then_some(SessionModelLoader {
            model: spec,
            cfg,
            params: None,
        })
    }
}

impl BackendLoader for SessionModelLoader {
    fn describe(&self) -> String {
        let name = Path::new(&self.model)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| embedded::EMBEDDED.to_string());
        match self.bytes() {
            Some(b) => format!("{name} (second copy, ~{:.0} MB)", b as f64 / 1e6),
            None => format!("{name} (the session's model)"),
        }
    }

    fn load(
        &mut self,
        checkpoint: Option<&Path>,
    ) -> std::result::Result<Box<dyn ExecutorBackend>, BackendError> {
        let mut b = engine_backend(&self.model, checkpoint, self.cfg.clone())
            .map_err(|e| BackendError(e.to_string()))?;
        if checkpoint.is_none() {
            b.set_adapters_label(
                "base model + fresh adapters (no checkpoint yet; fresh LoRA = the base model)",
            );
        }
        Ok(Box::new(b))
    }
}

//! The debugger's model as far as the UI knows: missing, loadable on demand, loading, ready or
//! failed.

/// Message shown when running needs a model and none is loaded.
pub const NEEDS_MODEL: &str =
    "running the executor needs a model: start with --model PATH or from a session with a checkpoint";

/// The debugger's model, as far as the UI knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelState {
    /// No model: the debugger edits plans and compares branches only.
    #[default]
    Missing,
    /// A model can be loaded on demand: what would be loaded, and what it costs.
    OnDemand(String),
    /// Loading, with the adapters of checkpoint `step` (`None`: fresh adapters).
    Loading {
        /// What is being loaded.
        what: String,
        /// Checkpoint step of the adapters.
        step: Option<u64>,
    },
    /// Ready to run.
    Ready {
        /// The backend's description.
        describe: String,
        /// Checkpoint step of the adapters, when loaded on demand (`None`: fresh adapters, or
        /// a backend given at start).
        step: Option<u64>,
        /// Loaded on demand, so `L` can reload it with a newer checkpoint.
        reloadable: bool,
    },
    /// Loading failed; `L` (or running) tries again.
    Failed {
        /// What was being loaded.
        what: String,
        /// Why it failed.
        error: String,
    },
}

impl ModelState {
    /// The state for a backend given at start (`Some` description) or none.
    pub fn given(backend: Option<String>) -> Self {
        match backend {
            Some(describe) => ModelState::Ready {
                describe,
                step: None,
                reloadable: false,
            },
            None => ModelState::Missing,
        }
    }

    /// The model can run now.
    pub fn ready(&self) -> bool {
        matches!(self, ModelState::Ready { .. })
    }

    /// What a (re)load would load, if the model can be loaded on demand.
    pub fn loadable(&self) -> Option<&str> {
        match self {
            ModelState::OnDemand(w) | ModelState::Failed { what: w, .. } => Some(w),
            ModelState::Ready {
                describe,
                reloadable: true,
                ..
            } => Some(describe),
            _ => None,
        }
    }
}

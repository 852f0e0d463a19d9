//! Error type of the engine crate.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Load { path: PathBuf, msg: String },
    #[error("config error: {0}")]
    Config(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("chat template error: {0}")]
    Template(String),
    #[error(transparent)]
    Session(#[from] cahl_sessions::SessionError),
    #[error(transparent)]
    World(#[from] crate::worlds::WorldError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Serializing or parsing `what` (a file or object name) as JSON failed.
    #[error("{what}: {source}")]
    JsonIn {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The Hugging Face tokenizers library failed while doing `what`.
    #[error("{what}: {source}")]
    HfTokenizer {
        what: &'static str,
        #[source]
        source: tokenizers::Error,
    },
    /// The trainer's thread could not be started.
    #[error("starting the trainer thread: {0}")]
    TrainerThread(#[source] std::io::Error),
    /// The trainer's thread panicked (the log says where).
    #[error("the trainer thread panicked")]
    TrainerPanicked,
    /// A worker thread pool could not be started.
    #[error("starting worker lane {lane}: {source}")]
    Lane {
        lane: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// A world failed on the named task.
    #[error("task {task}: {source}")]
    Task {
        task: String,
        #[source]
        source: crate::worlds::WorldError,
    },
    /// Model or adapter weights are missing or do not fit.
    #[error("{0}")]
    Weights(String),
    #[error("no adapter named {0:?}")]
    NoAdapter(String),
    #[error("unknown save dtype {0:?}")]
    UnknownDtype(String),
    /// A mutex was poisoned by a panicking thread.
    #[error("{0} poisoned")]
    Poisoned(&'static str),
    /// The arguments of a call break its preconditions (shapes, lengths, empty inputs).
    #[error("{0}")]
    Invalid(String),
    /// A training run ended without applying a single update (the reason says why).
    #[error("the run did not train: {0}")]
    NoUpdate(String),
    /// A rollout server failed (after its retries): the endpoint and what happened.
    #[error("rollout endpoint {endpoint}: {msg}")]
    Endpoint { endpoint: String, msg: String },
    /// The model's current state does not allow the operation.
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub fn load(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        EngineError::Load {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

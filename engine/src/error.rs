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
    #[error("{0}")]
    Other(String),
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

//! cahl-engine: model, tokenizer and chat templates, sampling, GRPO, tool worlds, rewards.
//! No terminal code lives here.
pub mod chat;
pub mod error;
pub mod load;
pub mod model;
pub mod tokenizer;

pub use error::{EngineError, Result};

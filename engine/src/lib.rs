//! cahl-engine: model, tokenizer and chat templates, sampling, GRPO, tool worlds, rewards.
//! No terminal code lives here.
pub mod error;
pub mod model;

pub use error::{EngineError, Result};

//! cahl-engine: model, tokenizer and chat templates, sampling, GRPO, tool worlds, rewards.
//! No terminal code lives here.
pub mod error;
pub mod model;
pub mod parse;
pub mod rewards;
pub mod score;
pub mod worlds;

pub use error::{EngineError, Result};

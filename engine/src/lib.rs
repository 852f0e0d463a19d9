//! cahl-engine: model, tokenizer and chat templates, sampling, GRPO, tool worlds, rewards.
//! No terminal code lives here.
pub mod bench;
pub mod error;
pub mod grpo;
pub mod model;
pub mod optim;
pub mod sampling;
pub mod util;

pub use error::{EngineError, Result};

//! cahl-engine: model, tokenizer and chat templates, sampling, GRPO, tool worlds, rewards.
//! No terminal code lives here.
pub mod bench;
pub mod chat;
pub mod error;
pub mod grpo;
pub mod load;
pub mod model;
pub mod optim;
pub mod sampling;
pub mod tokenizer;
pub mod util;

pub use error::{EngineError, Result};

//! cahl-engine: model, tokenizer and chat templates, sampling, GRPO, tool worlds, rewards,
//! hierarchical rollout and the trainer. No terminal code lives here.
pub mod agent;
pub mod backend;
pub mod benchmarks;
pub mod chat;
pub mod debugger;
pub mod device;
pub mod error;
pub mod eval;
pub mod generate;
pub mod grpo;
pub mod import;
pub mod lanes;
pub mod load;
pub mod memory;
pub mod model;
pub mod optim;
pub mod parse;
pub mod pyval;
pub mod rewards;
pub mod sampling;
pub mod sft;
pub mod speedtest;
pub mod tokenizer;
pub mod train;
pub mod wave;
pub mod worlds;

pub use error::{EngineError, Result};

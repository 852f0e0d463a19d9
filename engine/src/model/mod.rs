//! Decoder model (Llama / Qwen2 family) with named LoRA adapters over one frozen base.
pub mod config;

pub use config::{Arch, ModelConfig, TokenIds};

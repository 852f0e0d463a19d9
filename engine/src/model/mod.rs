//! Decoder model (Llama / Qwen2 family) with named LoRA adapters over one frozen base.
pub mod cache;
pub mod config;
pub mod decoder;
pub mod flash;
pub mod fused;
pub mod gemm;
pub mod kernels;
pub mod lora;
pub mod ops;
pub mod prefix;

pub use cache::KvCache;
pub use config::{Arch, ModelConfig, TokenIds};
pub use decoder::{AdapterRef, FrozenLinear, Model};
pub use lora::{LoraAdapter, LoraConfig, LoraPair, Target};
pub use prefix::Prefix;

//! Model configuration, mirroring Hugging Face `config.json` for the Llama / Qwen2 family.
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A token id field in `config.json` may be a single id or a list of ids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(x) => vec![*x],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// Architecture family. `llama` covers SmolLM2; `qwen2` covers Qwen2 and Qwen2.5.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    4096
}
fn default_act() -> String {
    "silu".to_string()
}

/// `config.json` of a Llama / Qwen2 checkpoint. Unknown keys are ignored (HF configs carry many).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama's switch for q/k/v/o biases. Qwen2 always has q/k/v biases (and no o bias).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    /// Not an HF key: true when the stored Q/K rows are laid out for interleaved (GPT-J style)
    /// rotary embedding instead of HF's rotate-half. Loaders convert GGUF to HF layout, so this
    /// is false for everything they produce; the model supports both.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rope_interleaved: bool,
}

impl ModelConfig {
    pub fn arch(&self) -> Result<Arch> {
        match self.model_type.as_str() {
            "llama" | "mistral" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            other => Err(EngineError::Config(format!(
                "unsupported model_type {other:?} (supported: llama, qwen2)"
            ))),
        }
    }
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    /// Whether q/k/v projections carry a bias.
    pub fn qkv_bias(&self) -> bool {
        match self.arch() {
            Ok(Arch::Qwen2) => true,
            _ => self.attention_bias.unwrap_or(false),
        }
    }
    /// Whether the output projection carries a bias.
    pub fn o_bias(&self) -> bool {
        match self.arch() {
            Ok(Arch::Qwen2) => false,
            _ => self.attention_bias.unwrap_or(false),
        }
    }
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(|t| t.to_vec())
            .unwrap_or_default()
    }

    /// Check the numbers fit together; returns a message naming the offending keys.
    pub fn validate(&self) -> Result<()> {
        self.arch()?;
        let bad = |m: String| Err(EngineError::Config(m));
        if self.hidden_act != "silu" {
            return bad(format!(
                "unsupported hidden_act {:?} (only silu)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0 || self.num_kv_heads() == 0 {
            return bad("num_attention_heads and num_key_value_heads must be > 0".into());
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.num_kv_heads()
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size ({}) is not divisible by num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim ({}) must be even for rotary embedding",
                self.head_dim()
            ));
        }
        if let Some(rs) = &self.rope_scaling {
            let kind = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            if kind != "default" && kind != "llama3" {
                return bad(format!(
                    "unsupported rope_scaling type {kind:?} (supported: default, llama3)"
                ));
            }
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be > 0".into());
        }
        Ok(())
    }

    /// Parse `config.json` text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let cfg: ModelConfig = serde_json::from_str(text)
            .map_err(|e| EngineError::Config(format!("{origin}: {e}")))?;
        cfg.validate()
            .map_err(|e| EngineError::Config(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    /// Named shapes for benchmarks and tests (random weights).
    pub fn named_shape(name: &str) -> Option<Self> {
        let base = |vocab, hidden, inter, layers, heads, kv, tie, mt: &str, theta| ModelConfig {
            architectures: vec![],
            model_type: mt.to_string(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: theta,
            max_position_embeddings: 4096,
            tie_word_embeddings: tie,
            attention_bias: None,
            hidden_act: "silu".into(),
            bos_token_id: None,
            eos_token_id: None,
            rope_scaling: None,
            torch_dtype: None,
            rope_interleaved: false,
        };
        match name {
            "qwen2.5-0.5b" => Some(base(
                151_936,
                896,
                4864,
                24,
                14,
                2,
                true,
                "qwen2",
                1_000_000.0,
            )),
            "smollm2-135m" => Some(base(49_152, 576, 1536, 30, 9, 3, true, "llama", 100_000.0)),
            "tiny" => Some(base(256, 64, 128, 2, 4, 2, true, "llama", 10_000.0)),
            _ => None,
        }
    }
}

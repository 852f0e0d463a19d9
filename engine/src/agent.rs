//! The agent: a model with its tokenizer and chat template, loaded from `[model]`
//! ([`Agent::load`]), and its `planner` and `executor` LoRA adapters
//! ([`Agent::load_adapters`]). Every command that needs a model (train, sft, eval, debug,
//! pretrain's evaluation) goes through here.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::{LocalBackend, RolloutBackend, SampleRequest};
use crate::chat::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::load::embedded;
use crate::model::{LoraAdapter, Model};
use crate::sampling::Completion;
use crate::tokenizer::Tokenizer;

/// `[model]` of a configuration: which model, where, in which dtypes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// HF folder or .gguf file; empty = the embedded default model.
    pub path: String,
    /// Compute dtype: f32 (CPU default), bf16/f16 (CUDA).
    pub dtype: String,
    /// cpu or cuda.
    pub device: String,
    /// Storage dtype of the frozen base matrices on the CPU: "" = the compute dtype; "f16"
    /// halves their memory and the bytes read per decode step (weights rounded to f16 once,
    /// arithmetic in the compute dtype).
    pub base_dtype: String,
}

impl ModelSection {
    /// `path` on the CPU in f32, base weights stored as computed (how `eval` and the debugger
    /// load a model unless told otherwise).
    pub fn cpu_f32(path: &str) -> ModelSection {
        ModelSection {
            path: path.to_string(),
            dtype: "f32".into(),
            device: "cpu".into(),
            base_dtype: String::new(),
        }
    }
}

/// The two adapter roles, in the order they are loaded and saved.
pub const ROLES: [&str; 2] = ["planner", "executor"];

/// The model with its tokenizer and chat template.
pub struct Agent {
    pub model: Model,
    pub tok: Tokenizer,
    pub template: ChatTemplate,
    /// Where the model came from (for run info and PEFT's base_model_name_or_path).
    pub model_name: String,
    /// Where [`Agent::sample`] samples when not in this process (`[backend]`; `None`: here).
    pub remote: Option<std::sync::Arc<dyn RolloutBackend>>,
}

impl Agent {
    /// Load the model of `[model]`: `path` (an HF folder or `.gguf` file; `""` or `"embedded"`
    /// is the embedded default model) on `device` in `dtype`, with the frozen base matrices
    /// stored in `base_dtype` when it is set. No adapters yet.
    pub fn load(section: &ModelSection) -> Result<Agent> {
        let device = crate::device::parse_device(&section.device)
            .map_err(|e| EngineError::Config(format!("[model].device: {e}")))?;
        let dtype = crate::device::parse_dtype(&section.dtype).ok_or_else(|| {
            EngineError::Config(format!("unknown [model].dtype {:?}", section.dtype))
        })?;
        let name = if embedded::is_embedded(&section.path) {
            embedded::EMBEDDED.to_string()
        } else {
            section.path.clone()
        };
        let lm = embedded::load_spec(&name)?;
        let tok = lm.require_tokenizer()?.clone();
        let template = lm.chat_template_or_fallback()?;
        let mut model = Model::new(&lm.config, &lm.weights, dtype, &device)?;
        drop(lm);
        if !section.base_dtype.is_empty() {
            let bd = crate::device::parse_dtype(&section.base_dtype).ok_or_else(|| {
                EngineError::Config(format!(
                    "unknown [model].base_dtype {:?}",
                    section.base_dtype
                ))
            })?;
            model.store_base_weights(bd)?;
        }
        Ok(Agent {
            model,
            tok,
            template,
            model_name: name,
            remote: None,
        })
    }

    /// Load the `planner` and `executor` PEFT adapters found in `dir` (a checkpoint, a
    /// `cahl-tui sft` output, any folder with those sub-folders), replacing adapters of the
    /// same name. With `require_both`, a missing one is an error; otherwise those present are
    /// loaded and none at all is an error. Returns the roles loaded.
    pub fn load_adapters(&mut self, dir: &Path, require_both: bool) -> Result<Vec<&'static str>> {
        let mut loaded = Vec::new();
        for name in ROLES {
            let sub = dir.join(name);
            if !require_both && !sub.exists() {
                continue;
            }
            let a = LoraAdapter::load_peft(
                name,
                &sub,
                self.model.config(),
                self.model.dtype(),
                self.model.device(),
            )
            .map_err(|e| EngineError::load(&sub, format!("loading the {name} adapter: {e}")))?;
            self.model.insert_adapter(a);
            loaded.push(name);
        }
        if loaded.is_empty() {
            return Err(EngineError::load(
                dir,
                "holds neither a planner/ nor an executor/ adapter",
            ));
        }
        Ok(loaded)
    }

    /// Sample a group through the rollout backend: the remote one when set, else this
    /// process's model ([`LocalBackend`]).
    pub fn sample(&self, req: &SampleRequest<'_>) -> Result<Vec<Completion>> {
        // Inside a wave (crate::wave::run) the request joins the wave's batch.
        if let Some(answer) = crate::wave::sample_in_wave(self, req) {
            return answer;
        }
        match &self.remote {
            Some(b) => b.sample(req),
            None => LocalBackend {
                model: &self.model,
                tok: &self.tok,
            }
            .sample(req),
        }
    }

    /// Token ids of a system + user conversation with the generation prompt appended.
    pub fn prompt_ids(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        let text =
            self.template
                .render(&[Message::system(system), Message::user(user)], None, true)?;
        self.tok.encode(&text, false)
    }
}

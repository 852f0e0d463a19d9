//! One-off generation (`cahl-tui generate`): a model (HF folder, `.gguf` file or the embedded
//! default) with an optional PEFT adapter, a prompt (raw, or wrapped as a user message in the
//! chat template), and a group of completions sampled from it.
use std::path::Path;

use crate::agent::Agent;
use crate::chat::{ChatTemplate, Message};
use crate::error::Result;
use crate::model::{AdapterRef, LoraAdapter, Model};
use crate::sampling::{sample_group, Completion, SamplingParams};
use crate::tokenizer::Tokenizer;
use crate::train::config::ModelSection;

/// Name of the adapter [`Generator::load`] inserts from a PEFT folder.
const ADAPTER: &str = "cli";

/// A model ready to sample from, with its tokenizer, chat template and optional adapter.
pub struct Generator {
    pub model: Model,
    pub tok: Tokenizer,
    /// The model's chat template, or the ChatML fallback when it ships none
    /// ([`ChatTemplate::is_fallback`]).
    pub template: ChatTemplate,
    adapter: AdapterRef<'static>,
}

impl Generator {
    /// Load `spec` (a path; empty or `embedded`: the embedded default model) on `device`
    /// (`cpu`, `cuda`, `cuda:N`) in the compute dtype `dtype`, with the PEFT adapter folder
    /// `adapter` (adapter_config.json + adapter_model.safetensors) active when given.
    pub fn load(spec: &str, adapter: Option<&Path>, device: &str, dtype: &str) -> Result<Self> {
        let Agent {
            mut model,
            tok,
            template,
            ..
        } = Agent::load(&ModelSection {
            path: spec.to_string(),
            dtype: dtype.to_string(),
            device: device.to_string(),
            base_dtype: String::new(),
        })?;
        let (dtype, device) = (model.dtype(), model.device().clone());
        let adapter = match adapter {
            Some(dir) => {
                let a = LoraAdapter::load_peft(ADAPTER, dir, model.config(), dtype, &device)?;
                model.insert_adapter(a);
                Some(ADAPTER)
            }
            None => None,
        };
        Ok(Generator {
            model,
            tok,
            template,
            adapter,
        })
    }

    /// Token ids of `prompt`: with `chat`, the conversation (`system` if given, then `prompt`
    /// as the user message) rendered through the chat template with the generation prompt;
    /// otherwise the raw text with the tokenizer's special tokens (BOS).
    pub fn prompt_ids(&self, prompt: &str, system: Option<&str>, chat: bool) -> Result<Vec<u32>> {
        let text = if chat {
            let mut msgs = Vec::new();
            if let Some(s) = system {
                msgs.push(Message::system(s.to_string()));
            }
            msgs.push(Message::user(prompt.to_string()));
            self.template.render(&msgs, None, true)?
        } else {
            prompt.to_string()
        };
        self.tok.encode(&text, !chat)
    }

    /// `n` completions (at least one) of `ids`, sampled as one group sharing the prompt's
    /// cache (RNG streams 0..n).
    pub fn sample(
        &self,
        ids: &[u32],
        n: usize,
        params: &SamplingParams,
    ) -> Result<Vec<Completion>> {
        sample_group(
            &self.model,
            self.adapter,
            ids,
            n.max(1),
            0,
            params,
            &self.tok,
        )
    }
}

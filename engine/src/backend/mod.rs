//! Where rollouts are sampled: one trait, [`RolloutBackend`], with two implementations chosen
//! by `[backend].kind`:
//!
//! - `local` ([`LocalBackend`]): this process's model ([`crate::sampling::sample_group_with`]).
//! - `openai` ([`openai::OpenAiBackend`]): one or more OpenAI-compatible servers
//!   (`cahl-tui serve`, vLLM with runtime LoRA updating), requests spread across them. After
//!   every update the trainer writes both adapters as PEFT folders and has every server load
//!   them under versioned names (`planner@12-T`, `executor@12-T`, T a tag of the process); completions come back with their
//!   token ids and the sampling policy's log-probs, which become GRPO's old log-probs.
//!
//! The trainer keeps the gradient step: it holds the same base model and the adapters' weights.
//! [`serve`] is the server side, so the `openai` backend is tested end to end here.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::model::{AdapterRef, Model, Prefix};
use crate::sampling::{sample_group_with, Completion, SamplingParams};
use crate::tokenizer::Tokenizer;

pub mod openai;
pub mod serve;

/// `[backend]` of a training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// `local` or `openai`.
    pub kind: BackendKind,
    /// Base URLs of the servers (`http://host:port` or `http://host:port/v1`), `openai` only.
    pub endpoints: Vec<String>,
    /// Seconds one request may take (a whole group's completions).
    pub timeout_s: f64,
    /// Retries of a failed request (connection refused or reset, timeout, 5xx, 429) before
    /// the step fails, waiting `backoff_s`, then twice that, and so on.
    pub retries: u32,
    pub backoff_s: f64,
    /// Folder the trainer writes each policy version's PEFT adapters into; the servers load
    /// them from there, so it must be readable by them under the same path. "" = the
    /// session's `served/` folder.
    pub adapter_dir: String,
    /// Environment variable holding a bearer token sent to the servers ("" = none).
    pub api_key_env: String,
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            kind: BackendKind::Local,
            endpoints: Vec::new(),
            timeout_s: 600.0,
            retries: 3,
            backoff_s: 1.0,
            adapter_dir: String::new(),
            api_key_env: String::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Local,
    #[serde(rename = "openai")]
    OpenAi,
}

impl BackendSection {
    /// Check the section: an `openai` backend needs at least one `http://` endpoint.
    pub fn validate(&self) -> Result<()> {
        if self.kind == BackendKind::Local {
            return Ok(());
        }
        if self.endpoints.is_empty() {
            return Err(EngineError::Config(
                "[backend] kind = \"openai\" needs at least one URL in [backend].endpoints (or --endpoint)".into(),
            ));
        }
        for e in &self.endpoints {
            openai::base_url(e)?;
        }
        if !(self.timeout_s > 0.0 && self.timeout_s <= 86_400.0) {
            return Err(EngineError::Config(format!(
                "[backend].timeout_s must be in (0, 86400] seconds (got {})",
                self.timeout_s
            )));
        }
        if !(self.backoff_s >= 0.0 && self.backoff_s <= 600.0) {
            return Err(EngineError::Config(format!(
                "[backend].backoff_s must be in [0, 600] seconds (got {})",
                self.backoff_s
            )));
        }
        if self.retries > 16 {
            return Err(EngineError::Config(format!(
                "[backend].retries must be at most 16 (got {})",
                self.retries
            )));
        }
        Ok(())
    }

    /// Where adapters are written for the servers: `adapter_dir`, or `session/served`.
    pub fn adapter_dir_for(&self, session: &std::path::Path) -> PathBuf {
        if self.adapter_dir.is_empty() {
            session.join("served")
        } else {
            PathBuf::from(&self.adapter_dir)
        }
    }
}

/// One group of completions to sample: `g` rows of `prompt` under `adapter`, row `i` drawing
/// from RNG stream `first_stream + i` of `params.seed`.
#[derive(Debug, Clone, Copy)]
pub struct SampleRequest<'a> {
    pub adapter: AdapterRef<'a>,
    /// A cached shared prefix of the prompt (local only; servers cache on their own).
    pub prefix: Option<&'a Prefix>,
    pub prompt: &'a [u32],
    pub g: usize,
    pub first_stream: u64,
    pub params: &'a SamplingParams,
}

/// A place where rollouts are sampled.
pub trait RolloutBackend: Send + Sync {
    /// One line for logs and the run's info, e.g. `openai (2 endpoints: …)`.
    fn describe(&self) -> String;
    /// The group's completions in row order, with token ids and the sampling policy's
    /// per-token log-probs.
    fn sample(&self, req: &SampleRequest<'_>) -> Result<Vec<Completion>>;
    /// The policy version the backend samples with (`None`: the trainer's live weights).
    fn policy_version(&self) -> Option<u64> {
        None
    }
    /// Make the adapters of `model` (after `version` updates) the ones sampled from.
    fn publish(&self, _version: u64, _model: &Model, _base_model: &str) -> Result<()> {
        Ok(())
    }
}

/// The in-process backend: the trainer's own model and weights.
pub struct LocalBackend<'a> {
    pub model: &'a Model,
    pub tok: &'a Tokenizer,
}

impl RolloutBackend for LocalBackend<'_> {
    fn describe(&self) -> String {
        "local".into()
    }

    fn sample(&self, req: &SampleRequest<'_>) -> Result<Vec<Completion>> {
        sample_group_with(
            self.model,
            req.adapter,
            req.prefix,
            req.prompt,
            req.g,
            req.first_stream,
            req.params,
            self.tok,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openai_section_is_checked_naming_the_key() {
        let local = BackendSection::default();
        assert!(local.validate().is_ok());
        let ok = BackendSection {
            kind: BackendKind::OpenAi,
            endpoints: vec!["http://127.0.0.1:8000".into()],
            ..BackendSection::default()
        };
        assert!(ok.validate().is_ok());
        let cases = [
            (
                BackendSection {
                    endpoints: vec![],
                    ..ok.clone()
                },
                "needs at least one URL",
            ),
            (
                BackendSection {
                    timeout_s: 0.0,
                    ..ok.clone()
                },
                "timeout_s",
            ),
            (
                BackendSection {
                    timeout_s: f64::NAN,
                    ..ok.clone()
                },
                "timeout_s",
            ),
            (
                BackendSection {
                    timeout_s: 1e300,
                    ..ok.clone()
                },
                "timeout_s",
            ),
            (
                BackendSection {
                    backoff_s: -1.0,
                    ..ok.clone()
                },
                "backoff_s",
            ),
            (
                BackendSection {
                    retries: 1000,
                    ..ok.clone()
                },
                "retries",
            ),
            (
                BackendSection {
                    endpoints: vec!["localhost:80".into()],
                    ..ok.clone()
                },
                "expected an http://host:port URL",
            ),
        ];
        for (s, says) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        assert_eq!(
            ok.adapter_dir_for(std::path::Path::new("/s")),
            PathBuf::from("/s/served")
        );
    }
}

//! Full-parameter pretraining of the embedded default model (`cahl-tui pretrain`): its config,
//! the recipe itself, dev evaluation of a snapshot, and the HF folder it writes.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::bpe::{train_tokenizer, TINY_CHAT_TEMPLATE};
use super::data::{builtin_gold_texts, merge_some_plans, weight_roles, Role};
use super::examples::{example_stats, tokenize_examples};
use super::run::{sft_run, SftProgress};
use crate::agent::Agent;
use crate::chat::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::model::{Model, ModelConfig};
use crate::optim::AdamWConfig;
use crate::tokenizer::Tokenizer;
use crate::train::config::ModelSection;
use crate::train::{quick_eval, Mode, QuickEval, TrainConfig};
use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
use crate::worlds::{Split, Task};
use cahl_sessions::fsutil::{atomic_write, atomic_write_with};

/// Shape and recipe of `cahl-tui pretrain`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainConfig {
    pub seed: u64,
    /// Train-split tasks to generate.
    pub tasks: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step (one role per step).
    pub batch: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Stop early after this many minutes (0 = no limit); the schedule still assumes `steps`.
    pub max_minutes: f64,
    /// Greedy success on this many dev tasks every `eval_every` steps (0 = never).
    pub eval_every: usize,
    pub eval_tasks: usize,
    /// Stored dtype of the saved weights: f16 keeps the model under 10 MB.
    pub save_dtype: String,
    /// Continue from this HF folder (an earlier `pretrain` output: its tokenizer, template and
    /// weights) instead of starting from scratch; the shape fields are then ignored.
    pub init: Option<String>,
    /// Which conversations to train on, with repeats as weights: `[planner, planner, executor,
    /// flat]` trains on every role and shows each planner conversation twice per epoch. Empty:
    /// every role once.
    pub roles: Vec<Role>,
    /// Fraction of multi-step tasks whose planner demonstration merges the last two sub-tasks
    /// into one (imperfect demonstrations; the executor is only ever shown single-call
    /// sub-tasks). 0 = gold plans only.
    pub merged_plans: f64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            seed: 0,
            tasks: 1500,
            vocab_size: 2048,
            hidden_size: 192,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            intermediate_size: 512,
            steps: 900,
            batch: 8,
            lr: 2e-3,
            warmup: 50,
            weight_decay: 0.01,
            max_minutes: 0.0,
            eval_every: 150,
            eval_tasks: 12,
            save_dtype: "f16".into(),
            init: None,
            roles: Vec::new(),
            merged_plans: 0.0,
        }
    }
}

impl PretrainConfig {
    /// The model config for a tokenizer of `vocab` tokens.
    pub fn model_config(&self, vocab: usize) -> Result<ModelConfig> {
        let json = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": true,
            "hidden_act": "silu",
            "torch_dtype": self.save_dtype_name(),
        });
        ModelConfig::from_json_str(&json.to_string(), "pretrain config")
    }

    fn save_dtype_name(&self) -> &'static str {
        match self.save_dtype.as_str() {
            "f32" | "float32" => "float32",
            "bf16" | "bfloat16" => "bfloat16",
            _ => "float16",
        }
    }
}

/// A detached inference copy of a model whose base is being trained.
pub fn snapshot_model(model: &Model) -> Result<Model> {
    let w: HashMap<String, Tensor> = model
        .base_weights()
        .into_iter()
        .map(|(n, t)| (n, t.detach()))
        .collect();
    Model::new(model.config(), &w, model.dtype(), model.device())
}

/// Write an HF model folder: `config.json`, `model.safetensors` (weights in `dtype`),
/// `tokenizer.json`, `tokenizer_config.json` (chat template, EOS). Each file is written to a
/// temp name, synced and renamed.
pub fn save_hf_folder(dir: &Path, model: &Model, tokenizer_json: &str, dtype: DType) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut cfg_json =
        serde_json::to_value(model.config()).map_err(|source| EngineError::JsonIn {
            what: "config",
            source,
        })?;
    if let Some(o) = cfg_json.as_object_mut() {
        o.insert(
            "torch_dtype".into(),
            match dtype {
                DType::F16 => "float16",
                DType::BF16 => "bfloat16",
                _ => "float32",
            }
            .into(),
        );
    }
    atomic_write(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&cfg_json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (n, t) in model.base_weights() {
        tensors.push((n, t.detach().to_dtype(dtype)?.to_device(&Device::Cpu)?));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
    atomic_write_with(&dir.join("model.safetensors"), |tmp| {
        Ok::<_, EngineError>(candle_core::safetensors::save(&tensors, tmp)?)
    })?;
    atomic_write(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let tc = serde_json::json!({
        "chat_template": TINY_CHAT_TEMPLATE,
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    atomic_write(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tc)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

/// What `pretrain` produced.
#[derive(Debug, Clone, Serialize)]
pub struct PretrainReport {
    pub params: usize,
    pub vocab: usize,
    pub examples: usize,
    /// Per role: (examples, mean prompt tokens, mean completion tokens).
    pub example_stats: Vec<(Role, usize, f64, f64)>,
    pub steps_done: usize,
    pub final_loss: f64,
    pub elapsed_s: f64,
    /// Greedy success on the dev tasks at the end: hierarchical (planner + executor) and flat.
    pub dev_hierarchical: QuickEval,
    pub dev_flat: QuickEval,
    pub bytes_on_disk: u64,
    /// Planner demonstrations written as coarse (merged) plans (`merged_plans`).
    pub merged_plans: usize,
}

/// Greedy dev success of a (snapshot of a) base model with fresh adapters, hierarchical and
/// flat.
pub fn eval_base(
    model: &Model,
    tok: &Tokenizer,
    template: &ChatTemplate,
    tasks: &[Task],
) -> Result<(QuickEval, QuickEval)> {
    let mut m = snapshot_model(model)?;
    let lcfg = crate::model::LoraConfig::default();
    m.add_adapter("planner", &lcfg, 0)?;
    m.add_adapter("executor", &lcfg, 0)?;
    let agent = Agent {
        model: m,
        tok: tok.clone(),
        template: template.clone(),
        model_name: "pretrain".into(),
        remote: None,
    };
    let world = BuiltinWorld::new();
    let mut cfg = TrainConfig::default();
    let h = quick_eval(&agent, &world, tasks, &cfg)?;
    cfg.mode = Mode::Flat;
    let f = quick_eval(&agent, &world, tasks, &cfg)?;
    Ok((h, f))
}

/// Build the embedded default model from scratch: train the tokenizer on the gold
/// conversations of `cfg.tasks` train-split tasks, initialise a small Llama, train every
/// weight on those conversations, and write an HF folder to `out`. `on_progress` sees every
/// step (and the dev evaluation every `eval_every` steps).
pub fn pretrain(
    cfg: &PretrainConfig,
    out: &Path,
    mut on_progress: impl FnMut(&SftProgress),
) -> Result<PretrainReport> {
    crate::model::ops::init_cpu_float_mode();
    let (tasks, mut texts) = builtin_gold_texts(cfg.tasks, cfg.seed)?;
    let merged = merge_some_plans(&tasks, &mut texts, cfg.merged_plans, cfg.seed);
    if merged > 0 {
        tracing::info!("{merged} of {} planner demonstrations merged", tasks.len());
    }
    let texts = weight_roles(texts, &cfg.roles);
    let (tok, tok_json, template, mut model) = match &cfg.init {
        Some(dir) => {
            let agent = Agent::load(&ModelSection::cpu_f32(dir))?;
            let p = Path::new(dir).join("tokenizer.json");
            let tok_json = std::fs::read_to_string(&p).map_err(|e| EngineError::Io {
                path: p.clone(),
                source: e,
            })?;
            (agent.tok, tok_json, agent.template, agent.model)
        }
        None => {
            let template = ChatTemplate::new(TINY_CHAT_TEMPLATE, None, Some("<|im_end|>"))?;
            let corpus: Vec<String> = texts
                .iter()
                .map(|g| {
                    template.render(
                        &[
                            Message::system(&g.system),
                            Message::user(&g.user),
                            Message::new("assistant", &g.completion),
                        ],
                        None,
                        false,
                    )
                })
                .collect::<Result<_>>()?;
            let hf_tok = train_tokenizer(&corpus, cfg.vocab_size)?;
            let tok_json = hf_tok
                .to_string(false)
                .map_err(|source| EngineError::HfTokenizer {
                    what: "tokenizer",
                    source,
                })?;
            let mut tok = Tokenizer::from_hf(hf_tok, None, Some("<|im_end|>".into()), &[]);
            crate::load::add_template_eos(&mut tok, &template);
            let mcfg = cfg.model_config(tok.vocab_size())?;
            let w = Model::random_weights(&mcfg, cfg.seed)?;
            let model = Model::new(&mcfg, &w, DType::F32, &Device::Cpu)?;
            (tok, tok_json, template, model)
        }
    };
    let examples = tokenize_examples(&texts, &tok, &template, "<|im_end|>")?;
    for (r, n, p, c) in example_stats(&examples) {
        tracing::info!(
            "{}: {n} examples, prompt {p:.0} tokens, completion {c:.0} tokens",
            r.name()
        );
    }
    let named = model.make_base_trainable()?;
    let params = model.num_base_params();
    let dev_tasks = generate_tasks(Split::Dev, cfg.eval_tasks.max(1), cfg.seed)?;
    let opt = AdamWConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        beta2: 0.98,
        ..Default::default()
    };
    let save_dtype = crate::device::parse_dtype(&cfg.save_dtype)
        .ok_or_else(|| EngineError::UnknownDtype(cfg.save_dtype.clone()))?;
    let t0 = Instant::now();
    let log = sft_run(
        &model,
        None,
        named,
        &examples,
        opt,
        cfg.steps,
        cfg.batch,
        cfg.warmup,
        cfg.max_minutes,
        cfg.seed,
        |m, p| {
            let mut p = p.clone();
            if cfg.eval_every > 0 && p.step % cfg.eval_every == 0 && p.step < cfg.steps {
                let (h, _) = eval_base(m, &tok, &template, &dev_tasks)?;
                p.dev_success = Some(h.success_rate());
                // A usable model survives an interrupted run.
                save_hf_folder(out, m, &tok_json, save_dtype)?;
            }
            on_progress(&p);
            Ok(p.dev_success)
        },
    )?;
    let (dev_h, dev_f) = eval_base(&model, &tok, &template, &dev_tasks)?;
    save_hf_folder(out, &model, &tok_json, save_dtype)?;
    let bytes_on_disk = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    .iter()
    .filter_map(|f| std::fs::metadata(out.join(f)).ok())
    .map(|m| m.len())
    .sum();
    Ok(PretrainReport {
        params,
        vocab: tok.vocab_size(),
        examples: examples.len(),
        example_stats: example_stats(&examples),
        steps_done: log.len(),
        final_loss: log.last().map(|p| p.loss).unwrap_or(f64::NAN),
        elapsed_s: t0.elapsed().as_secs_f64(),
        dev_hierarchical: dev_h,
        dev_flat: dev_f,
        bytes_on_disk,
        merged_plans: merged,
    })
}

/// Write the recipe of a pretraining run next to the model it made: `out/pretrain.json` with
/// the config and the report. Returns its path.
pub fn write_recipe(out: &Path, cfg: &PretrainConfig, report: &PretrainReport) -> Result<PathBuf> {
    let recipe = serde_json::json!({ "config": cfg, "report": report });
    let text = serde_json::to_string_pretty(&recipe).map_err(|source| EngineError::JsonIn {
        what: "pretrain recipe",
        source,
    })?;
    let path = out.join("pretrain.json");
    atomic_write(&path, text.as_bytes())?;
    Ok(path)
}

//! Supervised training on gold trajectories of the built-in world: the recipe behind the
//! embedded default model (`cahl-tui pretrain`) and the LoRA warm start (`cahl-tui sft`).
//!
//! Data: for each train-split task, the planner conversation (tools + request -> gold plan),
//! one executor conversation per gold sub-task (plan, history of gold calls with the world's
//! real observations -> the gold call), and the flat baseline's turns (history -> next gold
//! call, then a final `<response>`). Prompts are exactly the ones rollouts use
//! ([`crate::train::prompts`]), rendered through the chat template.
//!
//! Loss: mean cross-entropy over completion tokens (prompt tokens are context only). A batch
//! holds conversations of one role, whose rendered prompts share the long system prompt: the
//! common token prefix runs once and its keys/values are shared by the batch
//! ([`crate::grpo::completion_logprobs`]), which cuts the work several-fold.
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::chat::{ChatTemplate, Message};
use crate::error::{EngineError, Result};
use crate::grpo::completion_logprobs;
use crate::model::{AdapterRef, Model, ModelConfig};
use crate::optim::{AdamW, AdamWConfig, GradAccum};
use crate::tokenizer::Tokenizer;
use crate::train::prompts::{self, HistoryItem};
use crate::train::{quick_eval, Agent, Mode, QuickEval, TrainConfig};
use crate::worlds::builtin::{generate_tasks, render_plan, BuiltinWorld};
use crate::worlds::{Split, Task, World};

/// The ChatML template of the embedded model (system / user / assistant turns; tools are
/// described in the system prompt by the rollout prompts).
pub const TINY_CHAT_TEMPLATE: &str = "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/// Special tokens of the embedded tokenizer.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Which conversation an example comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Planner,
    Executor,
    Flat,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Planner, Role::Executor, Role::Flat];
    pub fn name(self) -> &'static str {
        match self {
            Role::Planner => "planner",
            Role::Executor => "executor",
            Role::Flat => "flat",
        }
    }
}

/// One gold conversation as text.
#[derive(Debug, Clone)]
pub struct GoldText {
    pub role: Role,
    pub system: String,
    pub user: String,
    /// The assistant's answer (the rollout parsers' format); `<|im_end|>` is appended when
    /// tokenized.
    pub completion: String,
}

/// The gold planner answer for a task.
pub fn gold_plan_text(task: &Task) -> String {
    plan_text(task, &task.gold_plan)
}

/// A planner answer for `task` with the sub-tasks `plan` (the `<think>` line names the gold
/// calls).
pub fn plan_text(task: &Task, plan: &[String]) -> String {
    let names: Vec<&str> = task.gold_calls.iter().map(|c| c.name.as_str()).collect();
    let n = task.gold_plan.len();
    format!(
        "<think>{n} step{}: {}.</think>\n<plan>\n{}\n</plan>",
        if n == 1 { "" } else { "s" },
        names.join(", "),
        render_plan(plan)
    )
}

/// The gold plan with its last two sub-tasks written as one ("A, then B"): the coarse plan of
/// an imperfect demonstration. `None` for single-step plans.
pub fn merged_plan(plan: &[String]) -> Option<Vec<String>> {
    let n = plan.len();
    if n < 2 {
        return None;
    }
    let mut out = plan[..n - 2].to_vec();
    out.push(format!("{}, then {}", plan[n - 2], plan[n - 1]));
    Some(out)
}

/// Replace the planner answer of a `merged` fraction of the multi-step tasks with a coarse
/// plan ([`merged_plan`]), chosen deterministically from `seed`. `texts` holds the
/// conversations of `tasks` in order, each task's planner conversation first (as
/// [`builtin_gold_texts`] returns them). Returns how many plans were merged.
pub fn merge_some_plans(tasks: &[Task], texts: &mut [GoldText], merged: f64, seed: u64) -> usize {
    if merged <= 0.0 {
        return 0;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_7267_6564);
    let mut planner = texts.iter_mut().filter(|g| g.role == Role::Planner);
    let mut count = 0;
    for t in tasks {
        let Some(g) = planner.next() else { break };
        let draw: f64 = rng.random();
        if let Some(plan) = merged_plan(&t.gold_plan) {
            if draw < merged {
                g.completion = plan_text(t, &plan);
                count += 1;
            }
        }
    }
    count
}

/// The gold executor answer for one call.
pub fn gold_call_text(call: &crate::parse::ToolCall) -> String {
    format!(
        "<think>Call {}.</think>\n<tool_call>\n{}\n</tool_call>",
        call.name,
        call.to_toolrl_json()
    )
}

/// The flat baseline's final answer once every call is made.
pub const FLAT_DONE: &str = "<think>All steps are done.</think>\n<response>Done.</response>";

/// Gold conversations of one task (planner, executor per sub-task, flat per turn). Gold calls
/// are executed in `world` for the observations the later prompts show.
pub fn gold_texts(task: &Task, world: &mut dyn World) -> Result<Vec<GoldText>> {
    let err = |e: crate::worlds::WorldError| EngineError::Other(format!("task {}: {e}", task.id));
    let tools = if task.tools.is_empty() {
        world.tools()
    } else {
        task.tools.clone()
    };
    let mut out = vec![GoldText {
        role: Role::Planner,
        system: prompts::planner_system(&tools),
        user: task.request.clone(),
        completion: gold_plan_text(task),
    }];
    world.reset(task).map_err(err)?;
    let esys = prompts::executor_system(&tools);
    let fsys = prompts::flat_system(&tools);
    let mut history: Vec<HistoryItem> = Vec::new();
    for (k, call) in task.gold_calls.iter().enumerate() {
        if k < task.gold_plan.len() {
            out.push(GoldText {
                role: Role::Executor,
                system: esys.clone(),
                user: prompts::executor_user(&task.request, &task.gold_plan, k, &history),
                completion: gold_call_text(call),
            });
        }
        out.push(GoldText {
            role: Role::Flat,
            system: fsys.clone(),
            user: prompts::flat_user(&task.request, &history),
            completion: gold_call_text(call),
        });
        let observation = world.execute(call);
        history.push(HistoryItem {
            call: call.clone(),
            observation,
        });
    }
    out.push(GoldText {
        role: Role::Flat,
        system: fsys,
        user: prompts::flat_user(&task.request, &history),
        completion: FLAT_DONE.to_string(),
    });
    Ok(out)
}

/// A tokenized example.
#[derive(Debug, Clone)]
pub struct SftExample {
    pub role: Role,
    pub prompt: Vec<u32>,
    /// Completion tokens, ending with the end-of-turn token.
    pub completion: Vec<u32>,
}

/// Tokenize gold conversations with `template` (generation prompt appended) and `tok`.
pub fn tokenize_examples(
    texts: &[GoldText],
    tok: &Tokenizer,
    template: &ChatTemplate,
    end_of_turn: &str,
) -> Result<Vec<SftExample>> {
    texts
        .iter()
        .map(|g| {
            let p = template.render(
                &[Message::system(&g.system), Message::user(&g.user)],
                None,
                true,
            )?;
            Ok(SftExample {
                role: g.role,
                prompt: tok.encode(&p, false)?,
                completion: tok.encode(&format!("{}{end_of_turn}", g.completion), false)?,
            })
        })
        .collect()
}

/// Train the embedded model's byte-level BPE tokenizer on `texts` (digits split one by one so
/// numbers copy digit by digit). Deterministic for the same texts.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::AddedToken;
    let tk = |e: tokenizers::Error| EngineError::Other(format!("tokenizer training: {e}"));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer: TrainerWrapper = trainer.into();
    let mut tok = tokenizers::Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.train(&mut trainer, texts.iter()).map_err(tk)?;
    Ok(tok)
}

/// Mean completion cross-entropy of a batch of examples (with graph when `train`), and the
/// number of completion tokens. The batch's common prompt prefix runs once.
pub fn sft_loss(
    model: &Model,
    adapter: AdapterRef,
    batch: &[&SftExample],
    train: bool,
) -> Result<(Tensor, usize)> {
    if batch.is_empty() {
        return Err(EngineError::Other("sft_loss: empty batch".into()));
    }
    let full: Vec<Vec<u32>> = batch
        .iter()
        .map(|e| [e.prompt.as_slice(), e.completion.as_slice()].concat())
        .collect();
    // Common prefix, leaving at least one prompt token out of it for every example (so each
    // sequence has a non-empty remainder).
    let mut p = batch.iter().map(|e| e.prompt.len()).min().unwrap_or(0);
    for f in &full[1..] {
        p = p.min(f.iter().zip(&full[0]).take_while(|(a, b)| a == b).count());
    }
    let p = p.saturating_sub(1).max(1);
    let prefix = &full[0][..p];
    let rests: Vec<&[u32]> = full.iter().map(|f| &f[p..]).collect();
    let (lp, mask) = completion_logprobs(model, adapter, prefix, &rests, 1.0, train)?;
    // Keep only completion positions.
    let (g, l) = lp.dims2()?;
    let mut cm = vec![0f32; g * l];
    let mut n = 0;
    for (i, e) in batch.iter().enumerate() {
        let start = e.prompt.len() - p;
        for j in start..start + e.completion.len() {
            cm[i * l + j] = 1.0;
            n += 1;
        }
    }
    let cm = Tensor::from_vec(cm, (g, l), lp.device())?.to_dtype(lp.dtype())?;
    let m = (mask * cm)?;
    let loss = ((lp * &m)?.sum_all()? / (-(n.max(1) as f64)))?;
    Ok((loss, n))
}

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

/// Progress of a supervised run, reported every step.
#[derive(Debug, Clone, Serialize)]
pub struct SftProgress {
    pub step: usize,
    pub steps: usize,
    pub role: Role,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub elapsed_s: f64,
    /// Greedy dev-task success rate when this step evaluated.
    pub dev_success: Option<f64>,
}

/// Cosine schedule with linear warm-up, down to 10% of the peak.
pub fn lr_at(step: usize, steps: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps.saturating_sub(warmup)).max(1) as f64;
    let c = 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos());
    peak * (0.1 + 0.9 * c)
}

/// The examples of `n` train-split tasks of the built-in world, and the tasks.
pub fn builtin_gold_texts(n: usize, seed: u64) -> Result<(Vec<Task>, Vec<GoldText>)> {
    let tasks =
        generate_tasks(Split::Train, n, seed).map_err(|e| EngineError::Other(e.to_string()))?;
    let mut world = BuiltinWorld::new();
    let mut texts = Vec::new();
    for t in &tasks {
        texts.extend(gold_texts(t, &mut world)?);
    }
    Ok((tasks, texts))
}

/// Batches of one role each, shuffled deterministically for `epoch`.
fn role_batches(examples: &[SftExample], batch: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut by_role: HashMap<Role, Vec<usize>> = HashMap::new();
    for (i, e) in examples.iter().enumerate() {
        by_role.entry(e.role).or_default().push(i);
    }
    let mut batches = Vec::new();
    for r in Role::ALL {
        let Some(idx) = by_role.get_mut(&r) else {
            continue;
        };
        idx.shuffle(rng);
        for c in idx.chunks(batch.max(1)) {
            batches.push(c.to_vec());
        }
    }
    batches.shuffle(rng);
    batches
}

/// One supervised run over `examples` updating `vars` (the base for pretraining, or an
/// adapter's variables with `adapter` set). `on_step` sees progress and may evaluate; it
/// returns the dev success it measured, if any. Non-finite losses skip the update.
#[allow(clippy::too_many_arguments)]
pub fn sft_run(
    model: &Model,
    adapter: AdapterRef,
    named: Vec<(String, Var)>,
    examples: &[SftExample],
    opt_cfg: AdamWConfig,
    steps: usize,
    batch: usize,
    warmup: usize,
    max_minutes: f64,
    seed: u64,
    mut on_step: impl FnMut(&Model, &SftProgress) -> Result<Option<f64>>,
) -> Result<Vec<SftProgress>> {
    if examples.is_empty() {
        return Err(EngineError::Other("no training examples".into()));
    }
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let peak = opt_cfg.lr;
    let mut opt = AdamW::new(named, opt_cfg)?;
    let mut accum = GradAccum::new(vars);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut queue: Vec<Vec<usize>> = Vec::new();
    let t0 = Instant::now();
    let mut log = Vec::new();
    for step in 0..steps {
        if max_minutes > 0.0 && t0.elapsed().as_secs_f64() > max_minutes * 60.0 {
            break;
        }
        if queue.is_empty() {
            queue = role_batches(examples, batch, &mut rng);
            queue.reverse();
        }
        let Some(b) = queue.pop() else { break };
        let refs: Vec<&SftExample> = b.iter().map(|&i| &examples[i]).collect();
        let (loss, n) = sft_loss(model, adapter, &refs, true)?;
        let lv = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let lr = lr_at(step, steps, warmup, peak);
        let mut gn = f64::NAN;
        if lv.is_finite() {
            let grads = loss.backward()?;
            accum.add(&grads)?;
            opt.set_lr(lr);
            let info = opt.step(accum.grads())?;
            gn = info.grad_norm;
            accum.clear();
        } else {
            tracing::warn!(step, "non-finite SFT loss; update skipped");
        }
        let mut p = SftProgress {
            step: step + 1,
            steps,
            role: refs[0].role,
            loss: lv,
            lr,
            grad_norm: gn,
            tokens: n,
            elapsed_s: t0.elapsed().as_secs_f64(),
            dev_success: None,
        };
        p.dev_success = on_step(model, &p)?;
        log.push(p);
    }
    Ok(log)
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
    let mut cfg_json = serde_json::to_value(model.config())
        .map_err(|e| EngineError::Other(format!("config: {e}")))?;
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
    crate::util::atomic_write(
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
    let tmp = dir.join("model.safetensors.tmp");
    candle_core::safetensors::save(
        &tensors.iter().cloned().collect::<HashMap<String, Tensor>>(),
        &tmp,
    )?;
    crate::util::fsync_rename(&tmp, &dir.join("model.safetensors"))?;
    crate::util::atomic_write(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let tc = serde_json::json!({
        "chat_template": TINY_CHAT_TEMPLATE,
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    crate::util::atomic_write(
        &dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tc)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

/// Per role: (examples, mean prompt tokens, mean completion tokens).
pub fn example_stats(examples: &[SftExample]) -> Vec<(Role, usize, f64, f64)> {
    Role::ALL
        .iter()
        .map(|&r| {
            let v: Vec<&SftExample> = examples.iter().filter(|e| e.role == r).collect();
            let n = v.len().max(1) as f64;
            let p = v.iter().map(|e| e.prompt.len()).sum::<usize>() as f64 / n;
            let c = v.iter().map(|e| e.completion.len()).sum::<usize>() as f64 / n;
            (r, v.len(), p, c)
        })
        .collect()
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
    };
    let world = BuiltinWorld::new();
    let mut cfg = TrainConfig::default();
    let h = quick_eval(&agent, &world, tasks, &cfg)?;
    cfg.mode = Mode::Flat;
    let f = quick_eval(&agent, &world, tasks, &cfg)?;
    Ok((h, f))
}

/// Keep the conversations of the roles in `roles`, each as often as its role is listed (empty:
/// all, once).
pub fn weight_roles(texts: Vec<GoldText>, roles: &[Role]) -> Vec<GoldText> {
    if roles.is_empty() {
        return texts;
    }
    let mut out = Vec::new();
    for r in Role::ALL {
        let n = roles.iter().filter(|x| **x == r).count();
        for _ in 0..n {
            out.extend(texts.iter().filter(|g| g.role == r).cloned());
        }
    }
    out
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
            let dir = Path::new(dir);
            let lm = crate::load::load_model(dir)?;
            let tok = lm.require_tokenizer()?.clone();
            let template = lm.chat_template_or_fallback()?;
            let p = dir.join("tokenizer.json");
            let tok_json = std::fs::read_to_string(&p).map_err(|e| EngineError::Io {
                path: p.clone(),
                source: e,
            })?;
            let model = Model::new(&lm.config, &lm.weights, DType::F32, &Device::Cpu)?;
            (tok, tok_json, template, model)
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
                .map_err(|e| EngineError::Other(format!("tokenizer: {e}")))?;
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
    let dev_tasks = generate_tasks(Split::Dev, cfg.eval_tasks.max(1), cfg.seed)
        .map_err(|e| EngineError::Other(e.to_string()))?;
    let opt = AdamWConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        beta2: 0.98,
        ..Default::default()
    };
    let save_dtype = crate::device::parse_dtype(&cfg.save_dtype)
        .ok_or_else(|| EngineError::Other(format!("unknown save dtype {:?}", cfg.save_dtype)))?;
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

/// Settings of `cahl-tui sft`: supervised warm start of the `planner` and `executor` adapters
/// on gold plans and gold calls (the base stays frozen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterSftConfig {
    /// Optimizer steps per adapter.
    pub steps: usize,
    pub batch: usize,
    /// Peak learning rate (cosine schedule with linear warm-up).
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    /// Wall-clock budget for both adapters together (0: none); each gets half.
    pub max_minutes: f64,
    pub seed: u64,
}

impl Default for AdapterSftConfig {
    fn default() -> Self {
        AdapterSftConfig {
            steps: 100,
            batch: 8,
            lr: 2e-3,
            warmup: 10,
            weight_decay: 0.0,
            max_minutes: 0.0,
            seed: 0,
        }
    }
}

/// One adapter's supervised run.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSftRole {
    pub adapter: String,
    pub examples: usize,
    pub steps_done: usize,
    /// Mean loss of the first and last 10 steps.
    pub first_loss: f64,
    pub final_loss: f64,
    pub elapsed_s: f64,
}

/// What `sft_adapters` did, with greedy held-out success before and after.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterSftReport {
    pub tasks: usize,
    pub roles: Vec<AdapterSftRole>,
    pub before: Option<QuickEval>,
    pub after: Option<QuickEval>,
}

fn mean_loss(log: &[SftProgress]) -> (f64, f64) {
    let m = |s: &[SftProgress]| {
        let v: Vec<f64> = s.iter().map(|p| p.loss).filter(|l| l.is_finite()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let k = log.len().min(10);
    (m(&log[..k]), m(&log[log.len() - k..]))
}

/// Supervised fine-tuning of the agent's `planner` adapter on the gold plans of `tasks` and of
/// its `executor` adapter on the gold calls (executor prompts with the gold sub-tasks and the
/// world's observations of earlier gold calls), the prompts being exactly the rollout's. The
/// agent must already have both adapters. `held_out` (may be empty) is evaluated greedily
/// before and after with `eval_cfg`.
pub fn sft_adapters(
    agent: &Agent,
    tasks: &[Task],
    world: &mut dyn World,
    held_out: &[Task],
    eval_cfg: &TrainConfig,
    cfg: &AdapterSftConfig,
    mut on_progress: impl FnMut(&str, &SftProgress),
) -> Result<AdapterSftReport> {
    crate::model::ops::init_cpu_float_mode();
    let mut texts = Vec::new();
    for t in tasks {
        texts.extend(gold_texts(t, world)?);
    }
    let eot = agent.template.eos_token().to_string();
    let examples = tokenize_examples(&texts, &agent.tok, &agent.template, &eot)?;
    let before = if held_out.is_empty() {
        None
    } else {
        Some(quick_eval(agent, world, held_out, eval_cfg)?)
    };
    let mut roles = Vec::new();
    let budget = if cfg.max_minutes > 0.0 {
        cfg.max_minutes / 2.0
    } else {
        0.0
    };
    for (name, role) in [("planner", Role::Planner), ("executor", Role::Executor)] {
        let ex: Vec<SftExample> = examples
            .iter()
            .filter(|e| e.role == role)
            .cloned()
            .collect();
        if ex.is_empty() {
            return Err(EngineError::Other(format!(
                "sft: no {name} examples (tasks need gold plans with one sub-task per gold call)"
            )));
        }
        let named: Vec<(String, Var)> = agent
            .model
            .adapter(name)?
            .named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let opt = AdamWConfig {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        };
        let t0 = Instant::now();
        let log = sft_run(
            &agent.model,
            Some(name),
            named,
            &ex,
            opt,
            cfg.steps,
            cfg.batch,
            cfg.warmup,
            budget,
            mix_seed_role(cfg.seed, role),
            |_, p| {
                on_progress(name, p);
                Ok(None)
            },
        )?;
        let (first_loss, final_loss) = if log.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            mean_loss(&log)
        };
        roles.push(AdapterSftRole {
            adapter: name.to_string(),
            examples: ex.len(),
            steps_done: log.len(),
            first_loss,
            final_loss,
            elapsed_s: t0.elapsed().as_secs_f64(),
        });
    }
    let after = if held_out.is_empty() {
        None
    } else {
        Some(quick_eval(agent, world, held_out, eval_cfg)?)
    };
    Ok(AdapterSftReport {
        tasks: tasks.len(),
        roles,
        before,
        after,
    })
}

fn mix_seed_role(seed: u64, role: Role) -> u64 {
    crate::train::mix_seed(&[seed, 31, role as u64])
}

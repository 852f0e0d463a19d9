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
//!
//! One file per concern:
//!
//! | file | what |
//! |---|---|
//! | `data.rs` | gold conversation texts, plan merging (imperfect demonstrations), role weights |
//! | `examples.rs` | tokenized examples, their statistics, one-role batches |
//! | `bpe.rs` | the embedded tokenizer's training and chat template |
//! | `loss.rs` | the SFT loss |
//! | `run.rs` | the one supervised loop [`sft_run`] and its learning-rate schedule |
//! | `pretrain.rs` | full-parameter pretraining of the embedded model, HF-folder saving, dev eval |
//! | `adapters.rs` | adapter SFT (the LoRA warm start) |
mod adapters;
mod bpe;
mod data;
mod examples;
mod loss;
mod pretrain;
mod run;

pub use adapters::{
    save_adapter_sft, sft_adapters, AdapterSftConfig, AdapterSftReport, AdapterSftRole,
};
pub use bpe::{train_tokenizer, SPECIAL_TOKENS, TINY_CHAT_TEMPLATE};
pub use data::{
    answer_text, builtin_gold_texts, gold_call_text, gold_plan_text, gold_texts, merge_some_plans,
    merged_plan, plan_text, weight_roles, GoldText, Role, FLAT_DONE,
};
pub use examples::{example_stats, tokenize_examples, SftExample};
pub use loss::sft_loss;
pub use pretrain::{
    eval_base, pretrain, save_hf_folder, snapshot_model, write_recipe, PretrainConfig,
    PretrainReport,
};
pub use run::{lr_at, micro_batches, sft_run, SftProgress, MICRO_TOKENS};

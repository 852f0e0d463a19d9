//! Joint GRPO training of planner and executor (CAHL) and its ablations.
//!
//! One file per concern: [`config`] (the TOML configuration), [`prompts`] (what each role is
//! asked), [`rollout`] (hierarchical and flat rollouts into GRPO groups), [`trainer`] (the
//! algorithm: [`Trainer::step`], and [`Trainer::update`] in `update.rs`), [`driver`] (the run
//! loop on its own thread: session writing, events, commands) and [`quick_eval`] (the greedy
//! held-out evaluation of `[eval]`).
pub mod config;
pub mod driver;
pub mod health;
pub mod ih_grpo;
pub mod prompts;
pub mod quick_eval;
pub mod rollout;
pub mod steptool;
pub mod trainer;
mod update;

pub use crate::agent::Agent;
pub use config::{BatchMode, Continue, EvalSection, Mode, TrainConfig};
pub use driver::{resume_session, run};
pub use quick_eval::{quick_eval, quick_eval_on, QuickEval};
pub use rollout::{
    execute_plan, mix_seed, rollout_task, rollout_task_with, shared_prompt_ids, Execution, Group,
    Policy, Prefixes, SideCounts, TaskRollout,
};
pub use trainer::{add_missing_adapters, worker_count, StepResult, Trainer};

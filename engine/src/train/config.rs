//! Training configuration (TOML). Unknown keys are rejected with the offending key named.
use serde::{Deserialize, Serialize};

use crate::grpo::GrpoConfig;
use crate::model::LoraConfig;
use crate::optim::AdamWConfig;
use crate::rewards::RewardConfig;
use crate::sampling::SamplingParams;

/// Training mode: CAHL and its ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Joint: both adapters update every step; the planner reward is execution-aware.
    Cahl,
    /// Only the executor updates.
    FrozenPlanner,
    /// Only the planner updates.
    FrozenExecutor,
    /// "Optimized separately": planner on parameter-level accuracy only, executor on gold sub-tasks.
    Separate,
    /// One adapter calls tools directly with ToolRL's reward (no planner).
    Flat,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "cahl" => Mode::Cahl,
            "frozen-planner" => Mode::FrozenPlanner,
            "frozen-executor" => Mode::FrozenExecutor,
            "separate" => Mode::Separate,
            "flat" => Mode::Flat,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Mode::Cahl => "cahl",
            Mode::FrozenPlanner => "frozen-planner",
            Mode::FrozenExecutor => "frozen-executor",
            Mode::Separate => "separate",
            Mode::Flat => "flat",
        }
    }
    pub fn trains_planner(self) -> bool {
        matches!(self, Mode::Cahl | Mode::FrozenExecutor | Mode::Separate)
    }
    pub fn trains_executor(self) -> bool {
        !matches!(self, Mode::FrozenExecutor)
    }
}

/// Which executor sample continues the trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Continue {
    /// The sample with the highest step reward (first on ties).
    Best,
    /// The first sample (itself a random draw).
    Sampled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            path: String::new(),
            dtype: "f32".into(),
            device: "cpu".into(),
            base_dtype: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSection {
    /// `builtin` (generated tasks) or a benchmark name with `data`.
    pub kind: String,
    /// Data path for benchmark worlds.
    pub data: String,
    /// Number of generated training tasks (builtin).
    pub train_tasks: usize,
}

impl Default for WorldSection {
    fn default() -> Self {
        WorldSection {
            kind: "builtin".into(),
            data: String::new(),
            train_tasks: 2000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// G_h: plans sampled per task (the planner's GRPO group).
    pub plans_per_task: usize,
    /// G_l: executor samples per sub-task (the executor's GRPO group).
    pub samples_per_step: usize,
    pub continue_with: Continue,
    /// At most this many sub-tasks are executed per plan.
    pub max_subtasks: usize,
    pub planner: SamplingParams,
    pub executor: SamplingParams,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            plans_per_task: 2,
            samples_per_step: 4,
            continue_with: Continue::Best,
            max_subtasks: 6,
            planner: SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                max_tokens: 160,
                stop: vec!["</plan>".into()],
                ..Default::default()
            },
            executor: SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                max_tokens: 96,
                stop: vec!["</tool_call>".into(), "</response>".into()],
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PerPolicy<T> {
    pub planner: T,
    pub executor: T,
}

/// The whole training configuration (`assets/default.toml` documents every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub seed: u64,
    pub steps: u64,
    pub mode: Mode,
    /// Tasks per training step.
    pub tasks_per_step: usize,
    /// Save a checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Stop (with a final checkpoint and evaluation) after this many minutes of training
    /// time; 0 = no limit.
    pub max_minutes: f64,
    /// Concurrent single-threaded workers that roll out tasks, evaluate and run update
    /// micro-batches side by side ([`crate::lanes::Lanes`]); 0 = automatic: one per core for
    /// models up to 50M parameters, 1 (every op on all cores) for larger ones. Results do not
    /// depend on it, except with LoRA dropout, which forces 1.
    pub workers: usize,
    pub model: ModelSection,
    pub world: WorldSection,
    pub rollout: RolloutSection,
    pub lora: PerPolicy<LoraConfig>,
    pub optim: PerPolicy<AdamWConfig>,
    pub grpo: GrpoConfig,
    pub rewards: RewardConfig,
    pub eval: EvalSection,
}

/// Held-out evaluation during training (greedy, one plan, one executor sample per sub-task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate before the first step and every N steps (and after the last); 0 = never.
    pub every: u64,
    /// Number of held-out tasks (the built-in world's test split, generated from `seed`).
    pub tasks: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every: 50,
            tasks: 100,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 0,
            steps: 100,
            mode: Mode::Cahl,
            tasks_per_step: 2,
            checkpoint_every: 25,
            max_minutes: 0.0,
            workers: 0,
            model: ModelSection::default(),
            world: WorldSection::default(),
            rollout: RolloutSection::default(),
            lora: PerPolicy::default(),
            optim: PerPolicy {
                planner: AdamWConfig {
                    lr: 1e-4,
                    ..Default::default()
                },
                executor: AdamWConfig {
                    lr: 1e-4,
                    ..Default::default()
                },
            },
            grpo: GrpoConfig::default(),
            rewards: RewardConfig::default(),
            eval: EvalSection::default(),
        }
    }
}

impl TrainConfig {
    /// Parse TOML; `origin` names the file in errors (unknown keys are reported with their path).
    pub fn from_toml(text: &str, origin: &str) -> crate::Result<Self> {
        toml::from_str(text).map_err(|e| crate::EngineError::Config(format!("{origin}: {e}")))
    }
    pub fn to_toml(&self) -> crate::Result<String> {
        toml::to_string_pretty(self).map_err(|e| crate::EngineError::Config(e.to_string()))
    }
    /// Check values that serde cannot.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::EngineError::Config(m.to_string()));
        if self.rollout.plans_per_task == 0 || self.rollout.samples_per_step == 0 {
            return bad("rollout.plans_per_task and rollout.samples_per_step must be >= 1");
        }
        if self.tasks_per_step == 0 {
            return bad("tasks_per_step must be >= 1");
        }
        if self.rollout.max_subtasks == 0 {
            return bad("rollout.max_subtasks must be >= 1");
        }
        if self.workers > 64 {
            return bad("workers must be at most 64 (0 = automatic)");
        }
        if self.grpo.micro_batch == 0 {
            return bad("grpo.micro_batch must be >= 1");
        }
        if self.grpo.micro_batch_tokens > 0 && self.grpo.micro_batch_tokens < 16 {
            return bad("grpo.micro_batch_tokens must be 0 (no limit) or at least 16");
        }
        self.lora.planner.targets()?;
        self.lora.executor.targets()?;
        Ok(())
    }
}

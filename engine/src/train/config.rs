//! Training configuration (TOML). Unknown keys are rejected with the offending key named.
//!
//! Defaults live once: in `assets/default.toml` ([`DEFAULT_TOML`], compiled in). A user's file
//! is laid over it key by key ([`TrainConfig::from_toml`]), and [`TrainConfig::default`] is that
//! file parsed, so every command (train, sft, eval, debug) starts from the same values.
use std::sync::OnceLock;

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
    /// StepTool (Yu et al. 2024): one adapter (the executor's) calls tools turn by turn; G
    /// whole trajectories per task; step-grained rewards and per-step returns normalised per
    /// step index, each turn's tokens carrying their step's advantage.
    StepTool,
    /// IH-GRPO-style implicit hierarchy: one adapter (the executor's) writes its plan and all
    /// its calls in one completion, run after generation (delayed execution, references to
    /// earlier results resolved); the plan's tokens get the plan-level advantage, each call's
    /// tokens its sub-task's (`[ih_grpo]`).
    IhGrpo,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "cahl" => Mode::Cahl,
            "frozen-planner" => Mode::FrozenPlanner,
            "frozen-executor" => Mode::FrozenExecutor,
            "separate" => Mode::Separate,
            "flat" => Mode::Flat,
            "steptool" => Mode::StepTool,
            "ih-grpo" => Mode::IhGrpo,
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
            Mode::StepTool => "steptool",
            Mode::IhGrpo => "ih-grpo",
        }
    }
    /// Every mode's name, as `--mode` takes it.
    pub const ALL: [Mode; 7] = [
        Mode::Cahl,
        Mode::FrozenPlanner,
        Mode::FrozenExecutor,
        Mode::Separate,
        Mode::Flat,
        Mode::StepTool,
        Mode::IhGrpo,
    ];
    pub fn trains_planner(self) -> bool {
        matches!(self, Mode::Cahl | Mode::FrozenExecutor | Mode::Separate)
    }
    /// One adapter (the executor's) plays every role: `flat`, `steptool`, `ih-grpo`.
    pub fn single_policy(self) -> bool {
        matches!(self, Mode::Flat | Mode::StepTool | Mode::IhGrpo)
    }
    /// Whether the mode writes plans (the planner adapter's or, in `ih-grpo`, inside the one
    /// completion), so that planner rewards and failure sides exist.
    pub fn has_plans(self) -> bool {
        !matches!(self, Mode::Flat | Mode::StepTool)
    }
    pub fn trains_executor(self) -> bool {
        !matches!(self, Mode::FrozenExecutor)
    }
}

/// Which executor sample continues the trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Continue {
    /// An oracle: the sample with the highest gold-based step reward (first on ties). The
    /// executor then never continues from its own mistakes and the planner is judged against
    /// an executor that consults gold; for ablations only (`"best"` is read as this too, as
    /// sessions before it was renamed wrote it).
    #[serde(alias = "best")]
    OracleBest,
    /// The first sample (itself a random draw): what the executor would do on its own.
    Sampled,
}

impl Continue {
    /// Whether the continuation consults gold.
    pub fn is_oracle(self) -> bool {
        self == Continue::OracleBest
    }
}

pub use crate::agent::ModelSection;

/// Whether a step's rollouts decode together in waves ([`crate::wave`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchMode {
    /// On for models over [`crate::lanes::SMALL_MODEL_PARAMS`] parameters (whose tasks would
    /// otherwise roll out one by one); small models run tasks side by side on lanes instead.
    #[default]
    Auto,
    On,
    Off,
}

impl BatchMode {
    /// Whether rollouts of a model of `params` base parameters are batched.
    pub fn applies(self, params: usize) -> bool {
        match self {
            BatchMode::Auto => params > crate::lanes::SMALL_MODEL_PARAMS,
            BatchMode::On => true,
            BatchMode::Off => false,
        }
    }
}

fn default_batch_rows() -> usize {
    64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSection {
    /// `builtin` (generated tasks) or a benchmark name with `data`.
    pub kind: String,
    /// Data path for benchmark worlds.
    pub data: String,
    /// Number of generated training tasks (builtin).
    pub train_tasks: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// G_h: plans sampled per task (the planner's GRPO group).
    pub plans_per_task: usize,
    /// G_l: executor samples per sub-task (the executor's GRPO group).
    pub samples_per_step: usize,
    pub continue_with: Continue,
    /// K: executions of each plan (each a sampled continuation from its own executor seed,
    /// the same K seeds for every plan of a task); the planner's execution level is their mean.
    pub executions_per_plan: usize,
    /// At most this many sub-tasks are executed per plan.
    pub max_subtasks: usize,
    pub planner: SamplingParams,
    pub executor: SamplingParams,
    /// Decode the step's rollouts together: all planner prompts, then every executor prompt of
    /// every plan and task as it comes ([`crate::wave`]).
    #[serde(default)]
    pub batch: BatchMode,
    /// At most this many rows (completions) in one batched decode step; more requests wait for
    /// rows to free up.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerPolicy<T> {
    pub planner: T,
    pub executor: T,
}

/// The whole training configuration (`assets/default.toml` documents every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Where rollouts are sampled ([`crate::backend`]).
    pub backend: crate::backend::BackendSection,
    pub world: WorldSection,
    pub rollout: RolloutSection,
    pub lora: PerPolicy<LoraConfig>,
    pub optim: PerPolicy<AdamWConfig>,
    pub grpo: GrpoConfig,
    pub rewards: RewardConfig,
    pub ih_grpo: IhGrpoSection,
    pub eval: EvalSection,
}

/// `--mode ih-grpo`: one completion holds the plan and every call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IhGrpoSection {
    /// Tokens of the one completion (plan and calls); sampling otherwise follows
    /// `[rollout.executor]`.
    pub max_tokens: usize,
    pub advantage: IhAdvantage,
}

/// How `ih-grpo` assigns advantages to a completion's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IhAdvantage {
    /// Plan tokens: the group advantage of the planner reward (computed from the executed
    /// calls); each call's tokens: the advantage of its sub-task's executor reward, normalised
    /// per sub-task index across the group.
    Segments,
    /// Every token: the group advantage of task success (what the published IH-GRPO code
    /// optimises, without its hierarchy correction term).
    Outcome,
}

/// Held-out evaluation during training (greedy, one plan, one executor sample per sub-task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Evaluate before the first step and every N steps (and after the last); 0 = never.
    pub every: u64,
    /// Number of held-out tasks (the built-in world's test split, generated from `seed`).
    pub tasks: usize,
}

/// The commented default configuration: the one place where defaults are written.
pub const DEFAULT_TOML: &str = include_str!("../../../assets/default.toml");

fn default_table() -> &'static toml::Table {
    static T: OnceLock<toml::Table> = OnceLock::new();
    T.get_or_init(|| toml::from_str(DEFAULT_TOML).expect("assets/default.toml parses (tested)"))
}

/// The defaults: `assets/default.toml` parsed.
impl Default for TrainConfig {
    fn default() -> Self {
        static D: OnceLock<TrainConfig> = OnceLock::new();
        D.get_or_init(|| {
            TrainConfig::from_toml("", "assets/default.toml")
                .expect("assets/default.toml is a complete configuration (tested)")
        })
        .clone()
    }
}

/// A key of a user's file that the defaults do not have, or of the wrong kind.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigKeyError(String);

/// Lay `over` onto `base` key by key (tables merge, other values replace). A key that `base`
/// does not have is an error naming its path (`base` holds every key there is).
fn overlay(base: &mut toml::Table, over: toml::Table, path: &str) -> Result<(), ConfigKeyError> {
    for (k, v) in over {
        let key = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match (base.get_mut(&k), v) {
            (None, _) => {
                let known: Vec<&str> = base.keys().map(String::as_str).collect();
                let section = if path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in [{path}]")
                };
                return Err(ConfigKeyError(format!(
                    "unknown key `{key}` (known {section}: {})",
                    known.join(", ")
                )));
            }
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => overlay(b, o, &key)?,
            (Some(toml::Value::Table(_)), other) => {
                return Err(ConfigKeyError(format!(
                    "`{key}` must be a table ([{key}]), not a {}",
                    other.type_str()
                )))
            }
            (Some(slot), v) => *slot = v,
        }
    }
    Ok(())
}

impl TrainConfig {
    /// Parse TOML laid over the defaults (`assets/default.toml`): keys it leaves out keep their
    /// default values. `origin` names the file in errors; unknown keys are reported with their
    /// path.
    pub fn from_toml(text: &str, origin: &str) -> crate::Result<Self> {
        let bad = |m: String| crate::EngineError::Config(format!("{origin}: {m}"));
        let user: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut merged = default_table().clone();
        overlay(&mut merged, user, "").map_err(|e| bad(e.to_string()))?;
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))
    }
    /// For a session's `config.toml` written before `rollout.executions_per_plan` and
    /// `grpo.iterations` existed (`text`), set them to the behaviour of that time (1 and 1)
    /// instead of today's defaults, so a resumed run goes on as it began. Returns a note per key.
    pub fn keep_pre_key_behaviour(&mut self, text: &str) -> Vec<String> {
        let table: toml::Table = toml::from_str(text).unwrap_or_default();
        let has = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|t| t.contains_key(key))
        };
        let mut notes = Vec::new();
        if !has("rollout", "executions_per_plan") {
            self.rollout.executions_per_plan = 1;
            notes
                .push("the session predates rollout.executions_per_plan: 1, as it ran".to_string());
        }
        if !has("grpo", "iterations") {
            self.grpo.iterations = 1;
            notes.push("the session predates grpo.iterations: 1, as it ran".to_string());
        }
        notes
    }

    pub fn to_toml(&self) -> crate::Result<String> {
        toml::to_string_pretty(self).map_err(|e| crate::EngineError::Config(e.to_string()))
    }
    /// Check values that serde cannot: each bad value is refused with one line naming the key,
    /// its value and the valid range.
    pub fn validate(&self) -> crate::Result<()> {
        fn bad(key: &str, value: impl std::fmt::Display, range: &str) -> crate::Result<()> {
            Err(crate::EngineError::Config(format!(
                "{key} = {value} is out of range: {range}"
            )))
        }
        let pos = |key: &str, v: f64| -> crate::Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                bad(key, v, "a finite number > 0")
            }
        };
        let non_neg = |key: &str, v: f64| -> crate::Result<()> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                bad(key, v, "a finite number >= 0")
            }
        };
        if self.steps == 0 {
            return bad("steps", 0, "at least 1");
        }
        self.backend.validate()?;
        // A GRPO group of one sample has no spread: its advantage is 0 and nothing is learned.
        if self.rollout.plans_per_task < 2 && self.mode.trains_planner() {
            return bad(
                "rollout.plans_per_task",
                self.rollout.plans_per_task,
                "at least 2 (the planner's GRPO group; 1 gives no learning signal)",
            );
        }
        if self.rollout.plans_per_task == 0 {
            return bad("rollout.plans_per_task", 0, "at least 1");
        }
        if self.rollout.samples_per_step < 2 && self.mode.trains_executor() {
            return bad(
                "rollout.samples_per_step",
                self.rollout.samples_per_step,
                "at least 2 (the executor's GRPO group; 1 gives no learning signal)",
            );
        }
        if self.tasks_per_step == 0 {
            return bad("tasks_per_step", 0, "at least 1");
        }
        if self.rollout.executions_per_plan == 0 || self.rollout.executions_per_plan > 16 {
            return bad(
                "rollout.executions_per_plan",
                self.rollout.executions_per_plan,
                "1 to 16",
            );
        }
        if self.ih_grpo.max_tokens == 0 {
            return bad("ih_grpo.max_tokens", 0, "at least 1");
        }
        let st = &self.rewards.steptool;
        for (k, v) in [
            ("alpha", st.alpha),
            ("beta", st.beta),
            ("terminal", st.terminal),
        ] {
            non_neg(&format!("rewards.steptool.{k}"), v)?;
        }
        if !(0.0..=1.0).contains(&st.gamma) {
            return bad("rewards.steptool.gamma", st.gamma, "in [0, 1]");
        }
        if self.rollout.batch_rows == 0 {
            return bad("rollout.batch_rows", 0, "at least 1");
        }
        if self.rollout.max_subtasks == 0 {
            return bad("rollout.max_subtasks", 0, "at least 1");
        }
        if self.workers > 64 {
            return bad("workers", self.workers, "0 (automatic) to 64");
        }
        for (role, p) in [
            ("planner", &self.rollout.planner),
            ("executor", &self.rollout.executor),
        ] {
            non_neg(&format!("rollout.{role}.temperature"), p.temperature)?;
            if !(p.top_p > 0.0 && p.top_p <= 1.0) {
                return bad(&format!("rollout.{role}.top_p"), p.top_p, "in (0, 1]");
            }
            if p.max_tokens == 0 {
                return bad(&format!("rollout.{role}.max_tokens"), 0, "at least 1");
            }
        }
        for (role, o) in [
            ("planner", &self.optim.planner),
            ("executor", &self.optim.executor),
        ] {
            pos(&format!("optim.{role}.lr"), o.lr)?;
            non_neg(&format!("optim.{role}.weight_decay"), o.weight_decay)?;
            // 0 turns clipping off.
            non_neg(&format!("optim.{role}.max_grad_norm"), o.max_grad_norm)?;
            for (k, b) in [("beta1", o.beta1), ("beta2", o.beta2)] {
                if !(0.0..1.0).contains(&b) {
                    return bad(&format!("optim.{role}.{k}"), b, "in [0, 1)");
                }
            }
            pos(&format!("optim.{role}.eps"), o.eps)?;
        }
        non_neg("grpo.beta", self.grpo.beta)?;
        non_neg("grpo.epsilon_low", self.grpo.epsilon_low)?;
        non_neg("grpo.epsilon_high", self.grpo.epsilon_high)?;
        if self.grpo.iterations == 0 || self.grpo.iterations > 64 {
            return bad("grpo.iterations", self.grpo.iterations, "1 to 64");
        }
        if self.grpo.micro_batch == 0 {
            return bad("grpo.micro_batch", 0, "at least 1");
        }
        if self.grpo.micro_batch_tokens > 0 && self.grpo.micro_batch_tokens < 16 {
            return bad(
                "grpo.micro_batch_tokens",
                self.grpo.micro_batch_tokens,
                "0 (no limit) or at least 16",
            );
        }
        if !self.max_minutes.is_finite() || self.max_minutes < 0.0 {
            return bad(
                "max_minutes",
                self.max_minutes,
                "a finite number >= 0 (0 = no limit)",
            );
        }
        self.lora.planner.targets()?;
        self.lora.executor.targets()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key a configuration can hold is written in `assets/default.toml` (so a default
    /// lives in one place), and the file says nothing the structs do not have.
    #[test]
    fn default_toml_holds_every_key() {
        fn keys(t: &toml::Table, path: &str, out: &mut Vec<String>) {
            for (k, v) in t {
                let key = format!("{path}{k}");
                match v {
                    toml::Value::Table(sub) => keys(sub, &format!("{key}."), out),
                    _ => out.push(key),
                }
            }
        }
        let written: toml::Table =
            toml::from_str(&TrainConfig::default().to_toml().unwrap()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        keys(&written, "", &mut a);
        keys(default_table(), "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(
            a, b,
            "keys of a serialized config vs keys of assets/default.toml"
        );
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c = TrainConfig::from_toml("steps = 7\n[optim.planner]\nlr = 0.5\n", "t.toml").unwrap();
        let d = TrainConfig::default();
        assert_eq!(c.steps, 7);
        assert_eq!(c.optim.planner.lr, 0.5);
        assert_eq!(c.optim.executor, d.optim.executor);
        assert_eq!(c.optim.planner.max_grad_norm, d.optim.planner.max_grad_norm);
        assert_eq!(c.rollout, d.rollout);
        assert_eq!(TrainConfig::from_toml(DEFAULT_TOML, "d").unwrap(), d);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = TrainConfig::from_toml("[optim.planner]\nlrr = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml") && e.contains("optim.planner.lrr"),
            "{e}"
        );
        let e = TrainConfig::from_toml("stepz = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`stepz`") && e.contains("steps"), "{e}");
        let e = TrainConfig::from_toml("[optim.planner]\nlr = \"fast\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml") && e.contains("lr"), "{e}");
        let e = TrainConfig::from_toml("optim = 3\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`optim` must be a table"), "{e}");
    }

    /// Each of the values #23 found accepted is refused, naming the key, the value and the range.
    #[test]
    fn nonsense_values_are_refused_with_key_value_and_range() {
        let cases = [
            ("steps = 0", "steps = 0"),
            ("[optim.planner]\nlr = -1.0", "optim.planner.lr = -1"),
            ("[optim.executor]\nlr = nan", "optim.executor.lr = NaN"),
            (
                "[rollout]\nplans_per_task = 1",
                "rollout.plans_per_task = 1",
            ),
            (
                "[rollout]\nsamples_per_step = 1",
                "rollout.samples_per_step = 1",
            ),
            (
                "[rollout.planner]\ntemperature = -1.0",
                "rollout.planner.temperature = -1",
            ),
            (
                "[rollout.executor]\ntop_p = 2.0",
                "rollout.executor.top_p = 2",
            ),
            (
                "[rollout.planner]\nmax_tokens = 0",
                "rollout.planner.max_tokens = 0",
            ),
            ("[grpo]\nbeta = -1.0", "grpo.beta = -1"),
            (
                "[optim.planner]\nmax_grad_norm = -1.0",
                "optim.planner.max_grad_norm = -1",
            ),
        ];
        for (toml, want) in cases {
            let c = TrainConfig::from_toml(toml, "t.toml").unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("range"), "{toml}: {e}");
        }
        TrainConfig::default().validate().unwrap();
        // A frozen planner needs no planner group, a frozen executor no executor group.
        let mut c = TrainConfig {
            mode: Mode::FrozenPlanner,
            ..Default::default()
        };
        c.rollout.plans_per_task = 1;
        c.validate().unwrap();
    }

    /// Configs and sessions written before the oracle was renamed say `continue_with = "best"`:
    /// it still reads, as the oracle it always was.
    #[test]
    fn old_best_reads_as_the_oracle_and_old_sessions_keep_their_algorithm() {
        let c = TrainConfig::from_toml("[rollout]\ncontinue_with = \"best\"", "old.toml").unwrap();
        assert_eq!(c.rollout.continue_with, Continue::OracleBest);
        assert!(c.rollout.continue_with.is_oracle());
        assert!(!TrainConfig::default().rollout.continue_with.is_oracle());
        let old = "[rollout]\ncontinue_with = \"best\"\n[grpo]\nbeta = 0.04\n";
        let mut c = TrainConfig::from_toml(old, "old.toml").unwrap();
        assert_eq!(c.keep_pre_key_behaviour(old).len(), 2);
        assert_eq!((c.rollout.executions_per_plan, c.grpo.iterations), (1, 1));
        let now = TrainConfig::default().to_toml().unwrap();
        let mut c = TrainConfig::from_toml(&now, "new.toml").unwrap();
        assert!(c.keep_pre_key_behaviour(&now).is_empty());
        assert_eq!(c.grpo.iterations, 2);
    }
}

//! Record types shared by the engine (producer), the session writer and the UI (consumer).
//!
//! These are plain data: the engine converts its internal state into them. Field names are part
//! of the on-disk format (see `docs/SESSION_FORMAT.md`) and must not be renamed; new fields must be
//! optional or have a default so that older files still load (every struct is
//! `#[serde(default)]`, and unknown fields are ignored, so newer files load in older readers too).
//!
//! # Non-finite numbers
//! JSON cannot represent NaN or ±infinity. Every `f64` field is written as `null` when it is not
//! finite and read back as `NaN` (and a missing float field also reads as `NaN`, meaning
//! "unknown"). `Option<f64>` fields (e.g. [`ExecSample::advantage`]) read `null` as `None`, so a
//! non-finite `Some(x)` round-trips to `None`. Consumers should treat NaN as "no value".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::UtcDateTime;

/// Version of the on-disk format written by this crate (stored in `run.json`).
pub const FORMAT_VERSION: u32 = 1;

/// Serde helpers for `f64` fields: non-finite values are written as `null`, `null` reads as NaN.
pub mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a finite value as a JSON number and a non-finite one as `null`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    /// Reads a number, or `null` as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Serde helpers for `Option<f64>` fields: `None` and non-finite values are written as `null`.
pub mod opt_float {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(finite)` as a number, anything else as `null`.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) if x.is_finite() => s.serialize_f64(*x),
            _ => s.serialize_none(),
        }
    }

    /// Reads a number as `Some`, `null` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<f64>::deserialize(d)
    }
}

/// Serde helpers for `BTreeMap<String, f64>`: non-finite values are written as `null` and read
/// back as NaN.
pub mod float_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the map with non-finite values as `null`.
    pub fn serialize<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            m.iter()
                .map(|(k, v)| (k, if v.is_finite() { Some(*v) } else { None })),
        )
    }

    /// Reads the map, `null` values as NaN.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
        let m = BTreeMap::<String, Option<f64>>::deserialize(d)?;
        Ok(m.into_iter()
            .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
            .collect())
    }
}

/// A reward with its named components and human-readable reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RewardBreakdown {
    /// Total reward used for the advantage (NaN/`null` if unknown).
    #[serde(with = "float")]
    pub total: f64,
    /// Named components, e.g. `"format"`, `"tool_match"`, `"success"`.
    #[serde(with = "float_map")]
    pub components: BTreeMap<String, f64>,
    /// Short explanations, e.g. `"argument 'city' missing"`.
    pub reasons: Vec<String>,
    /// Each component's weight in `total` (`total` = sum of value × weight), where recorded;
    /// omitted in older sessions and when not known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
}

impl Default for RewardBreakdown {
    fn default() -> Self {
        RewardBreakdown {
            total: f64::NAN,
            components: BTreeMap::new(),
            reasons: Vec::new(),
            weights: BTreeMap::new(),
        }
    }
}

/// Optimizer statistics of one policy (planner or executor) for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyStats {
    /// Policy loss.
    #[serde(with = "float")]
    pub loss: f64,
    /// KL divergence to the reference policy.
    #[serde(with = "float")]
    pub kl: f64,
    /// Gradient norm before clipping.
    #[serde(with = "float")]
    pub grad_norm: f64,
    /// Learning rate used for this step.
    #[serde(with = "float")]
    pub lr: f64,
    /// Fraction of tokens whose importance ratio was clipped.
    #[serde(with = "float")]
    pub clip_frac: f64,
    /// True if the update was skipped (e.g. all advantages zero, or non-finite loss).
    pub skipped: bool,
}

impl Default for PolicyStats {
    fn default() -> Self {
        PolicyStats {
            loss: f64::NAN,
            kl: f64::NAN,
            grad_norm: f64::NAN,
            lr: f64::NAN,
            clip_frac: f64::NAN,
            skipped: false,
        }
    }
}

/// One line of `metrics.jsonl`: aggregate statistics of one training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsRecord {
    /// Optimizer step this line describes (1-based: step N is the N-th completed update; 0 may
    /// be used for a pre-training baseline).
    pub step: u64,
    /// Mean planner reward over the step's plans.
    #[serde(with = "float")]
    pub planner_reward: f64,
    /// Mean executor reward over the step's executor samples.
    #[serde(with = "float")]
    pub executor_reward: f64,
    /// Fraction of tasks solved.
    #[serde(with = "float")]
    pub success_rate: f64,
    /// Fraction of trajectories flagged as planner–executor misaligned.
    #[serde(with = "float")]
    pub misaligned_rate: f64,
    /// Fraction of the step's plan executions that failed on the planner side (see
    /// [`PlanRecord::failure_side`]).
    #[serde(with = "float")]
    pub planner_side_rate: f64,
    /// Fraction of the step's plan executions that failed on the executor side.
    #[serde(with = "float")]
    pub executor_side_rate: f64,
    /// Planner optimizer statistics.
    pub planner: PolicyStats,
    /// Executor optimizer statistics.
    pub executor: PolicyStats,
    /// Mean reward components, keyed `"<policy>/<component>"`, e.g. `"executor/format"`.
    #[serde(with = "float_map")]
    pub components: BTreeMap<String, f64>,
    /// Generated tokens per second during this step (timing: not reproducible across runs).
    #[serde(with = "float")]
    pub tokens_per_s: f64,
    /// Seconds since the run started, excluding time the process was not running (timing).
    #[serde(with = "float")]
    pub elapsed_s: f64,
    /// Wall-clock seconds this step took (timing).
    #[serde(with = "float")]
    pub step_time_s: f64,
    /// Of `step_time_s`, the seconds spent sampling rollouts (the rest is the updates).
    #[serde(with = "float")]
    pub rollout_s: f64,
    /// Greedy evaluation on held-out tasks, on the steps that ran one (`[eval]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<HeldOutEval>,
}

/// Greedy success on held-out tasks (one plan, one executor sample per sub-task).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HeldOutEval {
    /// Which split the tasks come from (`test`, `dev`).
    pub split: String,
    /// Tasks evaluated.
    pub tasks: usize,
    /// Fraction of them solved.
    #[serde(with = "float")]
    pub success_rate: f64,
    /// Mean planner reward of the greedy plans.
    #[serde(with = "float")]
    pub planner_reward: f64,
    /// Mean executor reward of the greedy executor steps.
    #[serde(with = "float")]
    pub executor_reward: f64,
    /// Invalid-invocation rate: call entries that do not parse or that the tool schemas reject,
    /// over all call entries (`null` in older sessions).
    #[serde(with = "float", default = "nan")]
    pub invalid_rate: f64,
    /// Fraction of the tasks that failed on the planner side / the executor side (hierarchical
    /// modes; `null` in flat mode and older sessions).
    #[serde(with = "float", default = "nan")]
    pub planner_side_rate: f64,
    /// See `planner_side_rate`.
    #[serde(with = "float", default = "nan")]
    pub executor_side_rate: f64,
}

fn nan() -> f64 {
    f64::NAN
}

impl Default for MetricsRecord {
    fn default() -> Self {
        MetricsRecord {
            step: 0,
            planner_reward: f64::NAN,
            executor_reward: f64::NAN,
            success_rate: f64::NAN,
            misaligned_rate: f64::NAN,
            planner_side_rate: f64::NAN,
            executor_side_rate: f64::NAN,
            planner: PolicyStats::default(),
            executor: PolicyStats::default(),
            components: BTreeMap::new(),
            tokens_per_s: f64::NAN,
            elapsed_s: f64::NAN,
            step_time_s: f64::NAN,
            rollout_s: f64::NAN,
            eval: None,
        }
    }
}

/// A tool call: name and JSON arguments.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CallRecord {
    /// Tool name.
    pub name: String,
    /// Arguments as JSON (normally an object).
    pub arguments: serde_json::Value,
}

/// The task a trajectory was sampled for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskInfo {
    /// Task identifier, stable within a dataset.
    pub id: String,
    /// Dataset split, e.g. `"train"` or `"eval"`.
    pub split: String,
    /// The user request given to the planner.
    pub text: String,
    /// Reference sub-tasks, if the dataset has them.
    pub gold_plan: Vec<String>,
    /// Reference tool calls, if the dataset has them.
    pub gold_calls: Vec<CallRecord>,
}

/// One executor sample for one sub-task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecSample {
    /// Raw generated text.
    pub raw_text: String,
    /// Tool calls parsed from `raw_text` (empty on parse failure or a plain answer).
    pub calls: Vec<CallRecord>,
    /// Why parsing failed, if it did.
    pub parse_error: Option<String>,
    /// Tool result(s) observed after executing `calls` (`null`/absent if not executed).
    pub observation: Option<serde_json::Value>,
    /// Executor reward for this sample.
    pub reward: RewardBreakdown,
    /// GRPO advantage within the executor group (`None` if not computed).
    #[serde(with = "opt_float")]
    pub advantage: Option<f64>,
    /// `steptool`: the discounted return from this step, `R_t = sum gamma^(k-t) r_k`, whose
    /// normalisation per step index is `advantage` (absent in other modes).
    #[serde(default, with = "opt_float", skip_serializing_if = "Option::is_none")]
    pub step_return: Option<f64>,
    /// Number of generated tokens.
    pub tokens: usize,
}

/// Execution of one sub-task of a plan: the executor group and the sample that continued.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StepRecord {
    /// Index of the sub-task within [`PlanRecord::subtasks`].
    pub subtask_index: usize,
    /// The sub-task text.
    pub subtask: String,
    /// The executor prompt, if recorded (omitted from the file when `None` to save space).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The executor group: G_l samples for this sub-task.
    pub samples: Vec<ExecSample>,
    /// Index into `samples` of the sample whose result continued the trajectory.
    pub continued: usize,
    /// Which of the plan's executions (`rollout.executions_per_plan`) this step belongs to;
    /// 0 for the first (omitted then).
    #[serde(skip_serializing_if = "is_zero")]
    pub execution: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One planner sample (plan) and its execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanRecord {
    /// Index of this plan among the task's G_h plans.
    pub index: usize,
    /// Raw planner output.
    pub raw_text: String,
    /// Parsed sub-tasks (empty on parse failure).
    pub subtasks: Vec<String>,
    /// Why parsing the plan failed, if it did.
    pub parse_error: Option<String>,
    /// Planner reward for this plan.
    pub reward: RewardBreakdown,
    /// GRPO advantage within the planner group (`None` if not computed).
    #[serde(with = "opt_float")]
    pub advantage: Option<f64>,
    /// Number of generated planner tokens.
    pub tokens: usize,
    /// Execution of each sub-task, in order.
    pub steps: Vec<StepRecord>,
    /// Final answer to the user, if one was produced.
    pub final_response: Option<String>,
    /// Whether this plan's first execution solved the task.
    pub success: bool,
    /// Share of the plan's executions that solved the task (`rollout.executions_per_plan`;
    /// absent in older sessions, read as NaN).
    #[serde(with = "float")]
    pub success_rate: f64,
    /// For a failed plan (its first execution): its misalignment label (`plan_missing_call`, `plan_too_coarse`, …,
    /// see the engine's `eval::taxonomy`), from the content alignment of sub-tasks and gold calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// For a failed plan: which side failed, `planner` (the plan lacks a call or a value, or
    /// asks for more than the executor carries out) or `executor` (the plan was complete and
    /// correct, the calls were not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_side: Option<String>,
}

impl Default for PlanRecord {
    fn default() -> Self {
        PlanRecord {
            index: 0,
            raw_text: String::new(),
            subtasks: Vec::new(),
            parse_error: None,
            reward: RewardBreakdown::default(),
            advantage: None,
            tokens: 0,
            steps: Vec::new(),
            final_response: None,
            success: false,
            success_rate: f64::NAN,
            failure: None,
            failure_side: None,
        }
    }
}

/// One line of `trajectories.jsonl`: everything sampled for one task in one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrajectoryRecord {
    /// Training step during which this was sampled (same numbering as [`MetricsRecord::step`]).
    pub step: u64,
    /// The task.
    pub task: TaskInfo,
    /// Seed from which this task's sampling was derived.
    pub seed: u64,
    /// The G_h plans, each with its execution.
    pub plans: Vec<PlanRecord>,
    /// Whether any execution of any plan solved the task.
    pub success: bool,
    /// Mean planner reward over `plans`.
    #[serde(with = "float")]
    pub planner_reward: f64,
    /// Mean executor reward over all executor samples.
    #[serde(with = "float")]
    pub executor_reward: f64,
    /// Planner–executor misalignment: no plan solved the task and at least one parsable plan
    /// failed on the planner side (see [`PlanRecord::failure_side`]).
    pub misaligned: bool,
    /// How it was produced, e.g. `"train"`, `"eval"`, `"debug"`.
    pub mode: String,
    /// The policy version it was sampled with: the number of updates the adapters had seen
    /// (training only; `step - 1 - policy_version` is its staleness).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<u64>,
}

impl Default for TrajectoryRecord {
    fn default() -> Self {
        TrajectoryRecord {
            step: 0,
            task: TaskInfo::default(),
            seed: 0,
            plans: Vec::new(),
            success: false,
            planner_reward: f64::NAN,
            executor_reward: f64::NAN,
            misaligned: false,
            mode: String::new(),
            policy_version: None,
        }
    }
}

/// Metadata of a committed checkpoint, stored as `checkpoints/step-N/checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckpointRecord {
    /// Step whose state the checkpoint holds (state *after* update `step`).
    pub step: u64,
    /// Path relative to the session directory, `/`-separated, e.g. `checkpoints/step-100`.
    pub path: String,
    /// When the checkpoint was committed (RFC 3339 UTC); empty if unknown.
    pub created_at: String,
}

/// Run metadata stored as `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// On-disk format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// When the run was created (RFC 3339 UTC).
    pub started_at: String,
    /// Model identifier (path or hub id).
    pub model: String,
    /// Training mode, e.g. `"joint"`.
    pub mode: String,
    /// Planned number of optimizer steps.
    pub total_steps: u64,
    /// Master seed of the run.
    pub seed: u64,
    /// Device description, e.g. `"cuda:0 (NVIDIA H100)"` or `"cpu"`.
    pub device: String,
    /// Producer, e.g. `"cahl-tui 0.1.0"`.
    pub tool: String,
    /// The executor's continuation was chosen by a gold-based oracle (`continue_with =
    /// "oracle-best"`): rewards and success are optimistic. Shown in the UI's header.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oracle: bool,
    /// Where rollouts were sampled when not in the trainer's process, e.g.
    /// `"openai (2 endpoints: …)"` (empty: locally).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub backend: String,
}

impl Default for RunInfo {
    fn default() -> Self {
        RunInfo {
            format_version: FORMAT_VERSION,
            started_at: String::new(),
            model: String::new(),
            mode: String::new(),
            total_steps: 0,
            seed: 0,
            device: String::new(),
            tool: String::new(),
            oracle: false,
            backend: String::new(),
        }
    }
}

impl RunInfo {
    /// Run info with `started_at` set to now and the current format version.
    pub fn new(
        model: impl Into<String>,
        mode: impl Into<String>,
        total_steps: u64,
        seed: u64,
        device: impl Into<String>,
    ) -> Self {
        RunInfo {
            format_version: FORMAT_VERSION,
            started_at: UtcDateTime::now().rfc3339(),
            model: model.into(),
            mode: mode.into(),
            total_steps,
            seed,
            device: device.into(),
            tool: format!("cahl-sessions {}", env!("CARGO_PKG_VERSION")),
            oracle: false,
            backend: String::new(),
        }
    }
}

/// The cheap-to-parse part of a [`TrajectoryRecord`], used by the reader's index so a UI can list
/// and filter trajectories without loading them fully.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrajectorySummary {
    /// See [`TrajectoryRecord::step`].
    pub step: u64,
    /// Task id, split and text (gold data is not loaded).
    pub task: TaskRef,
    /// See [`TrajectoryRecord::seed`].
    pub seed: u64,
    /// See [`TrajectoryRecord::success`].
    pub success: bool,
    /// See [`TrajectoryRecord::planner_reward`].
    #[serde(with = "float")]
    pub planner_reward: f64,
    /// See [`TrajectoryRecord::executor_reward`].
    #[serde(with = "float")]
    pub executor_reward: f64,
    /// See [`TrajectoryRecord::misaligned`].
    pub misaligned: bool,
    /// See [`TrajectoryRecord::mode`].
    pub mode: String,
    /// `(number of plans, sub-tasks of the best-rewarded plan)`, read from `plans` without
    /// keeping them (`None` when the line has no plans).
    #[serde(
        rename = "plans",
        deserialize_with = "plan_shape::deserialize",
        skip_serializing
    )]
    pub plan_shape: Option<PlansGlance>,
}

/// What the trajectory stream shows of a record's plans without loading them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlansGlance {
    /// Number of plans.
    pub plans: usize,
    /// Sub-tasks of the best-rewarded plan (the first when none has a finite reward).
    pub subtasks: usize,
    /// The best-rewarded plan's misalignment label, when its execution failed.
    pub failure: Option<String>,
    /// Its side (`planner` or `executor`).
    pub failure_side: Option<String>,
}

/// Reads a trajectory's `plans` as its shape only: how many plans, and how many sub-tasks the
/// best-rewarded one has (the first plan when none has a finite reward).
mod plan_shape {
    use serde::de::IgnoredAny;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Total {
        #[serde(with = "super::float")]
        total: f64,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Shape {
        subtasks: Vec<IgnoredAny>,
        reward: Total,
        failure: Option<String>,
        failure_side: Option<String>,
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<super::PlansGlance>, D::Error> {
        let plans = Vec::<Shape>::deserialize(d)?;
        let best = plans
            .iter()
            .filter(|p| p.reward.total.is_finite())
            .max_by(|a, b| a.reward.total.total_cmp(&b.reward.total))
            .or_else(|| plans.first());
        Ok(Some(super::PlansGlance {
            plans: plans.len(),
            subtasks: best.map_or(0, |p| p.subtasks.len()),
            failure: best.and_then(|p| p.failure.clone()),
            failure_side: best.and_then(|p| p.failure_side.clone()),
        }))
    }
}

/// [`TrajectorySummary`] without the plans' shape: what the reader's index falls back to for a
/// line whose `plans` do not read as a list of plans (the full load reports the problem).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SummaryWithoutShape {
    step: u64,
    task: TaskRef,
    seed: u64,
    success: bool,
    #[serde(with = "float", default = "nan")]
    planner_reward: f64,
    #[serde(with = "float", default = "nan")]
    executor_reward: f64,
    misaligned: bool,
    mode: String,
}

impl From<SummaryWithoutShape> for TrajectorySummary {
    fn from(s: SummaryWithoutShape) -> Self {
        TrajectorySummary {
            step: s.step,
            task: s.task,
            seed: s.seed,
            success: s.success,
            planner_reward: s.planner_reward,
            executor_reward: s.executor_reward,
            misaligned: s.misaligned,
            mode: s.mode,
            plan_shape: None,
        }
    }
}

impl Default for TrajectorySummary {
    fn default() -> Self {
        TrajectorySummary {
            step: 0,
            task: TaskRef::default(),
            seed: 0,
            success: false,
            planner_reward: f64::NAN,
            executor_reward: f64::NAN,
            misaligned: false,
            mode: String::new(),
            plan_shape: None,
        }
    }
}

impl From<&TrajectoryRecord> for TrajectorySummary {
    fn from(t: &TrajectoryRecord) -> Self {
        TrajectorySummary {
            step: t.step,
            task: TaskRef {
                id: t.task.id.clone(),
                split: t.task.split.clone(),
                text: t.task.text.clone(),
            },
            seed: t.seed,
            success: t.success,
            planner_reward: t.planner_reward,
            executor_reward: t.executor_reward,
            misaligned: t.misaligned,
            mode: t.mode.clone(),
            plan_shape: Some(plans_glance(t)),
        }
    }
}

/// The [`PlansGlance`] of a full record, as the summary reads it.
pub fn plans_glance(t: &TrajectoryRecord) -> PlansGlance {
    let best = t
        .plans
        .iter()
        .filter(|p| p.reward.total.is_finite())
        .max_by(|a, b| a.reward.total.total_cmp(&b.reward.total))
        .or_else(|| t.plans.first());
    PlansGlance {
        plans: t.plans.len(),
        subtasks: best.map_or(0, |p| p.subtasks.len()),
        failure: best.and_then(|p| p.failure.clone()),
        failure_side: best.and_then(|p| p.failure_side.clone()),
    }
}

/// Task identity and request (part of [`TrajectorySummary`]; the gold data is not loaded).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskRef {
    /// See [`TaskInfo::id`].
    pub id: String,
    /// See [`TaskInfo::split`].
    pub split: String,
    /// See [`TaskInfo::text`].
    pub text: String,
}

//! Tool worlds: the built-in stateful world used for training and the demo, the calculator, the
//! stateless schema-checking [`static_world`] and the BM25 [`search`] world. The benchmarks'
//! tasks, their worlds and scorers live in `crate::benchmarks`, which builds on this module.
//!
//! A [`World`] lists its tool schemas (for prompts), resets a per-episode state from a [`Task`],
//! executes parsed calls into JSON [`Observation`]s, and reports its final state for comparison
//! with the task's gold state. Tasks are plain serde data, so they can be recorded in traces.
//!
//! ```
//! use cahl_engine::worlds::{builtin::{BuiltinWorld, generate_tasks}, Split, World};
//! use cahl_engine::parse::ToolCall;
//! let tasks = generate_tasks(Split::Train, 3, 7).unwrap();
//! let mut world = BuiltinWorld::new();
//! world.reset(&tasks[0]).unwrap();
//! // replaying the gold trajectory reaches the gold final state
//! for call in &tasks[0].gold_calls {
//!     assert!(world.execute(call).ok);
//! }
//! assert_eq!(world.final_state(), tasks[0].gold_final_state);
//! let obs = world.execute(&ToolCall::new("no_such_tool", serde_json::json!({})));
//! assert!(!obs.ok);
//! ```
pub mod builtin;
pub mod calc;
pub mod refs;
pub mod search;
pub mod static_world;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::parse::{ToolCall, ToolSchema};

/// Errors of world construction and reset.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("task {task} does not belong to world {world}")]
    WrongWorld { task: String, world: String },
    #[error("bad task {task}: {msg}")]
    BadTask { task: String, msg: String },
    #[error("bad template {template}: {msg}")]
    BadTemplate { template: String, msg: String },
    #[error("{path}: {msg}")]
    Data { path: String, msg: String },
}

/// Data split of generated tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Dev,
    Test,
}

/// One episode's task: the request, the tools, and the gold answers used by the rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    /// Name of the world this task runs in (`builtin`, `bfcl`, `api-bank`, `nestful`, `bamboogle`).
    pub world: String,
    #[serde(default)]
    pub split: Option<Split>,
    /// The natural-language request given to the planner / executor.
    pub request: String,
    /// Tools offered for this task; empty means the world's own [`World::tools`].
    #[serde(default)]
    pub tools: Vec<ToolSchema>,
    /// Gold plan: one self-contained sub-task instruction per step.
    #[serde(default)]
    pub gold_plan: Vec<String>,
    /// Gold call trajectory (concrete values, references already resolved).
    #[serde(default)]
    pub gold_calls: Vec<ToolCall>,
    /// For each gold call, the argument names whose values come from earlier results (a token
    /// returned by `login`, an address returned by `get_contact`): a plan cannot state them.
    #[serde(default)]
    pub gold_derived: Vec<Vec<String>>,
    /// Gold final world state, where the world has state.
    #[serde(default)]
    pub gold_final_state: Option<Value>,
    /// Gold final answer (search QA).
    #[serde(default)]
    pub gold_answer: Option<String>,
    /// Template the task came from (generated tasks).
    #[serde(default)]
    pub template: Option<String>,
}

/// Result of executing one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub ok: bool,
    /// The tool's JSON result, or `{"error": "..."}`.
    pub content: Value,
}

impl Observation {
    pub fn ok(content: Value) -> Self {
        Observation { ok: true, content }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        Observation {
            ok: false,
            content: serde_json::json!({ "error": msg.into() }),
        }
    }
}

/// A tool world. Implementations simulate tools in process: no code execution, processes,
/// filesystem or network.
pub trait World: Send {
    /// World name, matching [`Task::world`].
    fn name(&self) -> &str;
    /// Tool schemas for the current episode (the task's tools where the task brings its own).
    fn tools(&self) -> Vec<ToolSchema>;
    /// Tool schemas as one JSON array, for prompts.
    fn tools_json(&self) -> Value {
        serde_json::to_value(self.tools()).unwrap_or(Value::Null)
    }
    /// Start an episode on a fresh copy of the initial state.
    fn reset(&mut self, task: &Task) -> Result<(), WorldError>;
    /// Execute one call; errors are observations, never panics.
    fn execute(&mut self, call: &ToolCall) -> Observation;
    /// Final state for comparison with [`Task::gold_final_state`]; `None` for stateless worlds.
    fn final_state(&self) -> Option<Value>;
    /// An independent copy of this world (same definition), so that tasks can be rolled out
    /// concurrently; each episode still starts with [`World::reset`].
    fn fork(&self) -> Box<dyn World>;
    /// The most calls the executor carries out per sub-task (per turn in `flat` mode): a
    /// capability limit of the agent the world is set up with; calls past it are refused with
    /// an error observation and not run. `None`: no limit.
    fn calls_per_step(&self) -> Option<usize> {
        None
    }
}

//! The built-in world: 22 stateful tools simulated in Rust, in the spirit of API-Bank (alarms,
//! reminders, agenda, contacts + email, bank accounts, health records, login tokens, unit
//! conversion, a calculator, fixed weather and stock tables), and a seeded task generator driven
//! by the templates in `assets/worlds/builtin/templates.json`.
//!
//! `tools.rs` simulates the tools (argument checks and each tool's effect on the state),
//! `tasks.rs` instantiates the templates into tasks with gold plans and gold calls.
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Observation, Task, ToolCall, ToolSchema, World, WorldError};

mod tasks;
#[cfg(test)]
mod tests;
mod tools;

pub use tasks::{generate_tasks, instantiate_all, render_plan, split_of, template_count};

const TOOLS_JSON: &str = include_str!("../../../../assets/worlds/builtin/tools.json");
const STATE_JSON: &str = include_str!("../../../../assets/worlds/builtin/state.json");

/// Longest string argument a builtin tool accepts.
pub const MAX_ARG_LEN: usize = 200;
/// Most entries a list in the state (alarms, reminders, …) may hold.
pub const MAX_LIST_LEN: usize = 64;

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "builtin";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reminder {
    text: String,
    time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meeting {
    title: String,
    day: String,
    time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Contact {
    email: String,
    #[serde(default)]
    phone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
    #[serde(default)]
    body: String,
}

/// The whole mutable state of the built-in world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinState {
    users: BTreeMap<String, String>,
    sessions: BTreeMap<String, String>,
    next_token: u64,
    alarms: Vec<String>,
    reminders: Vec<Reminder>,
    meetings: Vec<Meeting>,
    contacts: BTreeMap<String, Contact>,
    outbox: Vec<Email>,
    accounts: BTreeMap<String, BTreeMap<String, i64>>,
    health: BTreeMap<String, BTreeMap<String, f64>>,
}

fn initial_state() -> &'static BuiltinState {
    static S: OnceLock<BuiltinState> = OnceLock::new();
    S.get_or_init(|| {
        serde_json::from_str(STATE_JSON).expect("embedded state.json is valid (checked by tests)")
    })
}

/// Tool schemas of the built-in world.
pub fn builtin_tools() -> &'static [ToolSchema] {
    static T: OnceLock<Vec<ToolSchema>> = OnceLock::new();
    T.get_or_init(|| {
        serde_json::from_str(TOOLS_JSON).expect("embedded tools.json is valid (checked by tests)")
    })
}

/// The built-in world; each [`World::reset`] starts from a fresh copy of the initial state.
#[derive(Debug, Clone)]
pub struct BuiltinWorld {
    state: BuiltinState,
    calls_per_step: Option<usize>,
}

impl Default for BuiltinWorld {
    fn default() -> Self {
        Self::new()
    }
}

impl BuiltinWorld {
    pub fn new() -> Self {
        BuiltinWorld {
            state: initial_state().clone(),
            calls_per_step: None,
        }
    }

    /// The capability-boundary testbed (world kind `builtin-one-call`): the built-in tasks, with
    /// an executor that carries out one call per sub-task. A plan that merges two calls into one
    /// sub-task ("A, then B") states the same values as one that splits them, so a planner
    /// reward on what plans say (parameter level) cannot tell them apart, and the gold plans (one
    /// call per sub-task) do not name the limit; only what the executor achieves does.
    pub fn one_call_per_step() -> Self {
        BuiltinWorld {
            calls_per_step: Some(1),
            ..Self::new()
        }
    }

    /// The state as JSON (what [`World::final_state`] returns).
    pub fn state_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.state).unwrap_or(Value::Null);
        // passwords and the token counter are not part of the compared state
        if let Value::Object(m) = &mut v {
            m.remove("users");
            m.remove("next_token");
        }
        v
    }
}

impl World for BuiltinWorld {
    fn name(&self) -> &str {
        WORLD_NAME
    }
    fn tools(&self) -> Vec<ToolSchema> {
        builtin_tools().to_vec()
    }
    fn reset(&mut self, task: &Task) -> Result<(), WorldError> {
        if task.world != WORLD_NAME {
            return Err(WorldError::WrongWorld {
                task: task.id.clone(),
                world: WORLD_NAME.into(),
            });
        }
        self.state = initial_state().clone();
        Ok(())
    }
    fn execute(&mut self, call: &ToolCall) -> Observation {
        match self.run(call) {
            Ok(v) => Observation::ok(v),
            Err(e) => Observation::error(e.0),
        }
    }
    fn final_state(&self) -> Option<Value> {
        Some(self.state_json())
    }

    fn fork(&self) -> Box<dyn World> {
        Box::new(self.clone())
    }
    fn calls_per_step(&self) -> Option<usize> {
        self.calls_per_step
    }
}

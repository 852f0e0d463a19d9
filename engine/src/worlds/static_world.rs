//! A stateless world over a fixed list of tool schemas, for benchmarks whose tools are not
//! executable (BFCL, API-Bank, NESTFUL): a call is checked against its schema and answered with a
//! placeholder result. Scoring of these benchmarks is static (see `crate::benchmarks`).
use serde_json::{json, Value};

use super::{Observation, Task, ToolCall, ToolSchema, World, WorldError};
use crate::parse::validate_call;

/// Stateless schema-checking world.
#[derive(Debug, Clone)]
pub struct StaticWorld {
    name: String,
    tools: Vec<ToolSchema>,
}

impl StaticWorld {
    pub fn new(name: impl Into<String>, tools: Vec<ToolSchema>) -> Self {
        StaticWorld {
            name: name.into(),
            tools,
        }
    }
}

impl World for StaticWorld {
    fn name(&self) -> &str {
        &self.name
    }
    fn tools(&self) -> Vec<ToolSchema> {
        self.tools.clone()
    }
    fn reset(&mut self, task: &Task) -> Result<(), WorldError> {
        if task.world != self.name {
            return Err(WorldError::WrongWorld {
                task: task.id.clone(),
                world: self.name.clone(),
            });
        }
        if !task.tools.is_empty() {
            self.tools = task.tools.clone();
        }
        Ok(())
    }
    fn execute(&mut self, call: &ToolCall) -> Observation {
        let issues = validate_call(call, &self.tools);
        if issues.is_empty() {
            Observation::ok(
                json!({"status": "ok", "note": "simulated: this benchmark's tools are not executable"}),
            )
        } else {
            Observation::error(
                issues
                    .iter()
                    .map(|i| i.message())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    }
    fn final_state(&self) -> Option<Value> {
        None
    }

    fn fork(&self) -> Box<dyn World> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_calls_against_schemas() {
        let tools = vec![ToolSchema {
            name: "f".into(),
            description: String::new(),
            parameters: json!({"type": "dict", "properties": {"x": {"type": "integer"}}, "required": ["x"]}),
        }];
        let mut w = StaticWorld::new("bfcl", tools);
        assert!(w.execute(&ToolCall::new("f", json!({"x": 1}))).ok);
        let bad = w.execute(&ToolCall::new("f", json!({"x": "1"})));
        assert!(!bad.ok);
        assert!(bad.content["error"]
            .as_str()
            .unwrap()
            .contains("should be integer"));
        assert!(w.final_state().is_none());
    }
}

//! ToolRL's SFT/RL data as training tasks (world `toolrl`, a static world): the tools are
//! listed as in API-Bank's system prompts, the gold calls come from the outputs. ToolRL has no
//! scorer here (it is a training source).
use std::path::Path;

use serde_json::Value;

use super::{apibank, data_err};
use crate::worlds::{Task, WorldError};

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "toolrl";

/// ToolRL's SFT/RL data (`rlla_sft.json`: `{instruction, input, output}`; world `toolrl`): the
/// instruction lists the tools as API-Bank's system prompt does, the input holds the dialogue,
/// the output's `<tool_call>` lines are the gold calls. Items without a parsable call (answers
/// that only respond) are skipped: they have nothing for a planner or executor to learn.
pub fn load_tasks(dir: &Path) -> Result<Vec<Task>, WorldError> {
    let path = if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join("rlla_sft.json")
    };
    let text = std::fs::read_to_string(&path).map_err(|e| data_err(&path, e.to_string()))?;
    let items: Vec<Value> = serde_json::from_str(&text).map_err(|e| {
        data_err(
            &path,
            format!("not a JSON list of {{instruction, input, output}}: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let field = |k: &str| {
            it.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| data_err(&path, format!("item {i}: missing string field {k:?}")))
        };
        let (instruction, input, output) =
            (field("instruction")?, field("input")?, field("output")?);
        let parsed = crate::parse::parse_executor(output);
        let gold_calls = parsed.calls();
        if gold_calls.is_empty() || parsed.entries.iter().any(|e| e.call.is_none()) {
            continue;
        }
        let request = input
            .trim()
            .trim_start_matches("**Dialogue Records History**")
            .trim()
            .to_string();
        out.push(Task {
            id: format!("toolrl-{i}"),
            world: WORLD_NAME.into(),
            split: None,
            request,
            tools: apibank::tools(instruction),
            gold_plan: Vec::new(),
            gold_derived: vec![Vec::new(); gold_calls.len()],
            gold_calls,
            gold_final_state: None,
            gold_answer: None,
            template: Some(format!("toolrl-calls-{}", parsed.entries.len())),
        });
    }
    if out.is_empty() {
        return Err(data_err(
            &path,
            "no item with a parsable <tool_call>".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benchmarks::training::synth_gold_plan;

    fn toolrl_fixture(dir: &Path) {
        let items = serde_json::json!([
            {
                "instruction": "You are a helpful assistant.\n\n**Available Tools**\n1. Name: Search Managers\nDescription: Search for managers by name\nParameters: {\"name\": {\"description\": \"The name\", \"type\": \"string\", \"default\": \"\"}}\n2. Name: Event Result\nDescription: A result.\nParameters: {\"evt\": {\"description\": \"The ID\", \"type\": \"float\", \"default\": \"\"}}\n",
                "input": "**Dialogue Records History**\n<user> Find the manager Alex Ferguson and the result of event 7. </user>",
                "output": "<think> Two calls. </think>\n<tool_call>\n{\"name\": \"Search Managers\", \"parameters\": {\"name\": \"Alex Ferguson\"}}\n{\"name\": \"Event Result\", \"parameters\": {\"evt\": 7}}\n</tool_call>"
            },
            {
                "instruction": "**Available Tools**\n1. Name: A\nDescription: a\nParameters: {}\n",
                "input": "<user> hello </user>",
                "output": "<think> No tool needed. </think>\n<response> Hi! </response>"
            }
        ]);
        std::fs::write(dir.join("rlla_sft.json"), items.to_string()).unwrap();
    }

    #[test]
    fn toolrl_items_become_tasks_with_gold_calls() {
        let dir = tempfile::tempdir().unwrap();
        toolrl_fixture(dir.path());
        let t = load_tasks(dir.path()).unwrap();
        // the response-only item has nothing to train a planner or executor on
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.world, "toolrl");
        assert!(t.request.starts_with("<user> Find the manager"));
        assert_eq!(t.tools.len(), 2);
        assert_eq!(t.tools[1].property("evt").unwrap()["type"], "number");
        assert_eq!(t.gold_calls.len(), 2);
        assert_eq!(t.gold_calls[0].name, "Search Managers");
        assert_eq!(t.gold_calls[0].arguments["name"], "Alex Ferguson");
        assert_eq!(t.gold_calls[1].arguments["evt"], 7);
        let plan = synth_gold_plan(t);
        assert_eq!(
            plan,
            vec![
                "Call Search Managers with name Alex Ferguson.".to_string(),
                "Call Event Result with evt 7.".to_string()
            ]
        );
    }

    #[test]
    fn toolrl_bad_files_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_tasks(dir.path()).unwrap_err().to_string();
        assert!(e.contains("rlla_sft.json"), "{e}");
        std::fs::write(dir.path().join("rlla_sft.json"), "[{\"instruction\": 1}]").unwrap();
        let e = load_tasks(dir.path()).unwrap_err().to_string();
        assert!(e.contains("item 0") && e.contains("instruction"), "{e}");
    }
}

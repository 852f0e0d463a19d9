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
/// the output's `<tool_call>` lines are the gold calls and its `<response>` the gold final
/// answer ([`Task::gold_answer`]). An item that only responds (54 of ToolRL's 400) is a task
/// with no gold call whose right move is to answer without a tool, as ToolRL scores it (its
/// format: `<think>` then `<response>`, no `<tool_call>`). An item whose `<tool_call>` block does
/// not parse is skipped.
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
        let gold_answer = parsed
            .response
            .as_ref()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        let broken = parsed.entries.iter().any(|e| e.call.is_none())
            || (output.contains("<tool_call>") && gold_calls.is_empty());
        if broken || (gold_calls.is_empty() && gold_answer.is_none()) {
            continue;
        }
        let template = if gold_calls.is_empty() {
            "toolrl-response".to_string()
        } else {
            format!("toolrl-calls-{}", parsed.entries.len())
        };
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
            template: Some(template),
            gold_answer,
        });
    }
    if out.is_empty() {
        return Err(data_err(
            &path,
            "no item with a parsable <tool_call> or a <response>".into(),
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
        let all = load_tasks(dir.path()).unwrap();
        // the response-only item is kept: answering without a tool is its gold
        assert_eq!(all.len(), 2);
        let r = &all[1];
        assert!(r.gold_calls.is_empty());
        assert_eq!(r.gold_answer.as_deref(), Some("Hi!"));
        assert_eq!(r.template.as_deref(), Some("toolrl-response"));
        assert_eq!(
            synth_gold_plan(r),
            vec![crate::benchmarks::training::ANSWER_SUBTASK.to_string()]
        );
        let t = &all[0];
        assert_eq!(t.gold_answer, None);
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
    fn a_response_only_item_is_solved_by_answering_without_a_tool() {
        use crate::parse::ToolCall;
        use crate::sft::{answer_text, gold_texts, Role};
        use crate::train::rollout::episode_success;
        let dir = tempfile::tempdir().unwrap();
        toolrl_fixture(dir.path());
        let mut r = load_tasks(dir.path()).unwrap().remove(1);
        r.gold_plan = synth_gold_plan(&r);
        assert!(episode_success(&r, &[], None, true));
        assert!(!episode_success(&r, &[], None, false), "no answer given");
        assert!(!episode_success(
            &r,
            &[ToolCall::new("A", serde_json::json!({}))],
            None,
            true
        ));
        // Elsewhere a task without gold calls keeps its old meaning (search QA answers are
        // scored by their benchmark, not here).
        let mut other = r.clone();
        other.world = "bamboogle".into();
        assert!(episode_success(
            &other,
            &[ToolCall::new("search", serde_json::json!({}))],
            None,
            false
        ));
        // Its supervised examples: the executor and the flat run answer with the gold response.
        let mut world = crate::benchmarks::world_by_name(WORLD_NAME, None).unwrap();
        let texts = gold_texts(&r, world.as_mut()).unwrap();
        let answer = answer_text("Hi!");
        assert!(texts
            .iter()
            .any(|g| g.role == Role::Executor && g.completion == answer));
        assert_eq!(texts.last().unwrap().completion, answer);
        assert!(crate::rewards::toolrl_reward(
            &answer,
            &crate::rewards::ToolRlGold::from_calls(vec![]),
            &crate::rewards::RewardConfig::default()
        )
        .components
        .iter()
        .any(|c| c.name == "format" && c.value > 0.0));
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

//! Prompt texts for the planner, the executor and the flat baseline. They are rendered through
//! the model's chat template by [`crate::train::Agent`].
use crate::parse::{ToolCall, ToolSchema};
use crate::worlds::Observation;

/// A parameter's type as the prompts show it: `string`, `array[integer]`, `any`.
fn type_text(schema: &serde_json::Value) -> String {
    let ty = schema.get("type").and_then(|v| v.as_str()).unwrap_or("any");
    match schema.get("items") {
        Some(items) if ty == "array" => format!("array[{}]", type_text(items)),
        _ => ty.to_string(),
    }
}

/// One line per tool: `name(arg: type, opt?: type) - description`.
pub fn compact_tools(tools: &[ToolSchema]) -> String {
    let mut out = String::new();
    for t in tools {
        let req = t.required();
        let args: Vec<String> = t
            .property_names()
            .into_iter()
            .map(|p| {
                let ty = t.property(p).map_or("any".to_string(), type_text);
                let opt = if req.contains(&p) { "" } else { "?" };
                format!("{p}{opt}: {ty}")
            })
            .collect();
        out.push_str(&format!(
            "{}({}) - {}\n",
            t.name,
            args.join(", "),
            t.description
        ));
    }
    out
}

pub fn planner_system(tools: &[ToolSchema]) -> String {
    format!(
        "You are a planner. Break the user's request into sub-tasks for an executor that can call these tools:\n{}\
         Answer with <think>...</think> then <plan> with numbered sub-tasks, one per line, each a self-contained \
         instruction that states every value the executor needs, then </plan>.",
        compact_tools(tools)
    )
}

pub fn executor_system(tools: &[ToolSchema]) -> String {
    format!(
        "You are an executor. Carry out the current sub-task with the tools:\n{}\
         Answer with <think>...</think> then <tool_call> with one JSON object {{\"name\": ..., \"parameters\": {{...}}}} \
         per line and </tool_call>, or <response>...</response> when no call is needed.",
        compact_tools(tools)
    )
}

/// A call made earlier in the episode and what it returned.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub call: ToolCall,
    pub observation: Observation,
}

fn history_text(history: &[HistoryItem]) -> String {
    if history.is_empty() {
        return "Done so far: nothing\n".to_string();
    }
    let mut s = String::from("Done so far:\n");
    for h in history {
        s.push_str(&format!(
            "- {} -> {}\n",
            h.call.to_toolrl_json(),
            h.observation.content
        ));
    }
    s
}

pub fn executor_user(
    request: &str,
    plan: &[String],
    index: usize,
    history: &[HistoryItem],
) -> String {
    let mut s = format!("Task: {request}\nPlan:\n");
    for (i, p) in plan.iter().enumerate() {
        s.push_str(&format!("{}. {p}\n", i + 1));
    }
    s.push_str(&history_text(history));
    let cur = plan.get(index).map(String::as_str).unwrap_or("");
    s.push_str(&format!(
        "Current sub-task ({}/{}): {cur}",
        index + 1,
        plan.len()
    ));
    s
}

pub fn flat_system(tools: &[ToolSchema]) -> String {
    format!(
        "You are a tool-using assistant. Complete the user's request with the tools:\n{}\
         Answer with <think>...</think> then one <tool_call> block with one JSON object {{\"name\": ..., \"parameters\": {{...}}}} \
         per line (every call that needs no result of another goes in the same block) and </tool_call>, \
         or <response>...</response> when the request is done.",
        compact_tools(tools)
    )
}

pub fn flat_user(request: &str, history: &[HistoryItem]) -> String {
    format!("Task: {request}\n{}Next step:", history_text(history))
}

/// `ih-grpo`: the plan and every call in one answer, run after it is written.
pub fn ih_system(tools: &[ToolSchema]) -> String {
    format!(
        "You are a tool-using assistant. Plan the user's request, then write every call at once: the calls run only \
         after your answer, in order, with the tools:\n{}\
         Answer with <think>...</think>, then <plan> with numbered sub-tasks, one per line, then </plan>, then one \
         <tool_call> block with one JSON object {{\"name\": ..., \"parameters\": {{...}}}} per line, one per sub-task in \
         plan order, and </tool_call>. A value returned by an earlier call is written \"$k.field\" (k counts the calls \
         from 1), e.g. \"$1.token\".",
        compact_tools(tools)
    )
}

pub fn ih_user(request: &str) -> String {
    format!("Task: {request}")
}

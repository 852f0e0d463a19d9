//! Parsers for model outputs: the executor format (ToolRL-compatible `<think>` / `<tool_call>` /
//! `<response>`, plus Hermes/Qwen-style one-call-per-block `<tool_call>`), the planner format
//! (`<think>` then a numbered `<plan>`), and schema validation of parsed calls.
//!
//! Parsers never panic: every input yields a parse result plus a list of [`ParseIssue`]s that say
//! *why* the output is malformed. The issues feed the format and syntax rewards and the UI.
//!
//! ```
//! use cahl_engine::parse::{parse_executor, parse_planner};
//! let out = parse_executor(
//!     "<think>need the weather</think>\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"paris\"}}\n</tool_call>",
//! );
//! assert!(out.issues.is_empty());
//! assert_eq!(out.calls()[0].name, "get_weather");
//!
//! let plan = parse_planner("<think>two steps</think>\n<plan>\n1. log in as alice\n2. get the balance\n</plan>");
//! assert_eq!(plan.subtasks.len(), 2);
//! ```
mod executor;
mod planner;
mod tags;
mod validate;

pub use executor::{parse_executor, CallEntry, CallStyle, ExecutorOutput};
pub use planner::{parse_planner, PlannerOutput};
pub use validate::{
    json_type_name, schema_of_type_name, validate_call, validate_calls, ToolSchema, COERCE_STRINGS,
};

use cahl_sessions::records::CallRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest model output (bytes) the parsers look at; longer text is cut (at a char boundary) and
/// reported with [`ParseIssue::TooLong`].
pub const MAX_OUTPUT_BYTES: usize = 32 * 1024;
/// Most tool calls read from one output; more are reported with [`ParseIssue::TooManyCalls`].
pub const MAX_CALLS: usize = 32;
/// Most plan sub-tasks read from one plan.
pub const MAX_SUBTASKS: usize = 16;

/// One tool call: a name and a JSON object of arguments.
///
/// Serialized as `{"name": …, "arguments": {…}}`; `parameters` is accepted as an alias on input
/// (ToolRL's spelling).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    #[serde(default, alias = "parameters")]
    pub arguments: Map<String, Value>,
}

impl ToolCall {
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        let arguments = match arguments {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        ToolCall {
            name: name.into(),
            arguments,
        }
    }

    /// ToolRL's JSON line: `{"name": …, "parameters": {…}}`.
    pub fn to_toolrl_json(&self) -> String {
        let v = serde_json::json!({"name": self.name, "parameters": Value::Object(self.arguments.clone())});
        v.to_string()
    }
}

/// The session record of a call (as written in trajectories).
pub fn call_record(call: &ToolCall) -> CallRecord {
    CallRecord {
        name: call.name.clone(),
        arguments: Value::Object(call.arguments.clone()),
    }
}

/// The call of a session record; arguments that are not a JSON object become empty.
pub fn tool_call(record: &CallRecord) -> ToolCall {
    ToolCall::new(record.name.clone(), record.arguments.clone())
}

/// Which rule an issue breaks; used to route issues to the format or syntax reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueClass {
    /// Tags and layout.
    Format,
    /// JSON of a call.
    Syntax,
    /// Call against the tool schemas.
    Schema,
}

/// Why an output is malformed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParseIssue {
    TooLong {
        limit: usize,
    },
    Empty,
    MissingTag {
        tag: String,
    },
    UnclosedTag {
        tag: String,
    },
    UnopenedTag {
        tag: String,
    },
    DuplicateTag {
        tag: String,
    },
    TagOrder {
        tag: String,
        detail: String,
    },
    TextOutsideTags {
        snippet: String,
    },
    InvalidJson {
        block: usize,
        line: usize,
        message: String,
    },
    NotAnObject {
        block: usize,
        line: usize,
    },
    MissingName {
        block: usize,
        line: usize,
    },
    BadArguments {
        block: usize,
        line: usize,
        message: String,
    },
    EmptyToolCall {
        block: usize,
    },
    TooManyCalls {
        limit: usize,
    },
    NoSubtasks,
    UnnumberedLine {
        line: usize,
        snippet: String,
    },
    BadNumbering {
        line: usize,
        expected: usize,
        found: String,
    },
    TooManySubtasks {
        limit: usize,
    },
    UnknownTool {
        name: String,
    },
    MissingRequired {
        tool: String,
        param: String,
    },
    WrongType {
        tool: String,
        param: String,
        expected: String,
        got: String,
    },
    NotInEnum {
        tool: String,
        param: String,
    },
    ExtraParameter {
        tool: String,
        param: String,
    },
}

impl ParseIssue {
    pub fn class(&self) -> IssueClass {
        use ParseIssue::*;
        match self {
            TooLong { .. }
            | Empty
            | MissingTag { .. }
            | UnclosedTag { .. }
            | UnopenedTag { .. }
            | DuplicateTag { .. }
            | TagOrder { .. }
            | TextOutsideTags { .. }
            | NoSubtasks
            | UnnumberedLine { .. }
            | BadNumbering { .. }
            | TooManySubtasks { .. }
            | EmptyToolCall { .. } => IssueClass::Format,
            InvalidJson { .. }
            | NotAnObject { .. }
            | MissingName { .. }
            | BadArguments { .. }
            | TooManyCalls { .. } => IssueClass::Syntax,
            UnknownTool { .. }
            | MissingRequired { .. }
            | WrongType { .. }
            | NotInEnum { .. }
            | ExtraParameter { .. } => IssueClass::Schema,
        }
    }

    /// One-line human-readable reason.
    pub fn message(&self) -> String {
        use ParseIssue::*;
        match self {
            TooLong { limit } => format!("output longer than {limit} bytes, cut"),
            Empty => "empty output".into(),
            MissingTag { tag } => format!("missing <{tag}>"),
            UnclosedTag { tag } => format!("<{tag}> is not closed"),
            UnopenedTag { tag } => format!("</{tag}> without <{tag}>"),
            DuplicateTag { tag } => format!("<{tag}> appears more than once"),
            TagOrder { tag, detail } => format!("<{tag}> out of order: {detail}"),
            TextOutsideTags { snippet } => format!("text outside tags: {snippet:?}"),
            InvalidJson {
                block,
                line,
                message,
            } => {
                format!("tool_call block {block} line {line}: invalid JSON ({message})")
            }
            NotAnObject { block, line } => {
                format!("tool_call block {block} line {line}: not a JSON object")
            }
            MissingName { block, line } => {
                format!("tool_call block {block} line {line}: no string \"name\"")
            }
            BadArguments {
                block,
                line,
                message,
            } => {
                format!("tool_call block {block} line {line}: bad arguments ({message})")
            }
            EmptyToolCall { block } => format!("tool_call block {block} is empty"),
            TooManyCalls { limit } => format!("more than {limit} calls, rest ignored"),
            NoSubtasks => "plan has no sub-tasks".into(),
            UnnumberedLine { line, snippet } => {
                format!("plan line {line} is not numbered: {snippet:?}")
            }
            BadNumbering {
                line,
                expected,
                found,
            } => {
                format!("plan line {line}: expected number {expected}, found {found}")
            }
            TooManySubtasks { limit } => format!("more than {limit} sub-tasks, rest ignored"),
            UnknownTool { name } => format!("unknown tool {name:?}"),
            MissingRequired { tool, param } => {
                format!("{tool}: missing required parameter {param:?}")
            }
            WrongType {
                tool,
                param,
                expected,
                got,
            } => {
                format!("{tool}: parameter {param:?} should be {expected}, got {got}")
            }
            NotInEnum { tool, param } => {
                format!("{tool}: parameter {param:?} not one of the allowed values")
            }
            ExtraParameter { tool, param } => format!("{tool}: unexpected parameter {param:?}"),
        }
    }
}

/// Cut `text` to at most `limit` bytes at a char boundary.
pub fn clip(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Short snippet for messages.
pub(crate) fn snippet(text: &str) -> String {
    let t = text.trim();
    let c = clip(t, 40);
    if c.len() < t.len() {
        format!("{c}…")
    } else {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_records_round_trip() {
        let c = ToolCall::new("f", serde_json::json!({"x": 1, "y": "z"}));
        let r = call_record(&c);
        assert_eq!(r.arguments, serde_json::json!({"x": 1, "y": "z"}));
        assert_eq!(tool_call(&r), c);
        let odd = CallRecord {
            name: "g".into(),
            arguments: serde_json::json!([1]),
        };
        assert!(tool_call(&odd).arguments.is_empty());
    }
}

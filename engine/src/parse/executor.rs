//! Executor output: `<think>…</think>` then `<tool_call>` (JSON object per line, ToolRL) or one
//! `<tool_call>` block per call (Hermes/Qwen, `arguments`), and/or `<response>…</response>`.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::tags::{find_blocks, text_outside};
use super::{clip, IssueClass, ParseIssue, ToolCall, MAX_CALLS, MAX_OUTPUT_BYTES};

/// How the calls were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CallStyle {
    /// No calls.
    #[default]
    None,
    /// `{"name", "parameters"}` objects, one per line (ToolRL).
    ToolRl,
    /// `{"name", "arguments"}` objects (Hermes/Qwen).
    Hermes,
}

/// One call entry inside a `<tool_call>` block (a JSON line or a whole-block object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEntry {
    /// 0-based `<tool_call>` block index.
    pub block: usize,
    /// 1-based line in the block (1 for whole-block objects).
    pub line: usize,
    /// The parsed call, when the JSON and its shape are valid.
    pub call: Option<ToolCall>,
    /// Why this entry is not a call (syntax issues only).
    pub issues: Vec<ParseIssue>,
}

/// Parsed executor output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecutorOutput {
    pub think: Option<String>,
    pub response: Option<String>,
    /// Whether any `<tool_call>` block was present.
    pub has_tool_call_block: bool,
    pub entries: Vec<CallEntry>,
    pub style: CallStyle,
    /// Every issue found (format and syntax; schema issues come from [`super::validate_calls`]).
    pub issues: Vec<ParseIssue>,
}

impl ExecutorOutput {
    /// The well-formed calls, in order.
    pub fn calls(&self) -> Vec<ToolCall> {
        self.entries.iter().filter_map(|e| e.call.clone()).collect()
    }

    pub fn format_issues(&self) -> impl Iterator<Item = &ParseIssue> {
        self.issues
            .iter()
            .filter(|i| i.class() == IssueClass::Format)
    }

    pub fn is_well_formed(&self) -> bool {
        self.format_issues().next().is_none()
    }
}

/// Parse an executor output. Never panics; see [`ExecutorOutput::issues`].
pub fn parse_executor(text: &str) -> ExecutorOutput {
    let mut out = ExecutorOutput::default();
    let text = if text.len() > MAX_OUTPUT_BYTES {
        out.issues.push(ParseIssue::TooLong {
            limit: MAX_OUTPUT_BYTES,
        });
        clip(text, MAX_OUTPUT_BYTES)
    } else {
        text
    };
    if text.trim().is_empty() {
        out.issues.push(ParseIssue::Empty);
        return out;
    }
    let mut issues = Vec::new();
    let thinks = find_blocks(text, "think", &mut issues);
    let think_range = thinks.first().map(|b| (b.start, b.end));
    match thinks.len() {
        0 => issues.push(ParseIssue::MissingTag {
            tag: "think".into(),
        }),
        1 => {}
        _ => issues.push(ParseIssue::DuplicateTag {
            tag: "think".into(),
        }),
    }
    if let Some(b) = thinks.first() {
        out.think = Some(b.inner.trim().to_string());
        if !text[..b.start].trim().is_empty() {
            issues.push(ParseIssue::TagOrder {
                tag: "think".into(),
                detail: "must come first".into(),
            });
        }
    }
    let inside_think = |start: usize| think_range.is_some_and(|(s, e)| start > s && start < e);
    let calls_blocks: Vec<_> = find_blocks(text, "tool_call", &mut issues)
        .into_iter()
        .filter(|b| !inside_think(b.start))
        .collect();
    let responses: Vec<_> = find_blocks(text, "response", &mut issues)
        .into_iter()
        .filter(|b| !inside_think(b.start))
        .collect();
    if responses.len() > 1 {
        issues.push(ParseIssue::DuplicateTag {
            tag: "response".into(),
        });
    }
    if let Some(r) = responses.first() {
        out.response = Some(r.inner.trim().to_string());
        if let Some(last_call) = calls_blocks.last() {
            if r.start < last_call.start {
                issues.push(ParseIssue::TagOrder {
                    tag: "response".into(),
                    detail: "must come after <tool_call>".into(),
                });
            }
        }
    }
    if calls_blocks.is_empty() && responses.is_empty() {
        issues.push(ParseIssue::MissingTag {
            tag: "tool_call or response".into(),
        });
    }
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    ranges.extend(thinks.iter().map(|b| (b.start, b.end)));
    ranges.extend(calls_blocks.iter().map(|b| (b.start, b.end)));
    ranges.extend(responses.iter().map(|b| (b.start, b.end)));
    if let Some(snippet) = text_outside(text, &ranges) {
        issues.push(ParseIssue::TextOutsideTags { snippet });
    }
    out.has_tool_call_block = !calls_blocks.is_empty();
    let mut saw_params = false;
    let mut saw_args = false;
    let mut too_many = false;
    'blocks: for (bi, b) in calls_blocks.iter().enumerate() {
        let inner = b.inner.trim();
        if inner.is_empty() {
            issues.push(ParseIssue::EmptyToolCall { block: bi });
            continue;
        }
        let mut values: Vec<(usize, Result<Value, serde_json::Error>)> = Vec::new();
        match serde_json::from_str::<Value>(inner) {
            Ok(Value::Array(items)) => values.extend(items.into_iter().map(|v| (1, Ok(v)))),
            Ok(v) => values.push((1, Ok(v))),
            Err(_) => {
                for (li, line) in inner.lines().enumerate() {
                    let l = line.trim();
                    if l.is_empty() {
                        continue;
                    }
                    values.push((li + 1, serde_json::from_str::<Value>(l)));
                }
            }
        }
        for (line, v) in values {
            if out.entries.len() >= MAX_CALLS {
                too_many = true;
                break 'blocks;
            }
            let mut entry = CallEntry {
                block: bi,
                line,
                call: None,
                issues: Vec::new(),
            };
            match v {
                Err(e) => entry.issues.push(ParseIssue::InvalidJson {
                    block: bi,
                    line,
                    message: e.to_string(),
                }),
                Ok(v) => match call_from_value(v, bi, line) {
                    Ok((call, key)) => {
                        match key {
                            ArgKey::Parameters => saw_params = true,
                            ArgKey::Arguments => saw_args = true,
                            ArgKey::Absent => {}
                        }
                        entry.call = Some(call);
                    }
                    Err(issue) => entry.issues.push(issue),
                },
            }
            issues.extend(entry.issues.iter().cloned());
            out.entries.push(entry);
        }
    }
    if too_many {
        issues.push(ParseIssue::TooManyCalls { limit: MAX_CALLS });
    }
    out.style = if saw_params {
        CallStyle::ToolRl
    } else if saw_args {
        CallStyle::Hermes
    } else if out.entries.iter().any(|e| e.call.is_some()) {
        CallStyle::ToolRl
    } else {
        CallStyle::None
    };
    out.issues.extend(issues);
    out
}

enum ArgKey {
    Parameters,
    Arguments,
    Absent,
}

fn call_from_value(v: Value, block: usize, line: usize) -> Result<(ToolCall, ArgKey), ParseIssue> {
    let Value::Object(mut obj) = v else {
        return Err(ParseIssue::NotAnObject { block, line });
    };
    // OpenAI style: {"type": "function", "function": {"name", "arguments"}}
    if !obj.contains_key("name") {
        if let Some(Value::Object(f)) = obj.remove("function") {
            obj = f;
        }
    }
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(ParseIssue::MissingName { block, line }),
    };
    let (raw, key) = if let Some(p) = obj.remove("parameters") {
        (Some(p), ArgKey::Parameters)
    } else if let Some(a) = obj.remove("arguments") {
        (Some(a), ArgKey::Arguments)
    } else {
        (None, ArgKey::Absent)
    };
    let arguments = match raw {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(ParseIssue::BadArguments {
                    block,
                    line,
                    message: "arguments string is not a JSON object".into(),
                })
            }
        },
        Some(other) => {
            return Err(ParseIssue::BadArguments {
                block,
                line,
                message: format!(
                    "arguments must be an object, got {}",
                    super::json_type_name(&other)
                ),
            })
        }
    };
    Ok((ToolCall { name, arguments }, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(out: &ExecutorOutput) -> Vec<String> {
        out.issues.iter().map(|i| i.message()).collect()
    }

    #[test]
    fn toolrl_lines_and_response() {
        let t = "<think>\nok\n</think>\n\n<tool_call>\n{\"name\": \"a\", \"parameters\": {\"x\": 1}}\n{\"name\": \"b\", \"parameters\": {}}\n</tool_call>\n<response>\ndone\n</response>";
        let out = parse_executor(t);
        assert!(out.issues.is_empty(), "{:?}", kinds(&out));
        let calls = out.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments["x"], 1);
        assert_eq!(out.style, CallStyle::ToolRl);
        assert_eq!(out.response.as_deref(), Some("done"));
        assert_eq!(out.think.as_deref(), Some("ok"));
    }

    #[test]
    fn hermes_blocks_multiline_json() {
        let t = "<think>x</think>\n<tool_call>\n{\"name\": \"a\",\n \"arguments\": {\"x\": \"y\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"k\\\": 2}\"}\n</tool_call>";
        let out = parse_executor(t);
        assert!(out.issues.is_empty(), "{:?}", kinds(&out));
        let calls = out.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments["k"], 2);
        assert_eq!(out.style, CallStyle::Hermes);
    }

    #[test]
    fn reports_missing_think_and_unclosed_call() {
        let out = parse_executor("<tool_call>\n{\"name\": \"a\", \"parameters\": {}}");
        assert!(out.issues.contains(&ParseIssue::MissingTag {
            tag: "think".into()
        }));
        assert!(out.issues.contains(&ParseIssue::UnclosedTag {
            tag: "tool_call".into()
        }));
        // the call is still read, for partial credit
        assert_eq!(out.calls().len(), 1);
    }

    #[test]
    fn reports_invalid_json_per_line() {
        let out = parse_executor("<think>t</think>\n<tool_call>\n{\"name\": \"a\", \"parameters\": {}}\n{name: b}\n</tool_call>");
        assert_eq!(out.calls().len(), 1);
        assert_eq!(out.entries.len(), 2);
        assert!(matches!(
            out.entries[1].issues[0],
            ParseIssue::InvalidJson {
                block: 0,
                line: 2,
                ..
            }
        ));
    }

    #[test]
    fn reports_shape_errors() {
        let out = parse_executor("<think>t</think><tool_call>\n[1, {\"parameters\": {}}, {\"name\": \"x\", \"parameters\": [1]}]\n</tool_call>");
        let k: Vec<_> = out.entries.iter().map(|e| e.issues[0].clone()).collect();
        assert!(matches!(k[0], ParseIssue::NotAnObject { .. }));
        assert!(matches!(k[1], ParseIssue::MissingName { .. }));
        assert!(matches!(k[2], ParseIssue::BadArguments { .. }));
    }

    #[test]
    fn reports_missing_action_stray_text_and_empty() {
        let out = parse_executor("<think>t</think> hello");
        assert!(out.issues.contains(&ParseIssue::MissingTag {
            tag: "tool_call or response".into()
        }));
        assert!(out
            .issues
            .iter()
            .any(|i| matches!(i, ParseIssue::TextOutsideTags { .. })));
        assert_eq!(parse_executor("  ").issues, vec![ParseIssue::Empty]);
        let out = parse_executor("<think>a</think></response>");
        assert!(out.issues.contains(&ParseIssue::UnopenedTag {
            tag: "response".into()
        }));
    }

    #[test]
    fn tool_call_inside_think_is_not_a_call() {
        let out = parse_executor(
            "<think>I could <tool_call>{}</tool_call></think><response>no</response>",
        );
        assert!(out.calls().is_empty());
        assert!(!out.has_tool_call_block);
        assert!(out.issues.is_empty(), "{:?}", kinds(&out));
    }

    #[test]
    fn long_output_is_cut_and_reported() {
        let t = format!("<think>{}</think>", "é".repeat(MAX_OUTPUT_BYTES));
        let out = parse_executor(&t);
        assert_eq!(
            out.issues[0],
            ParseIssue::TooLong {
                limit: MAX_OUTPUT_BYTES
            }
        );
    }
}

//! Benchmark items as [`Task`]s, so a rollout can run BFCL, API-Bank and NESTFUL items in a
//! [`super::static_world::StaticWorld`] (their tools are not executable; scoring is static, see
//! `crate::score`).
use std::path::Path;

use serde_json::Value;

use super::{Task, ToolSchema, WorldError};
use crate::score::{apibank, bfcl, nestful};

fn data_err(dir: &Path, msg: String) -> WorldError {
    WorldError::Data {
        path: dir.display().to_string(),
        msg,
    }
}

fn first_user_text(question: &Value) -> String {
    // BFCL: [[{role, content}, …], …] — the user messages of the first turn
    question
        .get(0)
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// BFCL items of `category` (world `bfcl`); gold calls are the first acceptable options.
pub fn bfcl_tasks(dir: &Path, category: &str) -> Result<Vec<Task>, WorldError> {
    let items = bfcl::load_category(dir, category).map_err(|e| data_err(dir, e))?;
    Ok(items
        .into_iter()
        .map(|it| {
            let tools = it
                .functions
                .iter()
                .filter_map(|f| serde_json::from_value::<ToolSchema>(f.clone()).ok())
                .collect();
            let gold_calls = bfcl::gold_calls(&it);
            Task {
                id: it.id.clone(),
                world: "bfcl".into(),
                split: None,
                request: first_user_text(&it.question),
                tools,
                gold_plan: Vec::new(),
                gold_derived: vec![Vec::new(); gold_calls.len()],
                gold_calls,
                gold_final_state: None,
                gold_answer: None,
                template: Some(it.category),
            }
        })
        .collect())
}

/// Tool names and descriptions listed in an API-Bank system prompt (`N. Name: …` /
/// `Description: …` / `Parameters: {python dict}`); parameters are read when the Python literal
/// converts cleanly to JSON.
pub fn apibank_tools(system: &str) -> Vec<ToolSchema> {
    let mut tools: Vec<ToolSchema> = Vec::new();
    for line in system.lines() {
        let l = line.trim();
        if let Some(rest) = l.split_once(". Name: ").map(|(_, r)| r) {
            tools.push(ToolSchema {
                name: rest.trim().to_string(),
                description: String::new(),
                parameters: Value::Null,
            });
        } else if let (Some(d), Some(t)) = (l.strip_prefix("Description: "), tools.last_mut()) {
            t.description = d.to_string();
        } else if let (Some(p), Some(t)) = (l.strip_prefix("Parameters: "), tools.last_mut()) {
            let props = py_literal_to_json(p).unwrap_or(Value::Object(Default::default()));
            let props = match props {
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .map(|(k, mut v)| {
                            if let Some(ty) = v.get("type").and_then(Value::as_str) {
                                let json_ty = match ty {
                                    "str" => "string",
                                    "int" => "integer",
                                    "float" => "number",
                                    "bool" => "boolean",
                                    "list" => "array",
                                    "dict" => "object",
                                    other => other,
                                };
                                v["type"] = Value::String(json_ty.to_string());
                            }
                            (k, v)
                        })
                        .collect(),
                ),
                other => other,
            };
            t.parameters =
                serde_json::json!({"type": "object", "properties": props, "required": []});
        }
    }
    for t in &mut tools {
        if t.parameters.is_null() {
            t.parameters = serde_json::json!({"type": "object", "properties": {}, "required": []});
        }
    }
    tools
}

/// Convert a simple Python literal (dicts, lists, single- or double-quoted strings, numbers,
/// True/False/None) to JSON; `None` when it is not one.
pub fn py_literal_to_json(s: &str) -> Option<Value> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push('"');
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            if e == '\'' {
                                out.push('\'');
                            } else {
                                out.push('\\');
                                out.push(e);
                            }
                        }
                    } else if d == c {
                        closed = true;
                        break;
                    } else if d == '"' {
                        out.push_str("\\\"");
                    } else {
                        out.push(d);
                    }
                }
                if !closed {
                    return None;
                }
                out.push('"');
            }
            c if c.is_ascii_alphabetic() => {
                let mut word = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        word.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(match word.as_str() {
                    "True" => "true",
                    "False" => "false",
                    "None" => "null",
                    _ => return None,
                });
            }
            other => out.push(other),
        }
    }
    serde_json::from_str(&out).ok()
}

/// API-Bank items (world `api-bank`): the dialogue is the request, the tools come from the
/// system prompt.
pub fn apibank_tasks(dir: &Path, category: Option<&str>) -> Result<Vec<Task>, WorldError> {
    let items = apibank::load(dir, category).map_err(|e| data_err(dir, e))?;
    Ok(items
        .into_iter()
        .map(|it| Task {
            id: it.id.clone(),
            world: "api-bank".into(),
            split: None,
            request: it.user.clone(),
            tools: apibank_tools(&it.system),
            gold_plan: Vec::new(),
            gold_derived: vec![Vec::new(); it.answer.len()],
            gold_calls: it.answer,
            gold_final_state: None,
            gold_answer: None,
            template: Some(it.category),
        })
        .collect())
}

/// NESTFUL items (world `nestful`) with the tools of their `*-spec.json`; arguments that
/// reference earlier outputs (`$varN…$`) are marked as derived.
pub fn nestful_tasks(dir: &Path, category: Option<&str>) -> Result<Vec<Task>, WorldError> {
    let items = nestful::load(dir, category).map_err(|e| data_err(dir, e))?;
    let mut specs: std::collections::HashMap<String, Vec<ToolSchema>> = Default::default();
    let mut out = Vec::new();
    for it in items {
        if !specs.contains_key(&it.category) {
            let path = dir.join(format!("non-executable-{}-spec.json", it.category));
            let tools = if path.exists() {
                nestful::load_spec(&path).map_err(|e| data_err(dir, e))?
            } else {
                Vec::new()
            };
            specs.insert(it.category.clone(), tools);
        }
        let names: std::collections::HashSet<&str> =
            it.gold.iter().map(|c| c.name.as_str()).collect();
        let tools = specs
            .get(&it.category)
            .map(|t| {
                t.iter()
                    .filter(|s| names.contains(s.name.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let gold_derived = it
            .gold
            .iter()
            .map(|c| {
                c.arguments
                    .iter()
                    .filter(|(_, v)| v.as_str().is_some_and(|s| s.contains("$var")))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .collect();
        out.push(Task {
            id: it.id.clone(),
            world: "nestful".into(),
            split: None,
            request: it.input.clone(),
            tools,
            gold_plan: Vec::new(),
            gold_calls: it.gold,
            gold_derived,
            gold_final_state: None,
            gold_answer: None,
            template: Some(it.category),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literals_convert() {
        let v = py_literal_to_json(
            "{'a': {'type': 'str', 'description': \"it's\"}, 'b': [True, None, 1.5]}",
        )
        .unwrap();
        assert_eq!(v["a"]["type"], "str");
        assert_eq!(v["a"]["description"], "it's");
        assert_eq!(v["b"], serde_json::json!([true, null, 1.5]));
        assert!(py_literal_to_json("{'a': import}").is_none());
        assert!(py_literal_to_json("{'a").is_none());
    }

    #[test]
    fn apibank_system_prompt_tools() {
        let sys = "**Available Tools**\n1. Name: QueryHealthData\nDescription: Queries data.\nParameters: {'user_id': {'type': 'str', 'description': 'The id.'}}\n2. Name: Cancel\nDescription: Cancels.\nParameters: {}\n";
        let t = apibank_tools(sys);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "QueryHealthData");
        assert_eq!(t[0].property("user_id").unwrap()["type"], "string");
        assert_eq!(t[1].description, "Cancels.");
    }
}

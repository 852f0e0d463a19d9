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

/// ToolRL's SFT/RL data (`rlla_sft.json`: `{instruction, input, output}`; world `toolrl`): the
/// instruction lists the tools as API-Bank's system prompt does, the input holds the dialogue,
/// the output's `<tool_call>` lines are the gold calls. Items without a parsable call (answers
/// that only respond) are skipped: they have nothing for a planner or executor to learn.
pub fn toolrl_tasks(dir: &Path) -> Result<Vec<Task>, WorldError> {
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
            world: "toolrl".into(),
            split: None,
            request,
            tools: apibank_tools(instruction),
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

/// A gold plan for benchmark items, which come with gold calls only: one sub-task per call
/// that names the tool and states every argument value (derived ones as "from the earlier
/// result"). Used by `separate` mode (executor on gold sub-tasks) and by `sft`.
pub fn synth_gold_plan(task: &Task) -> Vec<String> {
    task.gold_calls
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let derived = task.gold_derived.get(k);
            let args: Vec<String> = c
                .arguments
                .iter()
                .map(|(a, v)| {
                    if derived.is_some_and(|d| d.contains(a)) {
                        format!("{a} from the earlier result")
                    } else {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        format!("{a} {v}")
                    }
                })
                .collect();
            if args.is_empty() {
                format!("Call {}.", c.name)
            } else {
                format!("Call {} with {}.", c.name, args.join(", "))
            }
        })
        .collect()
}

/// Split benchmark tasks into (train, held-out): a seeded shuffle, the last `held_out` items
/// held out (at most half of the tasks).
pub fn split_held_out(mut tasks: Vec<Task>, held_out: usize, seed: u64) -> (Vec<Task>, Vec<Task>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x5eed_0001));
    tasks.shuffle(&mut rng);
    let n = held_out.min(tasks.len() / 2);
    let held = tasks.split_off(tasks.len() - n);
    (tasks, held)
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
        let t = toolrl_tasks(dir.path()).unwrap();
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
        let e = toolrl_tasks(dir.path()).unwrap_err().to_string();
        assert!(e.contains("rlla_sft.json"), "{e}");
        std::fs::write(dir.path().join("rlla_sft.json"), "[{\"instruction\": 1}]").unwrap();
        let e = toolrl_tasks(dir.path()).unwrap_err().to_string();
        assert!(e.contains("item 0") && e.contains("instruction"), "{e}");
    }

    #[test]
    fn derived_arguments_are_not_stated_in_synthesized_plans() {
        let task = Task {
            id: "x".into(),
            world: "nestful".into(),
            split: None,
            request: "r".into(),
            tools: vec![],
            gold_plan: vec![],
            gold_calls: vec![
                crate::parse::ToolCall::new("a", serde_json::json!({})),
                crate::parse::ToolCall::new("b", serde_json::json!({"x": "$var1.y$", "n": 2})),
            ],
            gold_derived: vec![vec![], vec!["x".into()]],
            gold_final_state: None,
            gold_answer: None,
            template: None,
        };
        let plan = synth_gold_plan(&task);
        assert_eq!(plan[0], "Call a.");
        assert_eq!(plan[1], "Call b with x from the earlier result, n 2.");
    }

    #[test]
    fn held_out_split_is_seeded_disjoint_and_at_most_half() {
        let mk = |i: usize| Task {
            id: format!("t{i}"),
            world: "toolrl".into(),
            split: None,
            request: String::new(),
            tools: vec![],
            gold_plan: vec![],
            gold_calls: vec![],
            gold_derived: vec![],
            gold_final_state: None,
            gold_answer: None,
            template: None,
        };
        let tasks: Vec<Task> = (0..10).map(mk).collect();
        let (a, b) = split_held_out(tasks.clone(), 3, 5);
        let (a2, b2) = split_held_out(tasks.clone(), 3, 5);
        assert_eq!((a.len(), b.len()), (7, 3));
        assert_eq!(a, a2);
        assert_eq!(b, b2);
        assert!(b.iter().all(|t| !a.contains(t)));
        let (_, b3) = split_held_out(tasks.clone(), 3, 6);
        assert_ne!(b, b3, "another seed holds out other items");
        let (a4, b4) = split_held_out(tasks, 100, 5);
        assert_eq!((a4.len(), b4.len()), (5, 5));
    }
}

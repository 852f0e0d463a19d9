//! BFCL (Berkeley Function-Calling Leaderboard): the loader for the `BFCL_v4_<category>.json`
//! files (questions and `possible_answer/`), the items as [`Task`]s for the static world, the
//! ground truth as gold calls, and scoring with the AST [`checker`].
pub mod checker;

pub use checker::{check, simple_function_checker, standardize_string, CheckError};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::score::{verdict, Prediction, ScoreError, Verdict};
use super::{data_err, BenchError, LoadError};
use crate::parse::{ToolCall, ToolSchema};
use crate::worlds::Task;

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "bfcl";

/// One BFCL question with its function docs and ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BfclItem {
    pub id: String,
    pub category: String,
    /// The user turns (first turn's messages).
    pub question: Value,
    pub functions: Vec<Value>,
    /// `[{func_name: {param: [options…]}}]`; `None` for irrelevance/relevance.
    pub ground_truth: Option<Vec<Value>>,
}

/// Categories this checker supports (single-turn AST categories), in the order they are listed.
pub fn category_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let rd = std::fs::read_dir(dir).map_err(LoadError::io(dir))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(cat) = name
            .strip_prefix("BFCL_v4_")
            .and_then(|s| s.strip_suffix(".json"))
        else {
            continue;
        };
        if supported_category(cat) {
            out.push((cat.to_string(), e.path()));
        }
    }
    if out.is_empty() {
        // An empty folder would otherwise score "0/0" and look like a result.
        return Err(LoadError::Bad {
            path: dir.to_path_buf(),
            msg: "no BFCL category file (BFCL_v4_<category>.json of a supported category) here"
                .into(),
        });
    }
    out.sort();
    Ok(out)
}

/// Single-turn Python AST categories (multi-turn, Java, JavaScript, SQL, REST, format-sensitivity
/// and memory/web-search categories are not scored here).
pub fn supported_category(cat: &str) -> bool {
    let bad = [
        "multi_turn",
        "java",
        "javascript",
        "sql",
        "rest",
        "exec",
        "memory",
        "web_search",
        "format",
    ];
    !bad.iter().any(|b| cat.contains(b))
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(LoadError::io(path))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| LoadError::JsonLine {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Load one category from the BFCL folder (questions and `possible_answer/`).
pub fn load_category(dir: &Path, category: &str) -> Result<Vec<BfclItem>, LoadError> {
    let qpath = dir.join(format!("BFCL_v4_{category}.json"));
    let apath = dir
        .join("possible_answer")
        .join(format!("BFCL_v4_{category}.json"));
    let questions = read_jsonl(&qpath)?;
    let answers = if apath.exists() {
        Some(read_jsonl(&apath)?)
    } else {
        None
    };
    let mut by_id = std::collections::HashMap::new();
    if let Some(a) = &answers {
        for v in a {
            if let (Some(id), Some(gt)) =
                (v.get("id").and_then(Value::as_str), v.get("ground_truth"))
            {
                by_id.insert(id.to_string(), gt.clone());
            }
        }
    }
    let needs_answer = !category.contains("relevance");
    questions
        .into_iter()
        .map(|q| {
            let id = q
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| LoadError::bad(&qpath, "item without id"))?;
            let functions = match q.get("function") {
                Some(Value::Array(a)) => a.clone(),
                Some(Value::Object(o)) => vec![Value::Object(o.clone())],
                _ => return Err(LoadError::bad(&qpath, format!("{id} has no function list"))),
            };
            let ground_truth = match by_id.get(id) {
                Some(Value::Array(a)) => Some(a.clone()),
                Some(_) => {
                    return Err(LoadError::bad(
                        &apath,
                        format!("{id} ground_truth is not a list"),
                    ))
                }
                None if needs_answer => {
                    return Err(LoadError::bad(&apath, format!("no ground truth for {id}")))
                }
                None => None,
            };
            Ok(BfclItem {
                id: id.to_string(),
                category: category.to_string(),
                question: q.get("question").cloned().unwrap_or(Value::Null),
                functions,
                ground_truth,
            })
        })
        .collect()
}

/// Items of every supported category in `dir` (only `category`'s when given), category by
/// category in file-name order. A `category` that is not one of the folder's supported category
/// files is [`ScoreError::UnknownCategory`].
pub fn load_items(dir: &Path, category: Option<&str>) -> Result<Vec<BfclItem>, ScoreError> {
    let cats = category_files(dir)?;
    if let Some(c) = category {
        if !cats.iter().any(|(n, _)| n == c) {
            return Err(ScoreError::UnknownCategory(c.to_string()));
        }
    }
    let mut out = Vec::new();
    for (cat, _) in cats
        .into_iter()
        .filter(|(c, _)| category.is_none_or(|x| x == c))
    {
        out.extend(load_category(dir, &cat)?);
    }
    Ok(out)
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

/// A BFCL item as a task of world `bfcl`; its gold calls are the first acceptable options.
pub fn task(it: BfclItem) -> Task {
    let tools = it
        .functions
        .iter()
        .filter_map(|f| serde_json::from_value::<ToolSchema>(f.clone()).ok())
        .collect();
    let gold_calls = gold_calls(&it);
    Task {
        id: it.id.clone(),
        world: WORLD_NAME.into(),
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
}

/// The items of [`load_items`] as tasks (world `bfcl`).
pub fn load_tasks(dir: &Path, category: Option<&str>) -> Result<Vec<Task>, BenchError> {
    let items = load_items(dir, category).map_err(|e| match e {
        ScoreError::Data(msg) => BenchError::World(data_err(dir, msg)),
        ScoreError::Load(e) => BenchError::World(data_err(dir, e.to_string())),
        other => other.into(),
    })?;
    Ok(items.into_iter().map(task).collect())
}

fn is_empty_str(v: &Value) -> bool {
    v.as_str() == Some("")
}

fn answer_name(possible: &Value) -> &str {
    possible
        .as_object()
        .and_then(|m| m.keys().next())
        .map(String::as_str)
        .unwrap_or("")
}

fn find_description<'a>(funcs: &'a [Value], name: &str) -> Option<&'a Value> {
    funcs
        .iter()
        .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
}

fn first_option(options: &Value) -> Option<Value> {
    match options {
        Value::Array(a) => a.iter().find(|o| !is_empty_str(o)).cloned(),
        other if !is_empty_str(other) => Some(other.clone()),
        _ => None,
    }
}

fn gold_dict(opt: &Value) -> Value {
    match opt {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter_map(|(k, opts)| first_option(opts).map(|v| (k.clone(), v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The ground truth turned into calls: for each parameter the first acceptable option (omitting
/// parameters whose only option is `""`, and omittable parameters the function does not
/// declare), with dict options resolved the same way.
pub fn gold_calls(item: &BfclItem) -> Vec<ToolCall> {
    let mut out = Vec::new();
    for possible in item.ground_truth.as_deref().unwrap_or(&[]) {
        let name = answer_name(possible);
        let func = find_description(&item.functions, name);
        let mut args = Map::new();
        if let Some(Value::Object(params)) = possible.get(name) {
            for (p, options) in params {
                let detail = func
                    .and_then(|f| f.get("parameters"))
                    .and_then(|p| p.get("properties"))
                    .and_then(|d| d.get(p));
                let omittable = options
                    .as_array()
                    .is_some_and(|a| a.iter().any(is_empty_str));
                // a few ground truths list an omittable parameter that the function does not
                // declare (e.g. parallel_multiple_12, _26): a faithful prediction leaves it out
                if detail.is_none() && omittable {
                    continue;
                }
                let Some(v) = first_option(options) else {
                    continue;
                };
                let ty = detail
                    .and_then(|d| d.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let item_ty = detail
                    .and_then(|d| d.get("items"))
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let v = match (ty, &v) {
                    ("dict", _) => gold_dict(&v),
                    ("array" | "tuple", Value::Array(items)) if item_ty == "dict" => {
                        Value::Array(items.iter().map(gold_dict).collect())
                    }
                    _ => v,
                };
                args.insert(p.clone(), v);
            }
        }
        out.push(ToolCall {
            name: name.to_string(),
            arguments: args,
        });
    }
    out
}

/// One verdict per item of `dir` (or of `category`), by BFCL's AST checker; items without a
/// prediction are wrong.
pub fn verdicts(
    dir: &Path,
    category: Option<&str>,
    by_id: &HashMap<&str, &Prediction>,
) -> Result<Vec<Verdict>, ScoreError> {
    Ok(load_items(dir, category)?
        .iter()
        .map(|item| {
            let r = match by_id.get(item.id.as_str()) {
                Some(p) => check(item, &p.to_calls()).map_err(|e| e.to_string()),
                None => Err("no prediction".to_string()),
            };
            verdict(&item.id, &item.category, r.err(), None)
        })
        .collect())
}

/// The gold calls of every item as predictions.
pub fn gold_predictions(dir: &Path, category: Option<&str>) -> Result<Vec<Prediction>, ScoreError> {
    Ok(load_items(dir, category)?
        .iter()
        .map(|item| Prediction::from_calls(item.id.clone(), gold_calls(item)))
        .collect())
}

//! NESTFUL (non-executable): requests whose gold call sequences reference earlier outputs
//! (`$var1.distance$`). Item id `<file stem>-<index>`, category `glaive` / `sgd`. The final
//! `var_result` pseudo-call (which only names the outputs) is left out of both sides. A
//! prediction is fully correct iff it has the same calls in the same order with equal arguments
//! (references compared as written); partial credit is the share of gold positions matched.
use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::score::{verdict, Prediction, ScoreError, Verdict};
use super::{data_err, LoadError};
use crate::parse::{ToolCall, ToolSchema};
use crate::pyval::py_eq;
use crate::worlds::{Task, WorldError};

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "nestful";

/// One NESTFUL item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NestfulItem {
    pub id: String,
    pub category: String,
    pub input: String,
    pub gold: Vec<ToolCall>,
}

fn category_of(stem: &str) -> String {
    stem.trim_start_matches("non-executable-")
        .trim_end_matches("-data")
        .to_string()
}

/// Load `*-data.json` files from `dir` (or only the one whose category is `category`).
pub fn load(dir: &Path, category: Option<&str>) -> Result<Vec<NestfulItem>, LoadError> {
    let rd = std::fs::read_dir(dir).map_err(LoadError::io(dir))?;
    let mut files: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-data.json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let cat = category_of(&stem);
        if category.is_some_and(|c| c != cat) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(LoadError::io(&path))?;
        let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(LoadError::json(&path))?;
        for (i, it) in items.iter().enumerate() {
            let Some(Value::Array(calls)) = it.get("output") else {
                return Err(LoadError::bad(
                    &path,
                    format!("item {i} has no output list"),
                ));
            };
            let gold = calls
                .iter()
                .filter(|c| c.get("name").and_then(Value::as_str) != Some("var_result"))
                .map(|c| serde_json::from_value::<ToolCall>(c.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| LoadError::bad(&path, format!("item {i}: {e}")))?;
            out.push(NestfulItem {
                id: format!("{stem}-{i}"),
                category: cat.clone(),
                input: it
                    .get("input")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                gold,
            });
        }
    }
    if out.is_empty() {
        return Err(LoadError::bad(dir, "no NESTFUL items"));
    }
    Ok(out)
}

/// Tool schemas from a `*-spec.json` file (`query_parameters` with `required` flags).
pub fn load_spec(path: &Path) -> Result<Vec<ToolSchema>, LoadError> {
    let bytes = std::fs::read(path).map_err(LoadError::io(path))?;
    let specs: Vec<Value> = serde_json::from_slice(&bytes).map_err(LoadError::json(path))?;
    Ok(specs
        .iter()
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?.to_string();
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            if let Some(q) = s.get("query_parameters").and_then(Value::as_object) {
                for (k, p) in q {
                    let mut prop = serde_json::Map::new();
                    if let Some(t) = p.get("type") {
                        prop.insert("type".into(), t.clone());
                    }
                    if let Some(d) = p.get("description") {
                        prop.insert("description".into(), d.clone());
                    }
                    props.insert(k.clone(), Value::Object(prop));
                    if p.get("required").and_then(Value::as_bool) == Some(true) {
                        required.push(Value::String(k.clone()));
                    }
                }
            }
            Some(ToolSchema {
                name,
                description: s.get("description").and_then(Value::as_str).unwrap_or("").to_string(),
                parameters: serde_json::json!({"type": "object", "properties": props, "required": required}),
            })
        })
        .collect())
}

fn norm(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.trim().to_string()),
        Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

/// Whether two calls match (name and arguments; strings trimmed).
pub fn call_matches(p: &ToolCall, g: &ToolCall) -> bool {
    p.name == g.name
        && py_eq(
            &norm(&Value::Object(p.arguments.clone())),
            &norm(&Value::Object(g.arguments.clone())),
        )
}

/// (full-sequence match, share of gold positions matched in place).
pub fn score(item: &NestfulItem, calls: &[ToolCall]) -> (bool, f64) {
    let calls: Vec<&ToolCall> = calls.iter().filter(|c| c.name != "var_result").collect();
    if item.gold.is_empty() {
        return (calls.is_empty(), if calls.is_empty() { 1.0 } else { 0.0 });
    }
    let hits = item
        .gold
        .iter()
        .enumerate()
        .filter(|(i, g)| calls.get(*i).is_some_and(|p| call_matches(p, g)))
        .count();
    let full = hits == item.gold.len() && calls.len() == item.gold.len();
    (full, hits as f64 / item.gold.len() as f64)
}

/// NESTFUL items (world `nestful`) with the tools of their `*-spec.json`; arguments that
/// reference earlier outputs (`$varN…$`) are marked as derived.
pub fn load_tasks(dir: &Path, category: Option<&str>) -> Result<Vec<Task>, WorldError> {
    let items = load(dir, category).map_err(|e| data_err(dir, e.to_string()))?;
    let mut specs: std::collections::HashMap<String, Vec<ToolSchema>> = Default::default();
    let mut out = Vec::new();
    for it in items {
        if !specs.contains_key(&it.category) {
            let path = dir.join(format!("non-executable-{}-spec.json", it.category));
            let tools = if path.exists() {
                load_spec(&path).map_err(|e| data_err(dir, e.to_string()))?
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
            world: WORLD_NAME.into(),
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

/// One verdict per item of `dir` (or of `category`), with the share of gold positions matched
/// as partial credit.
pub fn verdicts(
    dir: &Path,
    category: Option<&str>,
    by_id: &HashMap<&str, &Prediction>,
) -> Result<Vec<Verdict>, ScoreError> {
    Ok(load(dir, category)?
        .iter()
        .map(|item| {
            let (r, partial) = match by_id.get(item.id.as_str()) {
                Some(p) => {
                    let (full, part) = score(item, &p.to_calls());
                    (
                        if full {
                            Ok(())
                        } else {
                            Err("call sequence differs from gold".to_string())
                        },
                        part,
                    )
                }
                None => (Err("no prediction".to_string()), 0.0),
            };
            verdict(&item.id, &item.category, r.err(), Some(partial))
        })
        .collect())
}

/// The gold call sequences of every item as predictions.
pub fn gold_predictions(dir: &Path, category: Option<&str>) -> Result<Vec<Prediction>, ScoreError> {
    Ok(load(dir, category)?
        .into_iter()
        .map(|i| Prediction::from_calls(i.id, i.gold))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn full_and_partial() {
        let it = NestfulItem {
            id: "x-0".into(),
            category: "x".into(),
            input: String::new(),
            gold: vec![
                ToolCall::new("route", json!({"a": "NY"})),
                ToolCall::new("pace", json!({"d": "$var1.distance$"})),
            ],
        };
        assert_eq!(score(&it, &it.gold.clone()), (true, 1.0));
        assert_eq!(score(&it, &[it.gold[0].clone()]), (false, 0.5));
        let wrong_ref = ToolCall::new("pace", json!({"d": "$var2.distance$"}));
        assert_eq!(score(&it, &[it.gold[0].clone(), wrong_ref]), (false, 0.5));
        let mut extra = it.gold.clone();
        extra.push(ToolCall::new("x", json!({})));
        assert_eq!(score(&it, &extra), (false, 1.0));
    }
}

//! API-Bank as processed by ToolRL (`level-1.json`, `level-2.json`): item id
//! `<file stem>-<index>`; a prediction is correct iff its call list equals the answer exactly
//! (same length and order, same names, same parameters and values), as in ToolRL's evaluator.
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pyval::py_eq;
use crate::parse::ToolCall;

/// One API-Bank item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiBankItem {
    pub id: String,
    /// File stem (`level-1`, `level-2`).
    pub category: String,
    pub system: String,
    pub user: String,
    pub answer: Vec<ToolCall>,
}

/// Load every `level-*.json` in `dir` (or only `category`).
pub fn load(dir: &Path, category: Option<&str>) -> Result<Vec<ApiBankItem>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<_> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().starts_with("level-"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        if category.is_some_and(|c| c != stem) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let items: Vec<Value> =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, it) in items.iter().enumerate() {
            let answer = match it.get("answer") {
                Some(Value::Array(a)) => a.clone(),
                Some(o @ Value::Object(_)) => vec![o.clone()],
                _ => return Err(format!("{}: item {i} has no answer", path.display())),
            };
            let answer = answer
                .into_iter()
                .map(serde_json::from_value::<ToolCall>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: item {i}: {e}", path.display()))?;
            out.push(ApiBankItem {
                id: format!("{stem}-{i}"),
                category: stem.clone(),
                system: it
                    .get("system")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                user: it
                    .get("user")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                answer,
            });
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{}: no API-Bank items{}",
            dir.display(),
            category.map(|c| format!(" for {c}")).unwrap_or_default()
        ));
    }
    Ok(out)
}

/// Exact match of the call list; `Err` says what differs first.
pub fn check(item: &ApiBankItem, calls: &[ToolCall]) -> Result<(), String> {
    if calls.len() != item.answer.len() {
        return Err(format!(
            "expected {} call(s), got {}",
            item.answer.len(),
            calls.len()
        ));
    }
    for (i, (p, g)) in calls.iter().zip(&item.answer).enumerate() {
        if p.name != g.name {
            return Err(format!("call {i}: expected {:?}, got {:?}", g.name, p.name));
        }
        let pa = Value::Object(p.arguments.clone());
        let ga = Value::Object(g.arguments.clone());
        if !py_eq(&pa, &ga) {
            return Err(format!(
                "call {i} ({}): expected parameters {ga}, got {pa}",
                g.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_match_only() {
        let it = ApiBankItem {
            id: "level-1-0".into(),
            category: "level-1".into(),
            system: String::new(),
            user: String::new(),
            answer: vec![ToolCall::new("A", json!({"x": "1", "y": "b"}))],
        };
        assert!(check(&it, &[ToolCall::new("A", json!({"y": "b", "x": "1"}))]).is_ok());
        assert!(check(&it, &[ToolCall::new("A", json!({"x": "1"}))]).is_err());
        assert!(check(&it, &[ToolCall::new("A", json!({"x": "1", "y": "B"}))]).is_err());
        assert!(check(&it, &[ToolCall::new("B", json!({"x": "1", "y": "b"}))]).is_err());
        assert!(check(&it, &[]).is_err());
    }
}

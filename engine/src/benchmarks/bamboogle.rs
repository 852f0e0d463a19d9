//! Bamboogle two-hop search QA: question loader and answer judging (normalized exact match and
//! containment; there is no LLM judge offline). The questions run in the generic BM25
//! [`crate::worlds::search::SearchWorld`].
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::score::{verdict, Prediction, ScoreError, Verdict};
use crate::worlds::search::search_tool;
use crate::worlds::{Task, WorldError};

/// Name of the world in [`Task::world`].
pub const WORLD_NAME: &str = "bamboogle";

/// Load `bamboogle.json` (`[{Question, Answer}]`) from `dir` as tasks `bamboogle-<index>`.
pub fn load_tasks(dir: &Path) -> Result<Vec<Task>, WorldError> {
    let path = dir.join("bamboogle.json");
    let data = |msg: String| WorldError::Data {
        path: path.display().to_string(),
        msg,
    };
    let bytes = std::fs::read(&path).map_err(|e| data(e.to_string()))?;
    let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| data(e.to_string()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let q = it
                .get("Question")
                .and_then(Value::as_str)
                .ok_or_else(|| data(format!("item {i}: no Question")))?;
            let a = it
                .get("Answer")
                .and_then(Value::as_str)
                .ok_or_else(|| data(format!("item {i}: no Answer")))?;
            Ok(Task {
                id: format!("bamboogle-{i}"),
                world: WORLD_NAME.into(),
                split: None,
                request: q.to_string(),
                tools: vec![search_tool()],
                gold_plan: Vec::new(),
                gold_calls: Vec::new(),
                gold_derived: Vec::new(),
                gold_final_state: None,
                gold_answer: Some(a.to_string()),
                template: None,
            })
        })
        .collect()
}

/// SQuAD-style normalization: lowercase, drop punctuation and the articles a/an/the, collapse
/// whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalized exact match.
pub fn exact_match(prediction: &str, gold: &str) -> bool {
    let g = normalize_answer(gold);
    !g.is_empty() && normalize_answer(prediction) == g
}

/// The normalized gold answer occurs in the normalized prediction (on word boundaries).
pub fn contains_match(prediction: &str, gold: &str) -> bool {
    let g = normalize_answer(gold);
    if g.is_empty() {
        return false;
    }
    let p = format!(" {} ", normalize_answer(prediction));
    p.contains(&format!(" {g} "))
}

/// The answer part of a raw model output: `<answer>…</answer>`, else `<response>…</response>`,
/// else the whole text.
pub fn extract_answer(text: &str) -> String {
    for tag in ["answer", "response"] {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        if let Some(i) = text.rfind(&open) {
            let rest = &text[i + open.len()..];
            let end = rest.find(&close).unwrap_or(rest.len());
            return rest[..end].trim().to_string();
        }
    }
    text.trim().to_string()
}

/// One verdict per question: correct on a normalized exact match of the answer; containment
/// of the gold answer is the partial credit.
pub fn verdicts(
    dir: &Path,
    category: Option<&str>,
    by_id: &HashMap<&str, &Prediction>,
) -> Result<Vec<Verdict>, ScoreError> {
    let tasks = load_tasks(dir).map_err(|e| ScoreError::Data(e.to_string()))?;
    if category.is_some_and(|c| c != WORLD_NAME) {
        return Err(ScoreError::UnknownCategory(
            category.unwrap_or_default().to_string(),
        ));
    }
    Ok(tasks
        .iter()
        .map(|t| {
            let gold = t.gold_answer.clone().unwrap_or_default();
            let (r, contains) = match by_id.get(t.id.as_str()) {
                Some(p) => {
                    let ans = p.answer_text();
                    let em = exact_match(&ans, &gold);
                    let r = if em {
                        Ok(())
                    } else {
                        Err(format!("expected {gold:?}, got {ans:?}"))
                    };
                    (r, contains_match(&ans, &gold))
                }
                None => (Err("no prediction".to_string()), false),
            };
            verdict(
                &t.id,
                WORLD_NAME,
                r.err(),
                Some(if contains { 1.0 } else { 0.0 }),
            )
        })
        .collect())
}

/// The gold answers as `<answer>` predictions.
pub fn gold_predictions(dir: &Path) -> Result<Vec<Prediction>, ScoreError> {
    Ok(load_tasks(dir)
        .map_err(|e| ScoreError::Data(e.to_string()))?
        .into_iter()
        .map(|t| {
            Prediction::from_text(
                t.id,
                format!("<answer>{}</answer>", t.gold_answer.unwrap_or_default()),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_answers() {
        assert!(exact_match("The James Madison.", "james madison"));
        assert!(!exact_match("president James Madison", "james madison"));
        assert!(contains_match("president James Madison", "james madison"));
        assert!(!contains_match("madisonville", "madison"));
        assert!(!exact_match("", ""));
        assert_eq!(
            extract_answer("<think>x</think><answer> Titan IIIE </answer>"),
            "Titan IIIE"
        );
        assert_eq!(extract_answer("<response>Paris</response>"), "Paris");
        assert_eq!(extract_answer("Rome"), "Rome");
    }
}

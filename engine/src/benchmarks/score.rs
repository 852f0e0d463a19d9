//! Shared scoring types: predictions (calls or raw model text) and how they are read, one
//! [`Verdict`] per item, and the [`ScoreReport`] with accuracy per category and overall. Each
//! benchmark's module scores its own items; [`super::Bench::score`] is the entry point behind
//! `cahl-tui score`.
//!
//! ```no_run
//! use cahl_engine::benchmarks::{Bench, Prediction};
//! let preds = vec![Prediction::from_text("simple_python_0", "<think>t</think><tool_call>\n{\"name\": \"calculate_triangle_area\", \"parameters\": {\"base\": 10, \"height\": 5}}\n</tool_call>")];
//! let report = Bench::Bfcl.score(std::path::Path::new("../shared/data/bfcl"), Some("simple_python"), &preds).unwrap();
//! println!("{}", report.summary());
//! ```
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{bamboogle, Bench};
use crate::parse::{parse_executor, ToolCall};

/// Errors of the scoring entry points.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Load(#[from] super::LoadError),
    #[error("{path} line {line}: {msg}")]
    Prediction {
        path: String,
        line: usize,
        msg: String,
    },
    #[error("unknown benchmark {0:?} (expected bfcl, api-bank, nestful or bamboogle)")]
    UnknownBench(String),
    #[error("unknown category {0:?}")]
    UnknownCategory(String),
}

/// Largest prediction line accepted, in bytes.
pub const MAX_PREDICTION_LINE: usize = 256 * 1024;

/// One model prediction: either parsed calls or the raw model output. Other fields (metadata
/// that tools add) are ignored by [`read_predictions`], with one warning per file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Prediction {
    pub fn from_calls(id: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Prediction {
            id: id.into(),
            calls: Some(calls),
            text: None,
        }
    }
    pub fn from_text(id: impl Into<String>, text: impl Into<String>) -> Self {
        Prediction {
            id: id.into(),
            calls: None,
            text: Some(text.into()),
        }
    }

    /// The calls of this prediction: `calls` as given, or the calls parsed from `text` (executor
    /// format; a bare JSON call or list of calls is accepted too).
    pub fn to_calls(&self) -> Vec<ToolCall> {
        if let Some(c) = &self.calls {
            return c.clone();
        }
        let Some(text) = &self.text else {
            return Vec::new();
        };
        let out = parse_executor(text);
        if out.has_tool_call_block {
            return out.calls();
        }
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
            Ok(v @ Value::Object(_)) => serde_json::from_value(v)
                .map(|c| vec![c])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// The final answer text (search QA).
    pub fn answer_text(&self) -> String {
        match &self.text {
            Some(t) => bamboogle::extract_answer(t),
            None => String::new(),
        }
    }
}

/// Read a predictions JSONL file.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, ScoreError> {
    let f = std::fs::File::open(path)
        .map_err(|e| ScoreError::Data(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut warned = false;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let err = |msg: String| ScoreError::Prediction {
            path: path.display().to_string(),
            line: i + 1,
            msg,
        };
        let line = line.map_err(|e| err(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_PREDICTION_LINE {
            return Err(err(format!("line longer than {MAX_PREDICTION_LINE} bytes")));
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
        if let Some(o) = v.as_object() {
            let extra: Vec<&String> = o
                .keys()
                .filter(|k| !["id", "calls", "text"].contains(&k.as_str()))
                .collect();
            if !extra.is_empty() && !warned {
                warned = true;
                tracing::warn!(
                    "{} line {}: ignoring fields {extra:?} (only id, calls and text are read)",
                    path.display(),
                    i + 1
                );
            }
        }
        let p: Prediction = serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
        if p.calls.is_none() && p.text.is_none() {
            return Err(err("needs \"calls\" or \"text\"".into()));
        }
        out.push(p);
    }
    Ok(out)
}

/// Verdict on one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub id: String,
    pub correct: bool,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Partial credit where the benchmark has one (NESTFUL per-call match, Bamboogle containment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<f64>,
}

/// Accuracy of one category.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryScore {
    pub correct: usize,
    pub total: usize,
    /// Mean partial credit, where the benchmark has one.
    pub partial: Option<f64>,
}

impl CategoryScore {
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Scores of one benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReport {
    pub bench: Bench,
    pub per_category: BTreeMap<String, CategoryScore>,
    pub overall: CategoryScore,
    pub verdicts: Vec<Verdict>,
    /// Predictions whose id is not an item of the scored data.
    pub unmatched_predictions: usize,
    /// What the partial column means, if any.
    pub partial_label: Option<String>,
}

impl ScoreReport {
    pub(crate) fn from_verdicts(
        bench: Bench,
        verdicts: Vec<Verdict>,
        unmatched: usize,
        partial_label: Option<&str>,
    ) -> Self {
        let mut per: BTreeMap<String, (CategoryScore, f64, usize)> = BTreeMap::new();
        let mut all = (CategoryScore::default(), 0.0, 0usize);
        for v in &verdicts {
            let cat = v.category.clone().unwrap_or_default();
            for slot in [per.entry(cat).or_default(), &mut all] {
                slot.0.total += 1;
                slot.0.correct += usize::from(v.correct);
                if let Some(p) = v.partial {
                    slot.1 += p;
                    slot.2 += 1;
                }
            }
        }
        let fin = |(mut s, sum, n): (CategoryScore, f64, usize)| {
            s.partial = (n > 0).then(|| sum / n as f64);
            s
        };
        ScoreReport {
            bench,
            per_category: per.into_iter().map(|(k, v)| (k, fin(v))).collect(),
            overall: fin(all),
            verdicts,
            unmatched_predictions: unmatched,
            partial_label: partial_label.map(str::to_string),
        }
    }

    /// A printable table: accuracy per category and overall.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let pl = self.partial_label.as_deref();
        for (cat, c) in self
            .per_category
            .iter()
            .chain(std::iter::once((&"overall".to_string(), &self.overall)))
        {
            s.push_str(&format!(
                "{cat:<28} {:>5}/{:<5} {:>6.2}%",
                c.correct,
                c.total,
                100.0 * c.accuracy()
            ));
            if let (Some(p), Some(label)) = (c.partial, pl) {
                s.push_str(&format!("   {label}: {:.2}%", 100.0 * p));
            }
            s.push('\n');
        }
        if self.unmatched_predictions > 0 {
            s.push_str(&format!(
                "({} predictions had ids not in the data)\n",
                self.unmatched_predictions
            ));
        }
        s
    }
}

pub(crate) fn index_predictions(preds: &[Prediction]) -> HashMap<&str, &Prediction> {
    preds.iter().map(|p| (p.id.as_str(), p)).collect()
}

/// The verdict on item `id` of `category`: correct when there is no `error`.
pub(crate) fn verdict(
    id: &str,
    category: &str,
    error: Option<String>,
    partial: Option<f64>,
) -> Verdict {
    Verdict {
        id: id.to_string(),
        correct: error.is_none(),
        error,
        category: Some(category.to_string()),
        partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #23: metadata fields that tools add are ignored; a line missing what is required is not.
    #[test]
    fn predictions_with_extra_fields_are_read_and_incomplete_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.jsonl");
        std::fs::write(
            &p,
            "{\"id\": \"a\", \"text\": \"x\", \"model\": \"m\", \"latency\": 1.5}\n",
        )
        .unwrap();
        let got = read_predictions(&p).unwrap();
        assert_eq!(
            (got[0].id.as_str(), got[0].text.as_deref()),
            ("a", Some("x"))
        );
        std::fs::write(&p, "{\"text\": \"x\", \"model\": \"m\"}\n").unwrap();
        let e = read_predictions(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("id"), "{e}");
        std::fs::write(&p, "{\"id\": \"a\", \"model\": \"m\"}\n").unwrap();
        let e = read_predictions(&p).unwrap_err().to_string();
        assert!(e.contains("needs \"calls\" or \"text\""), "{e}");
    }

    /// #23: a folder without any BFCL category file is an error, not a score of 0/0.
    #[test]
    fn bfcl_without_category_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Bench::Bfcl
            .score(dir.path(), None, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no BFCL category file"), "{e}");
    }

    #[test]
    fn prediction_text_is_parsed() {
        let p = Prediction::from_text("a", "<think>x</think>\n<tool_call>\n{\"name\": \"f\", \"parameters\": {\"k\": 1}}\n</tool_call>");
        assert_eq!(p.to_calls()[0].name, "f");
        let p = Prediction::from_text("a", "[{\"name\": \"f\", \"arguments\": {}}]");
        assert_eq!(p.to_calls().len(), 1);
        let p = Prediction::from_text("a", "no calls here");
        assert!(p.to_calls().is_empty());
        assert_eq!(
            Prediction::from_text("a", "<response>Paris</response>").answer_text(),
            "Paris"
        );
    }

    #[test]
    fn report_counts_per_category() {
        let v = |id: &str, cat: &str, ok: bool| verdict(id, cat, (!ok).then(|| "e".into()), None);
        let r = ScoreReport::from_verdicts(
            Bench::Bfcl,
            vec![v("1", "a", true), v("2", "a", false), v("3", "b", true)],
            0,
            None,
        );
        assert_eq!(r.per_category["a"].correct, 1);
        assert_eq!(r.per_category["a"].total, 2);
        assert_eq!(r.overall.correct, 2);
        assert!((r.overall.accuracy() - 2.0 / 3.0).abs() < 1e-9);
        assert!(r.summary().contains("overall"));
    }
}

//! Benchmark scoring entry points behind `cahl-tui score`: read predictions (calls or raw model
//! text), score them against BFCL, API-Bank, NESTFUL or Bamboogle, and report accuracy per
//! category and overall, plus one verdict per item.
//!
//! ```no_run
//! use cahl_engine::score::{score_bench, Bench, Prediction};
//! let preds = vec![Prediction::from_text("simple_python_0", "<think>t</think><tool_call>\n{\"name\": \"calculate_triangle_area\", \"parameters\": {\"base\": 10, \"height\": 5}}\n</tool_call>")];
//! let report = score_bench(Bench::Bfcl, std::path::Path::new("../shared/data/bfcl"), Some("simple_python"), &preds).unwrap();
//! println!("{}", report.summary());
//! ```
pub mod apibank;
pub mod bfcl;
pub mod nestful;
pub mod pyval;

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::parse::{parse_executor, ToolCall};
use crate::worlds::bamboogle;

/// Errors of the scoring entry points.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{0}")]
    Data(String),
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

/// Benchmarks `cahl-tui score` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bench {
    Bfcl,
    ApiBank,
    Nestful,
    Bamboogle,
}

impl std::str::FromStr for Bench {
    type Err = ScoreError;
    fn from_str(s: &str) -> Result<Self, ScoreError> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "bfcl" => Ok(Bench::Bfcl),
            "api-bank" | "apibank" => Ok(Bench::ApiBank),
            "nestful" => Ok(Bench::Nestful),
            "bamboogle" => Ok(Bench::Bamboogle),
            _ => Err(ScoreError::UnknownBench(s.to_string())),
        }
    }
}

/// Largest prediction line accepted, in bytes.
pub const MAX_PREDICTION_LINE: usize = 256 * 1024;

/// One model prediction: either parsed calls or the raw model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
        let p: Prediction = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
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
    fn from_verdicts(
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

fn index_predictions(preds: &[Prediction]) -> HashMap<&str, &Prediction> {
    preds.iter().map(|p| (p.id.as_str(), p)).collect()
}

fn verdict(id: &str, category: &str, result: Result<(), String>, partial: Option<f64>) -> Verdict {
    Verdict {
        id: id.to_string(),
        correct: result.is_ok(),
        error: result.err(),
        category: Some(category.to_string()),
        partial,
    }
}

/// Score `predictions` against benchmark data in `dir`; items with no prediction count as wrong.
pub fn score_bench(
    bench: Bench,
    dir: &Path,
    category: Option<&str>,
    predictions: &[Prediction],
) -> Result<ScoreReport, ScoreError> {
    let by_id = index_predictions(predictions);
    let mut used = 0usize;
    let mut verdicts = Vec::new();
    let missing = || Err("no prediction".to_string());
    let partial_label = match bench {
        Bench::Bfcl => {
            let cats = bfcl::category_files(dir).map_err(ScoreError::Data)?;
            let cats: Vec<String> = match category {
                Some(c) if cats.iter().any(|(n, _)| n == c) => vec![c.to_string()],
                Some(c) => return Err(ScoreError::UnknownCategory(c.to_string())),
                None => cats.into_iter().map(|(n, _)| n).collect(),
            };
            for cat in cats {
                for item in bfcl::load_category(dir, &cat).map_err(ScoreError::Data)? {
                    let r = match by_id.get(item.id.as_str()) {
                        Some(p) => {
                            used += 1;
                            bfcl::check(&item, &p.to_calls()).map_err(|e| e.to_string())
                        }
                        None => missing(),
                    };
                    verdicts.push(verdict(&item.id, &cat, r, None));
                }
            }
            None
        }
        Bench::ApiBank => {
            for item in apibank::load(dir, category).map_err(ScoreError::Data)? {
                let r = match by_id.get(item.id.as_str()) {
                    Some(p) => {
                        used += 1;
                        apibank::check(&item, &p.to_calls())
                    }
                    None => missing(),
                };
                verdicts.push(verdict(&item.id, &item.category, r, None));
            }
            None
        }
        Bench::Nestful => {
            for item in nestful::load(dir, category).map_err(ScoreError::Data)? {
                let (r, partial) = match by_id.get(item.id.as_str()) {
                    Some(p) => {
                        used += 1;
                        let (full, part) = nestful::score(&item, &p.to_calls());
                        (
                            if full {
                                Ok(())
                            } else {
                                Err("call sequence differs from gold".to_string())
                            },
                            part,
                        )
                    }
                    None => (missing(), 0.0),
                };
                verdicts.push(verdict(&item.id, &item.category, r, Some(partial)));
            }
            Some("per-call match")
        }
        Bench::Bamboogle => {
            let tasks = bamboogle::load_tasks(dir).map_err(|e| ScoreError::Data(e.to_string()))?;
            if category.is_some_and(|c| c != "bamboogle") {
                return Err(ScoreError::UnknownCategory(
                    category.unwrap_or_default().to_string(),
                ));
            }
            for t in tasks {
                let gold = t.gold_answer.clone().unwrap_or_default();
                let (r, contains) = match by_id.get(t.id.as_str()) {
                    Some(p) => {
                        used += 1;
                        let ans = p.answer_text();
                        let em = bamboogle::exact_match(&ans, &gold);
                        let r = if em {
                            Ok(())
                        } else {
                            Err(format!("expected {gold:?}, got {ans:?}"))
                        };
                        (r, bamboogle::contains_match(&ans, &gold))
                    }
                    None => (missing(), false),
                };
                verdicts.push(verdict(
                    &t.id,
                    "bamboogle",
                    r,
                    Some(if contains { 1.0 } else { 0.0 }),
                ));
            }
            Some("contains (no LLM judge offline)")
        }
    };
    let unmatched = predictions.len().saturating_sub(used);
    Ok(ScoreReport::from_verdicts(
        bench,
        verdicts,
        unmatched,
        partial_label,
    ))
}

/// Gold answers of a benchmark as predictions (used to check the scorers score 100% on gold).
pub fn gold_predictions(
    bench: Bench,
    dir: &Path,
    category: Option<&str>,
) -> Result<Vec<Prediction>, ScoreError> {
    Ok(match bench {
        Bench::Bfcl => {
            let cats = bfcl::category_files(dir).map_err(ScoreError::Data)?;
            let mut out = Vec::new();
            for (cat, _) in cats
                .into_iter()
                .filter(|(c, _)| category.is_none_or(|x| x == c))
            {
                for item in bfcl::load_category(dir, &cat).map_err(ScoreError::Data)? {
                    out.push(Prediction::from_calls(
                        item.id.clone(),
                        bfcl::gold_calls(&item),
                    ));
                }
            }
            out
        }
        Bench::ApiBank => apibank::load(dir, category)
            .map_err(ScoreError::Data)?
            .into_iter()
            .map(|i| Prediction::from_calls(i.id, i.answer))
            .collect(),
        Bench::Nestful => nestful::load(dir, category)
            .map_err(ScoreError::Data)?
            .into_iter()
            .map(|i| Prediction::from_calls(i.id, i.gold))
            .collect(),
        Bench::Bamboogle => bamboogle::load_tasks(dir)
            .map_err(|e| ScoreError::Data(e.to_string()))?
            .into_iter()
            .map(|t| {
                Prediction::from_text(
                    t.id,
                    format!("<answer>{}</answer>", t.gold_answer.unwrap_or_default()),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v = |id: &str, cat: &str, ok: bool| {
            verdict(id, cat, if ok { Ok(()) } else { Err("e".into()) }, None)
        };
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

    #[test]
    fn bench_names_parse() {
        assert_eq!("api-bank".parse::<Bench>().unwrap(), Bench::ApiBank);
        assert_eq!("BFCL".parse::<Bench>().unwrap(), Bench::Bfcl);
        assert!("x".parse::<Bench>().is_err());
    }
}

//! Other engines' runs as sessions, read-only: verl's rollout dumps and TRL's completions
//! logs, converted into a session directory that `replay` opens like one of ours.
//!
//! * **verl** (`trainer.rollout_data_dir`): one `{step}.jsonl` per training step, one line per
//!   sample with `input` (the decoded prompt), `output` (the decoded response), `score`,
//!   `step`, optionally `gts`, and every `reward_extra_info` key.
//! * **TRL** (`GRPOTrainer`'s completions table, `log_completions`): rows with `step`,
//!   `prompt`, `completion` (text, or chat messages), one column per reward function and
//!   `advantage`; read as JSON Lines (one row per line) or as a W&B table export
//!   (`{"columns": [...], "data": [[...], ...]}`). Parquet is not read: convert it first.
//!
//! Each sample becomes one trajectory of the step with one executor sample: the completion as
//! raw text, its tool calls parsed with our parsers (Hermes/ToolRL tags), the score (verl) or the
//! sum of the reward columns (TRL) as the reward, the other numeric columns as its components,
//! the rest as reasons, and TRL's advantage. Success comes only from an explicit column (`acc`,
//! `accuracy`, `correct`, `is_correct`, `success`); without one it is unknown and recorded as
//! not solved, and the summary says so. Metrics per step are the means.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cahl_sessions::records::{
    ExecSample, MetricsRecord, PlanRecord, RewardBreakdown, RunInfo, StepRecord, TaskInfo,
    TrajectoryRecord,
};
use cahl_sessions::SessionWriter;
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};
use crate::parse::{call_record, parse_executor};

/// Which engine wrote the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// verl's `rollout_data_dir` (a folder of `{step}.jsonl`, or one of them).
    Verl,
    /// TRL's completions table (JSON Lines or a W&B table export).
    Trl,
}

impl Foreign {
    /// How the session names it (`run.json` mode).
    pub fn name(self) -> &'static str {
        match self {
            Foreign::Verl => "verl",
            Foreign::Trl => "trl",
        }
    }
}

/// Columns that say whether a sample solved its task.
const SUCCESS_KEYS: [&str; 5] = ["acc", "accuracy", "correct", "is_correct", "success"];

fn bad(path: &Path, why: impl std::fmt::Display) -> EngineError {
    EngineError::load(path, why.to_string())
}

/// The `{step}.jsonl` files of a verl dump folder, by step.
fn verl_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| {
                    let stem = p.file_stem()?.to_str()?;
                    let step = stem.parse::<u64>().ok()?;
                    (p.extension()? == "jsonl").then_some((step, p))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn first_object(path: &Path) -> Option<Map<String, Value>> {
    let text = nan_to_null(&std::fs::read_to_string(path).ok()?);
    let t = text.trim_start();
    if t.starts_with('{') {
        // a whole-file JSON object (a W&B table) or the first JSON line
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(t) {
            return Some(m);
        }
        let line = t.lines().next()?;
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
            return Some(m);
        }
    }
    None
}

/// What `path` holds, when it is another engine's run: a folder of verl `{step}.jsonl` dumps,
/// one of them, or a TRL completions table. `None`: not recognised.
pub fn detect(path: &Path) -> Option<Foreign> {
    if path.is_dir() {
        let files = verl_files(path);
        let (_, first) = files.first()?;
        let m = first_object(first)?;
        return ["input", "output", "score"]
            .iter()
            .all(|k| m.contains_key(*k))
            .then_some(Foreign::Verl);
    }
    let m = first_object(path)?;
    if ["input", "output", "score"]
        .iter()
        .all(|k| m.contains_key(*k))
    {
        return Some(Foreign::Verl);
    }
    let cols: Vec<String> = match m.get("columns") {
        Some(Value::Array(c)) => c
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => m.keys().cloned().collect(),
    };
    ["prompt", "completion"]
        .iter()
        .all(|k| cols.iter().any(|c| c == k))
        .then_some(Foreign::Trl)
}

/// The user's request in a decoded chat prompt: the last user turn of a ChatML, Llama-3 or
/// Qwen template when one is visible, else the text itself.
fn request_of(prompt: &str) -> String {
    for (open, close) in [
        ("<|im_start|>user\n", "<|im_end|>"),
        ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>"),
    ] {
        if let Some(i) = prompt.rfind(open) {
            let rest = &prompt[i + open.len()..];
            let end = rest.find(close).unwrap_or(rest.len());
            return rest[..end].trim().to_string();
        }
    }
    prompt.trim().to_string()
}

/// Text of a TRL prompt or completion: a string, or chat messages (the last user message for a
/// prompt, the assistant contents for a completion).
fn text_of(v: &Value, prompt: bool) -> (String, String) {
    match v {
        Value::String(s) => (request_of(s), s.clone()),
        Value::Array(msgs) => {
            let content = |m: &Value| {
                m.get("content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let full = msgs
                .iter()
                .map(|m| {
                    format!(
                        "[{}]\n{}",
                        m.get("role").and_then(Value::as_str).unwrap_or("?"),
                        content(m)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            let short = if prompt {
                msgs.iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                    .map(content)
                    .unwrap_or_else(|| full.clone())
            } else {
                msgs.iter().map(content).collect::<Vec<_>>().join("\n")
            };
            (short, full)
        }
        Value::Null => (String::new(), String::new()),
        other => (other.to_string(), other.to_string()),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(*b as u8 as f64),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One imported sample.
struct Sample {
    step: u64,
    request: String,
    prompt: String,
    completion: String,
    reward: f64,
    components: BTreeMap<String, f64>,
    reasons: Vec<String>,
    advantage: Option<f64>,
    success: Option<bool>,
}

/// The extra columns of a row: numbers as components, other values as reasons, and success
/// from an accuracy column.
fn extras(
    row: &Map<String, Value>,
    skip: &[&str],
) -> (BTreeMap<String, f64>, Vec<String>, Option<bool>) {
    let mut comps = BTreeMap::new();
    let mut reasons = Vec::new();
    let mut success = None;
    for (k, v) in row {
        if skip.contains(&k.as_str()) {
            continue;
        }
        if SUCCESS_KEYS.contains(&k.as_str()) {
            if let Some(x) = number(v) {
                success = Some(x > 0.5);
            }
        }
        match v {
            Value::Number(_) | Value::Bool(_) => {
                if let Some(x) = number(v) {
                    comps.insert(k.clone(), x);
                }
            }
            Value::Null => {}
            Value::String(s) => reasons.push(format!("{k}: {s}")),
            other => reasons.push(format!("{k}: {other}")),
        }
    }
    (comps, reasons, success)
}

fn verl_sample(row: &Map<String, Value>, at: &str, path: &Path) -> Result<Sample> {
    let get_str = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_string);
    let input = get_str("input").ok_or_else(|| bad(path, format!("{at}: no \"input\" text")))?;
    let output = get_str("output").ok_or_else(|| bad(path, format!("{at}: no \"output\" text")))?;
    let score = row
        .get("score")
        .and_then(number)
        .ok_or_else(|| bad(path, format!("{at}: \"score\" is not a number")))?;
    let step = row
        .get("step")
        .and_then(number)
        .map(|s| s as u64)
        .ok_or_else(|| bad(path, format!("{at}: \"step\" is not a number")))?;
    let (components, mut reasons, success) =
        extras(row, &["input", "output", "score", "step", "gts"]);
    if let Some(g) = row.get("gts").filter(|v| !v.is_null()) {
        reasons.insert(
            0,
            format!(
                "gts: {}",
                g.as_str().map(str::to_string).unwrap_or(g.to_string())
            ),
        );
    }
    Ok(Sample {
        step,
        request: request_of(&input),
        prompt: input,
        completion: output,
        reward: score,
        components,
        reasons,
        advantage: None,
        success,
    })
}

fn trl_sample(row: &Map<String, Value>, at: &str, path: &Path) -> Result<Sample> {
    let (request, prompt) = text_of(
        row.get("prompt")
            .ok_or_else(|| bad(path, format!("{at}: no \"prompt\"")))?,
        true,
    );
    let (completion, _) = text_of(
        row.get("completion")
            .ok_or_else(|| bad(path, format!("{at}: no \"completion\"")))?,
        false,
    );
    let step = row
        .get("step")
        .and_then(number)
        .map(|s| s as u64)
        .ok_or_else(|| bad(path, format!("{at}: \"step\" is not a number")))?;
    let advantage = row.get("advantage").and_then(number);
    let (components, reasons, success) = extras(
        row,
        &[
            "prompt",
            "completion",
            "step",
            "advantage",
            "mode",
            "image",
            "images",
        ],
    );
    // TRL's reward is the (weighted) sum of its reward functions; the table holds each
    // function's value, so the sum with weight 1 is shown (weights are not in the table); with
    // no reward value at all it is unknown.
    let values: Vec<f64> = components
        .iter()
        .filter(|(k, _)| !SUCCESS_KEYS.contains(&k.as_str()))
        .map(|(_, v)| *v)
        .collect();
    let reward = if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum()
    };
    Ok(Sample {
        step,
        request,
        prompt,
        completion,
        reward,
        components,
        reasons,
        advantage,
        success,
    })
}

/// `text` with Python's non-JSON number tokens (`NaN`, `Infinity`, `-Infinity`, which
/// `json.dumps` writes by default) outside strings replaced by `null`.
fn nan_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else {
            let word = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|w| rest.starts_with(w));
            if let Some(w) = word {
                out.push_str("null");
                rest = &rest[w.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The JSON objects of a JSON Lines file (blank lines skipped), or of a W&B table export.
fn rows_of(path: &Path) -> Result<Vec<(String, Map<String, Value>)>> {
    let text = nan_to_null(&std::fs::read_to_string(path).map_err(|e| bad(path, e))?);
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text.trim()) {
        if let (Some(Value::Array(cols)), Some(Value::Array(data))) =
            (m.get("columns"), m.get("data"))
        {
            let names: Vec<String> = cols
                .iter()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect();
            return data
                .iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::Array(cells) => Ok((
                        format!("row {}", i + 1),
                        names.iter().cloned().zip(cells.iter().cloned()).collect(),
                    )),
                    _ => Err(bad(
                        path,
                        format!("row {} of \"data\" is not a list", i + 1),
                    )),
                })
                .collect();
        }
        return Ok(vec![("line 1".into(), m)]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => out.push((format!("line {}", i + 1), m)),
            Ok(_) => return Err(bad(path, format!("line {}: not a JSON object", i + 1))),
            Err(e) => return Err(bad(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

/// What an import found.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The session written.
    pub session: PathBuf,
    /// Samples read.
    pub samples: usize,
    /// Steps (metrics lines).
    pub steps: usize,
    /// Whether the files had a success column.
    pub success_known: bool,
    /// Completions whose tool calls parsed into at least one call.
    pub with_calls: usize,
}

/// Reads `path` (a [`Foreign`] run) and writes it as a session into `out` (a folder that does
/// not hold a session yet).
pub fn import(path: &Path, kind: Foreign, out: &Path) -> Result<Imported> {
    let files: Vec<PathBuf> = match (kind, path.is_dir()) {
        (Foreign::Verl, true) => verl_files(path).into_iter().map(|(_, p)| p).collect(),
        _ => vec![path.to_path_buf()],
    };
    let mut samples = Vec::new();
    for f in &files {
        for (at, row) in rows_of(f)? {
            samples.push(match kind {
                Foreign::Verl => verl_sample(&row, &at, f)?,
                Foreign::Trl => trl_sample(&row, &at, f)?,
            });
        }
    }
    if samples.is_empty() {
        return Err(bad(path, "holds no samples"));
    }
    samples.sort_by_key(|s| s.step);
    let last = samples.last().map_or(0, |s| s.step);
    let info = RunInfo::new(
        format!("{} run {}", kind.name(), path.display()),
        kind.name(),
        last,
        0,
        "-",
    );
    let mut w = SessionWriter::create(out, "", &info).map_err(|e| bad(out, e))?;
    let success_known = samples.iter().any(|s| s.success.is_some());
    let mut with_calls = 0;
    let mut by_step: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_step.entry(s.step).or_default().push(i);
    }
    for (step, idx) in &by_step {
        for (n, &i) in idx.iter().enumerate() {
            let s = &samples[i];
            let parsed = parse_executor(&s.completion);
            let calls: Vec<_> = parsed.calls().iter().map(call_record).collect();
            with_calls += !calls.is_empty() as usize;
            let reward = RewardBreakdown {
                total: s.reward,
                components: s.components.clone(),
                reasons: s.reasons.clone(),
                weights: BTreeMap::new(),
            };
            let sample = ExecSample {
                raw_text: s.completion.clone(),
                calls,
                parse_error: parsed.issues.first().map(|i| i.message()),
                observation: None,
                reward,
                advantage: s.advantage,
                step_return: None,
                tokens: 0,
            };
            let success = s.success.unwrap_or(false);
            let rec = TrajectoryRecord {
                step: *step,
                task: TaskInfo {
                    id: format!("{}-{step}-{n}", kind.name()),
                    split: "train".into(),
                    text: s.request.clone(),
                    gold_plan: vec![],
                    gold_calls: vec![],
                },
                seed: 0,
                plans: vec![PlanRecord {
                    steps: vec![StepRecord {
                        subtask_index: 0,
                        subtask: "completion".into(),
                        prompt: Some(s.prompt.clone()),
                        samples: vec![sample],
                        continued: 0,
                        execution: 0,
                    }],
                    success,
                    success_rate: s.success.map_or(f64::NAN, |b| b as u8 as f64),
                    ..PlanRecord::default()
                }],
                success,
                planner_reward: f64::NAN,
                executor_reward: s.reward,
                misaligned: false,
                mode: kind.name().to_string(),
                policy_version: None,
            };
            w.append_trajectory(&rec).map_err(|e| bad(out, e))?;
        }
        let n = idx.len() as f64;
        let mean =
            |f: &dyn Fn(&Sample) -> f64| idx.iter().map(|&i| f(&samples[i])).sum::<f64>() / n;
        let mut comps: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for &i in idx {
            for (k, v) in &samples[i].components {
                let e = comps.entry(format!("executor/{k}")).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        w.append_metrics(&MetricsRecord {
            step: *step,
            planner_reward: f64::NAN,
            executor_reward: mean(&|s| s.reward),
            success_rate: if success_known {
                mean(&|s| s.success.unwrap_or(false) as u8 as f64)
            } else {
                f64::NAN
            },
            components: comps
                .into_iter()
                .map(|(k, (s, c))| (k, s / c as f64))
                .collect(),
            ..MetricsRecord::default()
        })
        .map_err(|e| bad(out, e))?;
    }
    w.sync().map_err(|e| bad(out, e))?;
    Ok(Imported {
        session: out.to_path_buf(),
        samples: samples.len(),
        steps: by_step.len(),
        success_known,
        with_calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cahl_sessions::SessionReader;
    use serde_json::json;

    fn write_lines(p: &Path, rows: &[Value]) {
        let text: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        std::fs::write(p, text.join("\n") + "\n").unwrap();
    }

    #[test]
    fn a_verl_dump_reads_as_a_session() {
        let d = tempfile::tempdir().unwrap();
        let dump = d.path().join("rollouts");
        std::fs::create_dir(&dump).unwrap();
        let prompt = "<|im_start|>system\nYou call tools.<|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n";
        let good = "<think>look it up</think>\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}\n</tool_call>";
        for step in [1u64, 2] {
            write_lines(
                &dump.join(format!("{step}.jsonl")),
                &[
                    json!({"input": prompt, "output": good, "score": 1.0 + step as f64, "step": step,
                           "acc": true, "format": 1.0, "pred": "get_weather"}),
                    json!({"input": prompt, "output": "no idea", "score": 0.0, "step": step,
                           "acc": false, "format": 0.0, "pred": ""}),
                ],
            );
        }
        std::fs::write(dump.join("notes.txt"), "not a dump").unwrap();
        assert_eq!(detect(&dump), Some(Foreign::Verl));
        assert_eq!(detect(&dump.join("1.jsonl")), Some(Foreign::Verl));
        let out = d.path().join("session");
        let imp = import(&dump, Foreign::Verl, &out).unwrap();
        assert_eq!((imp.samples, imp.steps, imp.with_calls), (4, 2, 2));
        assert!(imp.success_known);
        let r = SessionReader::open(&out).unwrap();
        assert_eq!(r.metrics().len(), 2);
        let m = &r.metrics()[1];
        assert_eq!(m.step, 2);
        assert_eq!(m.executor_reward, 1.5);
        assert_eq!(m.success_rate, 0.5);
        assert_eq!(m.components["executor/format"], 0.5);
        let t = r.trajectory(0).unwrap();
        assert_eq!(t.task.text, "Weather in Oslo?");
        assert!(t.success);
        let s = &t.plans[0].steps[0].samples[0];
        assert_eq!(s.calls[0].name, "get_weather");
        assert_eq!(s.calls[0].arguments, json!({"city": "Oslo"}));
        assert_eq!(s.reward.total, 2.0);
        assert!(s.reward.reasons.iter().any(|x| x == "pred: get_weather"));
        assert_eq!(t.plans[0].steps[0].prompt.as_deref(), Some(prompt));
        let failed = r.trajectory(1).unwrap();
        assert!(!failed.success);
        assert!(failed.plans[0].steps[0].samples[0].calls.is_empty());
        assert_eq!(r.run_info().unwrap().mode, "verl");
    }

    #[test]
    fn trl_completions_read_as_a_session_from_jsonl_and_wandb_tables() {
        let d = tempfile::tempdir().unwrap();
        let rows = [
            json!({"step": "3", "prompt": [{"role": "system", "content": "tools"}, {"role": "user", "content": "Convert 3 kg"}],
                   "completion": [{"role": "assistant", "content": "<tool_call>\n{\"name\": \"convert_units\", \"arguments\": {\"value\": 3}}\n</tool_call>"}],
                   "format_reward": 1.0, "correctness_reward": 0.5, "advantage": 0.7}),
            json!({"step": "3", "prompt": "plain prompt", "completion": "nothing", "format_reward": 0.0,
                   "correctness_reward": null, "advantage": -0.7}),
        ];
        let jl = d.path().join("completions.jsonl");
        write_lines(&jl, &rows);
        assert_eq!(detect(&jl), Some(Foreign::Trl));
        let imp = import(&jl, Foreign::Trl, &d.path().join("s1")).unwrap();
        assert_eq!((imp.samples, imp.steps, imp.with_calls), (2, 1, 1));
        assert!(!imp.success_known);
        let r = SessionReader::open(d.path().join("s1")).unwrap();
        let t = r.trajectory(0).unwrap();
        assert_eq!(t.step, 3);
        assert_eq!(t.task.text, "Convert 3 kg");
        let s = &t.plans[0].steps[0].samples[0];
        assert_eq!(s.advantage, Some(0.7));
        assert_eq!(s.reward.total, 1.5);
        assert_eq!(s.calls[0].name, "convert_units");
        assert!(
            r.metrics()[0].success_rate.is_nan(),
            "success is unknown, not 0"
        );
        // The same rows as a W&B table export.
        let cols = [
            "step",
            "prompt",
            "completion",
            "format_reward",
            "correctness_reward",
            "advantage",
        ];
        let data: Vec<Value> = rows
            .iter()
            .map(|r| Value::Array(cols.iter().map(|c| r[*c].clone()).collect()))
            .collect();
        let wb = d.path().join("table.json");
        std::fs::write(&wb, json!({"columns": cols, "data": data}).to_string()).unwrap();
        assert_eq!(detect(&wb), Some(Foreign::Trl));
        let imp2 = import(&wb, Foreign::Trl, &d.path().join("s2")).unwrap();
        assert_eq!((imp2.samples, imp2.with_calls), (2, 1));
        let r2 = SessionReader::open(d.path().join("s2")).unwrap();
        // (compared as JSON: NaN fields are not equal to themselves)
        assert_eq!(
            serde_json::to_string(&r2.trajectory(0).unwrap()).unwrap(),
            serde_json::to_string(&t).unwrap()
        );
    }

    #[test]
    fn python_nan_tokens_read_as_null_outside_strings() {
        assert_eq!(
            nan_to_null(r#"{"a": NaN, "b": -Infinity, "c": "NaN \" Infinity", "d": Infinity}"#),
            r#"{"a": null, "b": null, "c": "NaN \" Infinity", "d": null}"#
        );
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.jsonl");
        std::fs::write(
            &f,
            "{\"step\": 1, \"prompt\": \"p\", \"completion\": \"c\", \"r\": NaN, \"acc\": 1, \"success\": null}\n",
        )
        .unwrap();
        let imp = import(&f, Foreign::Trl, &d.path().join("s")).unwrap();
        assert!(
            imp.success_known,
            "a later null success column does not erase acc"
        );
        let t = SessionReader::open(d.path().join("s"))
            .unwrap()
            .trajectory(0)
            .unwrap();
        assert!(t.success);
        assert!(
            t.executor_reward.is_nan(),
            "no reward value: unknown, not 0"
        );
    }

    #[test]
    fn bad_rows_are_named_and_unknown_files_not_taken() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("7.jsonl");
        write_lines(
            &f,
            &[json!({"input": "p", "output": "o", "score": "high", "step": 7})],
        );
        let e = import(&f, Foreign::Verl, &d.path().join("s"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("7.jsonl") && e.contains("line 1") && e.contains("score"),
            "{e}"
        );
        let other = d.path().join("x.jsonl");
        write_lines(&other, &[json!({"a": 1})]);
        assert_eq!(detect(&other), None);
        assert_eq!(detect(d.path().join("missing.jsonl").as_path()), None);
    }
}

//! ToolRL's flat reward (the baseline), as ToolRL's `verl/utils/reward_score/rlla.py` computes
//! it with its default settings: the output is trimmed; format in {format_min, format_max} from
//! the layout the gold answer calls for (`<think>…</think>\n<tool_call>\n…\n</tool_call>`,
//! one `<tool_call>` block holding every call of the turn, one JSON object per line); tool-call
//! correctness in [correct_min, correct_max]: the maximum for a call list equal to the gold one
//! (Python `==`: order of calls, value types: `1 == 1.0` but `1 != "1"`), else tool-name overlap
//! plus, per gold call, the best unused same-name prediction's parameter-name overlap and exact
//! value matches, normalized by `1 + Σ_gold (1 + #params)`; the minimum when the output has no
//! `<tool_call>` block or a line of its first block is not a JSON object with `name` (and, for a
//! prediction named like a gold call, an object `parameters`).
use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RewardBreakdown, RewardConfig};
use crate::parse::{clip, ToolCall, MAX_OUTPUT_BYTES};

/// What the gold answer of a ToolRL-style example contains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRlGold {
    pub calls: Vec<ToolCall>,
    pub has_tool_call: bool,
    pub has_response: bool,
}

impl ToolRlGold {
    /// From gold calls (no response expected when there are calls, a response otherwise).
    pub fn from_calls(calls: Vec<ToolCall>) -> Self {
        let has_tool_call = !calls.is_empty();
        ToolRlGold {
            calls,
            has_tool_call,
            has_response: !has_tool_call,
        }
    }

    /// From a gold output text in ToolRL's format.
    pub fn from_text(text: &str) -> Self {
        let has_tool_call = text.contains("<tool_call>");
        let calls = extract_calls(text).unwrap_or_default();
        ToolRlGold {
            calls,
            has_tool_call,
            has_response: text.contains("<response>"),
        }
    }
}

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("static regex"))
}

/// The calls of the first `<tool_call>` block as rlla.py reads them: the text between the
/// first `<tool_call>` and the next `</tool_call>`, trimmed, split at `\n`, each line one JSON
/// value. `None` where rlla.py's `json.loads` fails (an empty or malformed line).
fn first_block_values(text: &str) -> Option<Vec<Value>> {
    let after = text.split("<tool_call>").nth(1)?;
    let inner = after.split("</tool_call>").next().unwrap_or("");
    inner
        .trim()
        .split('\n')
        .map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

/// The calls of a gold text's `<tool_call>` block, one per line.
fn extract_calls(text: &str) -> Option<Vec<ToolCall>> {
    first_block_values(text)?
        .into_iter()
        .map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// rlla.py's layout check on the trimmed output.
fn format_ok(text: &str, gold: &ToolRlGold) -> bool {
    static RESP: OnceLock<Regex> = OnceLock::new();
    static CALL: OnceLock<Regex> = OnceLock::new();
    static BOTH: OnceLock<Regex> = OnceLock::new();
    static THINK: OnceLock<Regex> = OnceLock::new();
    let count = |s: &str| text.matches(s).count();
    // Python's `$` also matches before one final newline.
    match (gold.has_tool_call, gold.has_response) {
        (false, true) => {
            re(&RESP, r"(?s)\A<think>.*?</think>\n<response>.*?</response>\n?\z").is_match(text)
                && count("<response>") == 1
                && count("</response>") == 1
        }
        (true, false) => {
            re(&CALL, r"(?s)\A<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>\n?\z")
                .is_match(text)
                && count("<tool_call>") == 1
                && count("</tool_call>") == 1
        }
        (true, true) => {
            re(
                &BOTH,
                r"(?s)\A<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>\n<response>.*?</response>\n?\z",
            )
            .is_match(text)
                && count("<tool_call>") == 1
                && count("</tool_call>") == 1
                && count("<response>") == 1
                && count("</response>") == 1
        }
        (false, false) => re(&THINK, r"(?s)\A<think>.*?</think>\n?\z").is_match(text),
    }
}

/// ToolRL's `match_score`: 1 for equal lists, else |multiset ∩| / (|a| + |b| − |∩|).
fn match_score(a: &[&str], b: &[&str]) -> f64 {
    if a == b {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut ca: HashMap<&str, usize> = HashMap::new();
    for x in a {
        *ca.entry(x).or_default() += 1;
    }
    let mut cb: HashMap<&str, usize> = HashMap::new();
    for x in b {
        *cb.entry(x).or_default() += 1;
    }
    let inter: usize = ca
        .iter()
        .map(|(k, n)| (*n).min(cb.get(k).copied().unwrap_or(0)))
        .sum();
    let denom = a.len() + b.len() - inter;
    if denom == 0 {
        0.0
    } else {
        inter as f64 / denom as f64
    }
}

/// A gold call as rlla.py holds it: `{"name": …, "parameters": {…}}`.
fn gold_value(c: &ToolCall) -> Value {
    serde_json::json!({"name": c.name, "parameters": Value::Object(c.arguments.clone())})
}

/// rlla.py's `compute_tool_call_reward` before scaling: `(score, local max)`, or `None` where
/// it raises (a prediction that is not an object with `name`, or a same-name prediction whose
/// `parameters` is missing or not an object), which rlla.py scores as the minimum.
fn correctness(gold: &[Value], pred: &[Value]) -> Option<(f64, f64)> {
    let name = |v: &Value| v.as_object().and_then(|o| o.get("name")).cloned();
    let pn: Vec<Value> = pred.iter().map(name).collect::<Option<_>>()?;
    let gn: Vec<Value> = gold.iter().map(name).collect::<Option<_>>()?;
    let gk: Vec<String> = gn.iter().map(Value::to_string).collect();
    let pk: Vec<String> = pn.iter().map(Value::to_string).collect();
    let mut score = match_score(
        &gk.iter().map(String::as_str).collect::<Vec<_>>(),
        &pk.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut local_max = 1.0;
    let mut used = vec![false; pred.len()];
    for (g, g_name) in gold.iter().zip(&gn) {
        let gp = g.get("parameters").and_then(Value::as_object)?;
        local_max += 1.0 + gp.len() as f64;
        let mut best: Option<(usize, f64)> = None;
        for (i, p) in pred.iter().enumerate() {
            if used[i] || !crate::pyval::py_eq(&pn[i], g_name) {
                continue;
            }
            let pp = p.get("parameters").and_then(Value::as_object)?;
            let gkeys: Vec<&str> = gp.keys().map(String::as_str).collect();
            let pkeys: Vec<&str> = pp.keys().map(String::as_str).collect();
            let mut s = match_score(&gkeys, &pkeys);
            for (k, v) in gp {
                if pp.get(k).is_some_and(|pv| crate::pyval::py_eq(pv, v)) {
                    s += 1.0;
                }
            }
            if s > best.map_or(0.0, |b| b.1) {
                best = Some((i, s));
            }
        }
        if let Some((i, s)) = best {
            used[i] = true;
            score += s;
        }
    }
    Some((score, local_max))
}

/// ToolRL's reward: `format` ∈ {min, max} and `correctness` ∈ [min, max] (0 when the gold has
/// no call; the minimum when the output has no `<tool_call>` or a line is not a JSON call).
pub fn toolrl_reward(text: &str, gold: &ToolRlGold, cfg: &RewardConfig) -> RewardBreakdown {
    let c = &cfg.toolrl;
    let text = clip(text, MAX_OUTPUT_BYTES).trim();
    let mut b = RewardBreakdown::default();
    let fmt = format_ok(text, gold);
    if !fmt {
        b.reasons
            .push("layout does not match ToolRL's required format".into());
    }
    let correct = if !gold.has_tool_call {
        0.0
    } else if !text.contains("<tool_call>") || !text.contains("</tool_call>") {
        b.reasons.push("no <tool_call> block".into());
        c.correct_min
    } else {
        let gold_values: Vec<Value> = gold.calls.iter().map(gold_value).collect();
        match first_block_values(text) {
            None => {
                b.reasons.push("a tool_call line is not JSON".into());
                c.correct_min
            }
            Some(pred) => {
                let exact = crate::pyval::py_eq(
                    &Value::Array(pred.clone()),
                    &Value::Array(gold_values.clone()),
                );
                if exact {
                    c.correct_max
                } else {
                    match correctness(&gold_values, &pred) {
                        None => {
                            b.reasons
                                .push("a call lacks `name` or an object `parameters`".into());
                            c.correct_min
                        }
                        Some((s, m)) => {
                            b.reasons.push(format!("tool-call match {s:.2} of {m:.0}"));
                            (c.correct_max - c.correct_min) * s / m + c.correct_min
                        }
                    }
                }
            }
        }
    };
    b.push("format", if fmt { c.format_max } else { c.format_min }, 1.0);
    b.push("correctness", correct, 1.0);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gold() -> ToolRlGold {
        ToolRlGold::from_calls(vec![ToolCall::new(
            "get_weather",
            json!({"city": "paris", "day": "monday"}),
        )])
    }

    #[test]
    fn exact_answer_gets_four() {
        let t = "<think>\nok\n</think>\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"paris\", \"day\": \"monday\"}}\n</tool_call>";
        let r = toolrl_reward(t, &gold(), &RewardConfig::default());
        assert_eq!(r.component("format"), Some(1.0));
        assert_eq!(r.component("correctness"), Some(3.0));
        assert_eq!(r.total, 4.0);
    }

    #[test]
    fn partial_and_minimum() {
        let cfg = RewardConfig::default();
        // right name, both keys, one value: score = 1 (names) + 1 (keys) + 1 (value) = 3 of 1 + 3
        let t = "<think>\nok\n</think>\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"rome\", \"day\": \"monday\"}}\n</tool_call>";
        let r = toolrl_reward(t, &gold(), &cfg);
        assert!((r.component("correctness").unwrap() - (6.0 * 3.0 / 4.0 - 3.0)).abs() < 1e-9);
        let r = toolrl_reward(
            "<think>\nok\n</think>\n<response>\nhi\n</response>",
            &gold(),
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(-3.0));
        assert_eq!(r.component("format"), Some(0.0));
        let r = toolrl_reward(
            "<think>\nok\n</think>\n<tool_call>\nnot json\n</tool_call>",
            &gold(),
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(-3.0));
        assert_eq!(r.component("format"), Some(1.0));
    }

    #[test]
    fn response_only_gold() {
        let g = ToolRlGold::from_text("<think>\nx\n</think>\n<response>\nhello\n</response>");
        let r = toolrl_reward(
            "<think>\nhm\n</think>\n<response>\nhi\n</response>",
            &g,
            &RewardConfig::default(),
        );
        assert_eq!(r.total, 1.0);
        assert_eq!(match_score(&["a", "b"], &["b", "c"]), 1.0 / 3.0);
    }

    fn call(name: &str, params: Value) -> ToolCall {
        ToolCall::new(name, params)
    }

    fn weather() -> ToolCall {
        call("get_weather", json!({"city": "paris", "day": "monday"}))
    }

    fn time() -> ToolCall {
        call("get_time", json!({"tz": "CET"}))
    }

    fn block(lines: &[&str]) -> String {
        format!(
            "<think>\nx\n</think>\n<tool_call>\n{}\n</tool_call>",
            lines.join("\n")
        )
    }

    const W: &str = r#"{"name": "get_weather", "parameters": {"city": "paris", "day": "monday"}}"#;
    const T: &str = r#"{"name": "get_time", "parameters": {"tz": "CET"}}"#;

    /// Cases computed by hand from rlla.py (`compute_tool_call_reward`, its format patterns).
    #[test]
    fn parallel_turns_as_rlla_scores_them() {
        let cfg = RewardConfig::default();
        let gold = ToolRlGold::from_calls(vec![weather(), time()]);
        // Both calls in one block, in order: exact, 1 + 3.
        let r = toolrl_reward(&block(&[W, T]), &gold, &cfg);
        assert_eq!((r.component("format"), r.total), (Some(1.0), 4.0));
        // Swapped: not `==`, but names 1 + weather (1 + 2) + time (1 + 1) = 6 of 6: the maximum.
        let r = toolrl_reward(&block(&[T, W]), &gold, &cfg);
        assert_eq!(r.component("correctness"), Some(3.0));
        // One of the two: names 1/(2+1-1) = 0.5, weather 3, time 0: 3.5 of 6 -> 6 * 3.5/6 - 3.
        let r = toolrl_reward(&block(&[W]), &gold, &cfg);
        assert!((r.component("correctness").unwrap() - 0.5).abs() < 1e-9);
        // Two blocks: the layout fails (one block allowed) and only the first block is read.
        let two = format!(
            "<think>\nx\n</think>\n<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{T}\n</tool_call>"
        );
        let r = toolrl_reward(&two, &gold, &cfg);
        assert_eq!(r.component("format"), Some(0.0));
        assert!((r.component("correctness").unwrap() - 0.5).abs() < 1e-9);
        // Two newlines after </think>: rlla's pattern wants one.
        let loose = block(&[W, T]).replace("</think>\n", "</think>\n\n");
        assert_eq!(
            toolrl_reward(&loose, &gold, &cfg).component("format"),
            Some(0.0)
        );
    }

    #[test]
    fn value_types_are_strict_as_python_equality() {
        let cfg = RewardConfig::default();
        let gold = ToolRlGold::from_calls(vec![call("set_count", json!({"n": 1}))]);
        // 1.0 == 1 in Python: exact.
        let r = toolrl_reward(
            &block(&[r#"{"name": "set_count", "parameters": {"n": 1.0}}"#]),
            &gold,
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(3.0));
        // "1" != 1: names 1 + keys 1 + values 0 = 2 of 3 -> 6 * 2/3 - 3 = 1.
        let r = toolrl_reward(
            &block(&[r#"{"name": "set_count", "parameters": {"n": "1"}}"#]),
            &gold,
            &cfg,
        );
        assert!((r.component("correctness").unwrap() - 1.0).abs() < 1e-9);
        // `arguments` instead of `parameters`: rlla.py raises a KeyError -> the minimum.
        let r = toolrl_reward(
            &block(&[r#"{"name": "set_count", "arguments": {"n": 1}}"#]),
            &gold,
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(-3.0));
        // A line without a name: the minimum; an empty line: json.loads fails, the minimum.
        let r = toolrl_reward(&block(&[r#"{"parameters": {"n": 1}}"#]), &gold, &cfg);
        assert_eq!(r.component("correctness"), Some(-3.0));
        let r = toolrl_reward(
            &block(&[r#"{"name": "set_count", "parameters": {"n": 1}}"#, "", "{}"]),
            &gold,
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(-3.0));
        // An unrelated extra call without parameters is fine (only same-name calls are read).
        let r = toolrl_reward(
            &block(&[
                r#"{"name": "set_count", "parameters": {"n": 1}}"#,
                r#"{"name": "other"}"#,
            ]),
            &gold,
            &cfg,
        );
        // names 1/(1+2-1) = 0.5, call 1 + 1 = 2: 2.5 of 3 -> 6 * 2.5/3 - 3 = 2.
        assert!((r.component("correctness").unwrap() - 2.0).abs() < 1e-9);
    }
}

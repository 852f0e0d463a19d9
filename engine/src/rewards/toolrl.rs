//! ToolRL's flat reward (the baseline): format in {format_min, format_max} from the layout the
//! gold answer calls for, plus tool-call correctness in [correct_min, correct_max] from tool-name
//! overlap, parameter-name overlap and exact value matches, normalized by
//! `1 + Σ_gold (1 + #params)`.
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

/// `<tool_call>\n…\n</tool_call>` blocks, one JSON object per non-empty line; `None` when any
/// line is not a call (ToolRL gives the minimum then).
fn extract_calls(text: &str) -> Option<Vec<ToolCall>> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let r = re(&RE, r"(?s)<tool_call>\n(.*?)\n</tool_call>");
    let mut out = Vec::new();
    for cap in r.captures_iter(text) {
        for line in cap
            .get(1)?
            .as_str()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            let v: Value = serde_json::from_str(line).ok()?;
            let c: ToolCall = serde_json::from_value(v).ok()?;
            out.push(c);
        }
    }
    Some(out)
}

fn format_ok(text: &str, gold: &ToolRlGold) -> bool {
    static RESP: OnceLock<Regex> = OnceLock::new();
    static CALL: OnceLock<Regex> = OnceLock::new();
    static BOTH: OnceLock<Regex> = OnceLock::new();
    static THINK: OnceLock<Regex> = OnceLock::new();
    let count = |s: &str| text.matches(s).count();
    match (gold.has_tool_call, gold.has_response) {
        (false, true) => {
            re(&RESP, r"(?s)\A<think>\n.*?\n</think>\n\n<response>\n.*?\n</response>\z").is_match(text)
                && count("<response>") == 1
                && count("</response>") == 1
        }
        (true, false) => {
            re(&CALL, r"(?s)\A<think>\n.*?\n</think>\n\n<tool_call>\n.*?\n</tool_call>(?:\n<tool_call>\n.*?\n</tool_call>)*\z")
                .is_match(text)
                && count("<tool_call>") == count("</tool_call>")
        }
        (true, true) => {
            re(&BOTH, r"(?s)\A<think>\n.*?\n</think>\n\n<tool_call>\n.*?\n</tool_call>\n<response>\n.*?\n</response>\z")
                .is_match(text)
                && count("<tool_call>") == count("</tool_call>")
                && count("<response>") == 1
                && count("</response>") == 1
        }
        (false, false) => re(&THINK, r"(?s)\A<think>\n.*?\n</think>\z").is_match(text),
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

fn same_call(a: &ToolCall, b: &ToolCall) -> bool {
    a.name == b.name
        && crate::pyval::py_eq(
            &Value::Object(a.arguments.clone()),
            &Value::Object(b.arguments.clone()),
        )
}

/// Correctness score before scaling: (score, local max).
fn correctness(gold: &[ToolCall], pred: &[ToolCall]) -> (f64, f64) {
    let gn: Vec<&str> = gold.iter().map(|c| c.name.as_str()).collect();
    let pn: Vec<&str> = pred.iter().map(|c| c.name.as_str()).collect();
    let mut score = match_score(&gn, &pn);
    let mut local_max = 1.0;
    let mut used = vec![false; pred.len()];
    for g in gold {
        local_max += 1.0 + g.arguments.len() as f64;
        let mut best: Option<(usize, f64)> = None;
        for (i, p) in pred.iter().enumerate() {
            if used[i] || p.name != g.name {
                continue;
            }
            let gk: Vec<&str> = g.arguments.keys().map(String::as_str).collect();
            let pk: Vec<&str> = p.arguments.keys().map(String::as_str).collect();
            let mut s = match_score(&gk, &pk);
            for (k, v) in &g.arguments {
                if p.arguments
                    .get(k)
                    .is_some_and(|pv| crate::pyval::py_eq(pv, v))
                {
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
    (score, local_max)
}

/// ToolRL's reward: `format` ∈ {min, max} and `correctness` ∈ [min, max] (0 when the gold has
/// no call; the minimum when the output has no `<tool_call>` or a line is not a JSON call).
pub fn toolrl_reward(text: &str, gold: &ToolRlGold, cfg: &RewardConfig) -> RewardBreakdown {
    let c = &cfg.toolrl;
    let text = clip(text, MAX_OUTPUT_BYTES);
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
        match extract_calls(text) {
            None => {
                b.reasons.push("a tool_call line is not a JSON call".into());
                c.correct_min
            }
            Some(pred) => {
                let exact = pred.len() == gold.calls.len()
                    && pred.iter().zip(&gold.calls).all(|(p, g)| same_call(p, g));
                if exact {
                    c.correct_max
                } else {
                    let (s, m) = correctness(&gold.calls, &pred);
                    b.reasons.push(format!("tool-call match {s:.2} of {m:.0}"));
                    (c.correct_max - c.correct_min) * s / m + c.correct_min
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
        let t = "<think>\nok\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"paris\", \"day\": \"monday\"}}\n</tool_call>";
        let r = toolrl_reward(t, &gold(), &RewardConfig::default());
        assert_eq!(r.component("format"), Some(1.0));
        assert_eq!(r.component("correctness"), Some(3.0));
        assert_eq!(r.total, 4.0);
    }

    #[test]
    fn partial_and_minimum() {
        let cfg = RewardConfig::default();
        // right name, both keys, one value: score = 1 (names) + 1 (keys) + 1 (value) = 3 of 1 + 3
        let t = "<think>\nok\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"rome\", \"day\": \"monday\"}}\n</tool_call>";
        let r = toolrl_reward(t, &gold(), &cfg);
        assert!((r.component("correctness").unwrap() - (6.0 * 3.0 / 4.0 - 3.0)).abs() < 1e-9);
        let r = toolrl_reward(
            "<think>\nok\n</think>\n\n<response>\nhi\n</response>",
            &gold(),
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(-3.0));
        assert_eq!(r.component("format"), Some(0.0));
        let r = toolrl_reward(
            "<think>\nok\n</think>\n\n<tool_call>\nnot json\n</tool_call>",
            &gold(),
            &cfg,
        );
        assert_eq!(r.component("correctness"), Some(-3.0));
        assert_eq!(r.component("format"), Some(1.0));
    }

    #[test]
    fn response_only_gold() {
        let g = ToolRlGold::from_text("<think>\nx\n</think>\n\n<response>\nhello\n</response>");
        let r = toolrl_reward(
            "<think>\nhm\n</think>\n\n<response>\nhi\n</response>",
            &g,
            &RewardConfig::default(),
        );
        assert_eq!(r.total, 1.0);
        assert_eq!(match_score(&["a", "b"], &["b", "c"]), 1.0 / 3.0);
    }
}

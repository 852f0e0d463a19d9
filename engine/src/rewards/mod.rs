//! CAHL's verifiable rewards. Every reward is a pure function returning a [`RewardBreakdown`]
//! (total, named components with their weights, and reasons) that is recorded in traces and
//! shown in the UI. All weights live in [`RewardConfig`].
//!
//! * Executor, per step ([`executor_step_reward`]):
//!   `total = w_format·format + w_syntax·syntax + w_semantics·semantics`, each component in
//!   [0, 1]:
//!   - format = share of five layout checks passed (think present and closed; an action
//!     present; tags balanced and not duplicated; no text outside tags; tag order);
//!   - syntax = mean over call entries of ¼·(JSON object with a name) + ¼·(tool exists) +
//!     ¼·(required parameters present) + ¼·(types valid, no extra parameter, enum respected);
//!     1 when no call was made and none was due, 0 when calls were due and none was made;
//!   - semantics = best one-to-one matching of predicted and gold calls for this step (the gold
//!     calls its sub-task describes, less those already made: [`align::step_gold`]), each pair
//!     scored `name_w·[same name] + keys_w·Jaccard(parameter names) + values_w·(share of gold
//!     values matched)`, summed and divided by max(#predicted, #gold).
//! * Planner, per plan ([`planner_reward`]):
//!   `total = w_format·format + w_param·param_level + w_exec·execution_level` with
//!   - param_level = (values_w·(share of non-derived gold argument values stated in the
//!     sub-task that carries their call, [`align_plan`]) + count_w·(share of sub-tasks that
//!     carry a gold call)) / (values_w + count_w);
//!   - execution_level = trajectory_w·alignment + state_w·[final state == gold state]
//!     (only alignment where the world has no state), alignment = order-aware (LCS-style
//!     dynamic programming) sum of call similarities between executed and gold calls divided
//!     by max(#executed, #gold).
//! * Flat baseline ([`toolrl_reward`]): ToolRL's format {0, 1} plus correctness in [−3, 3].
//! * StepTool ([`steptool_step_reward`]): per turn alpha·invocation + beta·contribution, plus
//!   terminal·solved on the last turn; discounted returns normalised per step index.
pub mod align;
pub mod steptool;
mod toolrl;

pub use align::{align_plan, PlanAlignment};
pub use steptool::{steptool_step_reward, StepToolConfig};
pub use toolrl::{toolrl_reward, ToolRlGold};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::parse::{
    parse_executor, parse_planner, validate_call, ExecutorOutput, IssueClass, ParseIssue,
    PlannerOutput, ToolCall, ToolSchema,
};

/// One named part of a reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardComponent {
    pub name: String,
    /// Raw value (usually in [0, 1]).
    pub value: f64,
    /// Weight in the total.
    pub weight: f64,
}

/// A reward: total, components and human-readable reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RewardBreakdown {
    pub total: f64,
    pub components: Vec<RewardComponent>,
    pub reasons: Vec<String>,
}

impl RewardBreakdown {
    fn push(&mut self, name: &str, value: f64, weight: f64) {
        self.components.push(RewardComponent {
            name: name.into(),
            value,
            weight,
        });
    }
    fn finish(mut self) -> Self {
        self.total = self.components.iter().map(|c| c.value * c.weight).sum();
        self
    }
    /// Value of a component by name.
    pub fn component(&self, name: &str) -> Option<f64> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    }
}

/// Executor weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorWeights {
    pub format: f64,
    pub syntax: f64,
    pub semantics: f64,
    /// Inside semantics: same tool name.
    pub name: f64,
    /// Inside semantics: parameter-name Jaccard.
    pub param_names: f64,
    /// Inside semantics: share of gold values matched.
    pub param_values: f64,
}

impl Default for ExecutorWeights {
    fn default() -> Self {
        ExecutorWeights {
            format: 1.0,
            syntax: 1.0,
            semantics: 2.0,
            name: 0.3,
            param_names: 0.3,
            param_values: 0.4,
        }
    }
}

/// Planner weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerWeights {
    pub format: f64,
    pub param_level: f64,
    pub execution_level: f64,
    /// Inside param_level: share of gold values conveyed.
    pub values: f64,
    /// Inside param_level: share of sub-tasks that describe a gold call (extra or empty
    /// sub-tasks lower it; merged ones do not).
    pub count: f64,
    /// Inside execution_level: trajectory alignment.
    pub trajectory: f64,
    /// Inside execution_level: final-state match.
    pub state: f64,
}

impl Default for PlannerWeights {
    fn default() -> Self {
        PlannerWeights {
            format: 0.5,
            param_level: 1.0,
            execution_level: 2.0,
            values: 0.7,
            count: 0.3,
            trajectory: 0.6,
            state: 0.4,
        }
    }
}

/// ToolRL baseline bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolRlConfig {
    pub format_max: f64,
    pub format_min: f64,
    pub correct_max: f64,
    pub correct_min: f64,
}

impl Default for ToolRlConfig {
    fn default() -> Self {
        ToolRlConfig {
            format_max: 1.0,
            format_min: 0.0,
            correct_max: 3.0,
            correct_min: -3.0,
        }
    }
}

/// All reward weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    pub executor: ExecutorWeights,
    pub planner: PlannerWeights,
    pub toolrl: ToolRlConfig,
    pub steptool: StepToolConfig,
}

// ---------------------------------------------------------------------------------------------
// value comparison

/// Normalized text of a value: strings trimmed and lowercased, integral numbers without `.0`.
pub fn value_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_lowercase(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => format!("{f}"),
            None => n.to_string(),
        },
        other => other.to_string().to_lowercase(),
    }
}

fn values_match(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => (p - q).abs() <= 1e-6 * (1.0 + q.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_match(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_match(v, w)))
        }
        _ => value_key(a) == value_key(b),
    }
}

/// Similarity of a predicted call to a gold call in [0, 1].
pub fn call_similarity(pred: &ToolCall, gold: &ToolCall, w: &ExecutorWeights) -> f64 {
    let sum = w.name + w.param_names + w.param_values;
    if sum <= 0.0 || pred.name != gold.name {
        return 0.0;
    }
    let pk: std::collections::BTreeSet<&String> = pred.arguments.keys().collect();
    let gk: std::collections::BTreeSet<&String> = gold.arguments.keys().collect();
    let union = pk.union(&gk).count();
    let jacc = if union == 0 {
        1.0
    } else {
        pk.intersection(&gk).count() as f64 / union as f64
    };
    let vals = if gold.arguments.is_empty() {
        if pred.arguments.is_empty() {
            1.0
        } else {
            0.0
        }
    } else {
        let hit = gold
            .arguments
            .iter()
            .filter(|(k, v)| pred.arguments.get(*k).is_some_and(|p| values_match(p, v)))
            .count();
        hit as f64 / gold.arguments.len() as f64
    };
    (w.name + w.param_names * jacc + w.param_values * vals) / sum
}

/// Best one-to-one matching score (greedy on the best pairs), divided by max(#pred, #gold).
fn matching_score(pred: &[ToolCall], gold: &[ToolCall], w: &ExecutorWeights) -> f64 {
    if pred.is_empty() && gold.is_empty() {
        return 1.0;
    }
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (i, p) in pred.iter().enumerate() {
        for (j, g) in gold.iter().enumerate() {
            let s = call_similarity(p, g, w);
            if s > 0.0 {
                pairs.push((s, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut up, mut ug) = (vec![false; pred.len()], vec![false; gold.len()]);
    let mut total = 0.0;
    for (s, i, j) in pairs {
        if !up[i] && !ug[j] {
            up[i] = true;
            ug[j] = true;
            total += s;
        }
    }
    total / pred.len().max(gold.len()) as f64
}

/// Order-aware alignment of executed calls against gold calls: the best monotone alignment
/// (dynamic programming, as in LCS) of call similarities, divided by max(#executed, #gold).
pub fn trajectory_alignment(executed: &[ToolCall], gold: &[ToolCall], w: &ExecutorWeights) -> f64 {
    if executed.is_empty() && gold.is_empty() {
        return 1.0;
    }
    let (n, m) = (executed.len(), gold.len());
    let mut dp = vec![vec![0.0f64; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            let diag = dp[i - 1][j - 1] + call_similarity(&executed[i - 1], &gold[j - 1], w);
            dp[i][j] = diag.max(dp[i - 1][j]).max(dp[i][j - 1]);
        }
    }
    dp[n][m] / n.max(m) as f64
}

// ---------------------------------------------------------------------------------------------
// executor

fn format_score(issues: &[ParseIssue], reasons: &mut Vec<String>) -> f64 {
    use ParseIssue::*;
    let mut failed = [false; 5];
    for i in issues.iter().filter(|i| i.class() == IssueClass::Format) {
        let slot = match i {
            MissingTag { tag } if tag == "think" => 0,
            Empty | TooLong { .. } => 0,
            MissingTag { .. } | EmptyToolCall { .. } | NoSubtasks => 1,
            UnclosedTag { .. } | UnopenedTag { .. } | DuplicateTag { .. } => 2,
            TextOutsideTags { .. } | UnnumberedLine { .. } | TooManySubtasks { .. } => 3,
            TagOrder { .. } | BadNumbering { .. } => 4,
            _ => 2,
        };
        failed[slot] = true;
        reasons.push(i.message());
    }
    if issues.iter().any(|i| matches!(i, Empty)) {
        return 0.0;
    }
    1.0 - failed.iter().filter(|f| **f).count() as f64 / failed.len() as f64
}

/// Syntax score of parsed entries against the tool schemas, in [0, 1].
pub fn syntax_score(
    out: &ExecutorOutput,
    tools: &[ToolSchema],
    calls_due: bool,
    reasons: &mut Vec<String>,
) -> f64 {
    if out.entries.is_empty() {
        if calls_due {
            reasons.push("no tool call made where one was due".into());
            return 0.0;
        }
        return 1.0;
    }
    let mut sum = 0.0;
    for e in &out.entries {
        let Some(call) = &e.call else {
            reasons.extend(e.issues.iter().map(ParseIssue::message));
            continue;
        };
        let issues = validate_call(call, tools);
        reasons.extend(issues.iter().map(ParseIssue::message));
        let mut s = 0.25;
        if !issues
            .iter()
            .any(|i| matches!(i, ParseIssue::UnknownTool { .. }))
        {
            s += 0.25;
            if !issues
                .iter()
                .any(|i| matches!(i, ParseIssue::MissingRequired { .. }))
            {
                s += 0.25;
            }
            if !issues.iter().any(|i| {
                matches!(
                    i,
                    ParseIssue::WrongType { .. }
                        | ParseIssue::ExtraParameter { .. }
                        | ParseIssue::NotInEnum { .. }
                )
            }) {
                s += 0.25;
            }
        }
        sum += s;
    }
    sum / out.entries.len() as f64
}

/// Executor reward for one step: `text` is the executor's output, `tools` the tools offered,
/// `gold` the gold calls aligned to this step (empty when the step should answer without calls).
pub fn executor_step_reward(
    text: &str,
    tools: &[ToolSchema],
    gold: &[ToolCall],
    cfg: &RewardConfig,
) -> RewardBreakdown {
    let out = parse_executor(text);
    executor_step_reward_parsed(&out, tools, gold, cfg)
}

/// [`executor_step_reward`] on an already parsed output.
pub fn executor_step_reward_parsed(
    out: &ExecutorOutput,
    tools: &[ToolSchema],
    gold: &[ToolCall],
    cfg: &RewardConfig,
) -> RewardBreakdown {
    let w = &cfg.executor;
    let mut b = RewardBreakdown::default();
    let format = format_score(&out.issues, &mut b.reasons);
    let syntax = syntax_score(out, tools, !gold.is_empty(), &mut b.reasons);
    let calls = out.calls();
    let semantics = matching_score(&calls, gold, w);
    if semantics < 1.0 {
        b.reasons.push(format!(
            "calls match gold {:.0}% ({} made, {} expected)",
            100.0 * semantics,
            calls.len(),
            gold.len()
        ));
    }
    b.push("format", format, w.format);
    b.push("syntax", syntax, w.syntax);
    b.push("semantics", semantics, w.semantics);
    b.finish()
}

// ---------------------------------------------------------------------------------------------
// planner

fn padded_words(text: &str) -> String {
    let t: String = text
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "@:.-_".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    format!(
        " {} ",
        t.split_whitespace()
            .map(|w| w.trim_end_matches('.'))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Share of the gold calls' stated (non-derived) argument values that the plan conveys, each
/// counted only in the sub-task that carries its call (see [`align_plan`]); and the list of
/// missing values (a call no sub-task describes misses all of its values).
pub fn plan_value_coverage(
    subtasks: &[String],
    gold: &[ToolCall],
    derived: &[Vec<String>],
) -> (f64, Vec<String>) {
    let a = align_plan(subtasks, gold, derived);
    value_coverage_aligned(subtasks, gold, derived, &a)
}

/// [`plan_value_coverage`] with the alignment already made.
pub fn value_coverage_aligned(
    subtasks: &[String],
    gold: &[ToolCall],
    derived: &[Vec<String>],
    a: &PlanAlignment,
) -> (f64, Vec<String>) {
    let padded: Vec<String> = subtasks.iter().map(|s| padded_words(s)).collect();
    let mut total = 0usize;
    let mut missing = Vec::new();
    for (j, call) in gold.iter().enumerate() {
        let owner = a.owner.get(j).copied().flatten();
        for (k, v) in align::stated_values(call, derived.get(j)) {
            total += 1;
            let said = owner.is_some_and(|i| align::mentions(&padded[i], v));
            if !said {
                missing.push(format!("{}.{k}={}", call.name, value_key(v)));
            }
        }
    }
    let share = if total == 0 {
        1.0
    } else {
        (total - missing.len()) as f64 / total as f64
    };
    (share, missing)
}

/// Everything the planner reward looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanEpisode<'a> {
    /// The planner's output.
    pub plan_text: &'a str,
    /// Calls the executor actually made under this plan, in order.
    pub executed: &'a [ToolCall],
    /// Final world state after the episode, where the world has state.
    pub final_state: Option<&'a Value>,
    pub gold_calls: &'a [ToolCall],
    pub gold_derived: &'a [Vec<String>],
    pub gold_state: Option<&'a Value>,
}

/// Planner reward: format, parameter-level accuracy and execution-level trajectory alignment.
pub fn planner_reward(ep: &PlanEpisode<'_>, cfg: &RewardConfig) -> RewardBreakdown {
    let plan = parse_planner(ep.plan_text);
    planner_reward_parsed(&plan, ep, cfg)
}

/// [`planner_reward`] on an already parsed plan.
pub fn planner_reward_parsed(
    plan: &PlannerOutput,
    ep: &PlanEpisode<'_>,
    cfg: &RewardConfig,
) -> RewardBreakdown {
    let w = &cfg.planner;
    let mut b = RewardBreakdown::default();
    let format = format_score(&plan.issues, &mut b.reasons);
    let a = align_plan(&plan.subtasks, ep.gold_calls, ep.gold_derived);
    let (values, missing) =
        value_coverage_aligned(&plan.subtasks, ep.gold_calls, ep.gold_derived, &a);
    if !missing.is_empty() {
        b.reasons
            .push(format!("plan does not state: {}", missing.join(", ")));
    }
    // Sub-tasks that carry a gold call (merging calls into one sub-task is not penalised here:
    // whether the executor can carry a merge out is the execution level's business).
    let n = plan.subtasks.len();
    let used = a.calls_of.iter().filter(|c| !c.is_empty()).count();
    let count = if n == 0 {
        if ep.gold_calls.is_empty() {
            1.0
        } else {
            0.0
        }
    } else {
        used as f64 / n as f64
    };
    if used < n {
        b.reasons.push(format!(
            "{} of {n} sub-tasks describe no gold call",
            n - used
        ));
    }
    let unowned = a.unowned();
    if !unowned.is_empty() {
        b.reasons.push(format!(
            "no sub-task describes {}",
            unowned
                .iter()
                .map(|&j| ep.gold_calls[j].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let pl_sum = w.values + w.count;
    let param_level = if pl_sum > 0.0 {
        (w.values * values + w.count * count) / pl_sum
    } else {
        0.0
    };
    let align = trajectory_alignment(ep.executed, ep.gold_calls, &cfg.executor);
    let execution = match (ep.final_state, ep.gold_state) {
        (Some(f), Some(g)) => {
            let state = if f == g { 1.0 } else { 0.0 };
            if state < 1.0 {
                b.reasons.push("final state differs from gold".into());
            }
            let s = w.trajectory + w.state;
            if s > 0.0 {
                (w.trajectory * align + w.state * state) / s
            } else {
                0.0
            }
        }
        _ => align,
    };
    if align < 1.0 {
        b.reasons.push(format!(
            "executed trajectory aligns {:.0}% with gold",
            100.0 * align
        ));
    }
    b.push("format", format, w.format);
    b.push("param_level", param_level, w.param_level);
    b.push("execution_level", execution, w.execution_level);
    b.push("param_values", values, 0.0);
    b.push("subtasks_used", count, 0.0);
    b.push("trajectory_alignment", align, 0.0);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tools() -> Vec<ToolSchema> {
        crate::worlds::builtin::builtin_tools().to_vec()
    }

    fn gold() -> Vec<ToolCall> {
        vec![ToolCall::new("add_alarm", json!({"time": "07:30"}))]
    }

    #[test]
    fn perfect_executor_step_gets_full_reward() {
        let cfg = RewardConfig::default();
        let t = "<think>set it</think>\n<tool_call>\n{\"name\": \"add_alarm\", \"parameters\": {\"time\": \"07:30\"}}\n</tool_call>";
        let r = executor_step_reward(t, &tools(), &gold(), &cfg);
        assert_eq!(r.component("format"), Some(1.0));
        assert_eq!(r.component("syntax"), Some(1.0));
        assert_eq!(r.component("semantics"), Some(1.0));
        assert!((r.total - 4.0).abs() < 1e-9);
        assert!(r.reasons.is_empty(), "{:?}", r.reasons);
    }

    #[test]
    fn partial_credit_for_wrong_value_and_bad_format() {
        let cfg = RewardConfig::default();
        let t = "<tool_call>\n{\"name\": \"add_alarm\", \"parameters\": {\"time\": \"08:30\"}}\n</tool_call>";
        let r = executor_step_reward(t, &tools(), &gold(), &cfg);
        assert!(
            (r.component("format").unwrap() - 0.8).abs() < 1e-9,
            "missing think fails one of five checks"
        );
        assert_eq!(r.component("syntax"), Some(1.0));
        assert!(
            (r.component("semantics").unwrap() - 0.6).abs() < 1e-9,
            "name + keys, no value"
        );
        assert!(!r.reasons.is_empty());
    }

    #[test]
    fn syntax_partial_credit() {
        let cfg = RewardConfig::default();
        let t = "<think>x</think><tool_call>\n{\"name\": \"add_alarm\", \"parameters\": {\"time\": 7}}\n{\"name\": \"nope\", \"parameters\": {}}\nnot json\n</tool_call>";
        let r = executor_step_reward(t, &tools(), &gold(), &cfg);
        // entry 1: 0.75 (wrong type), entry 2: 0.25 (unknown tool), entry 3: 0
        assert!((r.component("syntax").unwrap() - 1.0 / 3.0).abs() < 1e-9);
        let none = executor_step_reward(
            "<think>x</think><response>ok</response>",
            &tools(),
            &gold(),
            &cfg,
        );
        assert_eq!(none.component("syntax"), Some(0.0));
        assert_eq!(none.component("semantics"), Some(0.0));
        let answer_only = executor_step_reward(
            "<think>x</think><response>ok</response>",
            &tools(),
            &[],
            &cfg,
        );
        assert_eq!(answer_only.component("semantics"), Some(1.0));
    }

    #[test]
    fn extra_calls_dilute_semantics() {
        let w = ExecutorWeights::default();
        let g = gold();
        let p = vec![g[0].clone(), ToolCall::new("list_alarms", json!({}))];
        assert!((matching_score(&p, &g, &w) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn trajectory_alignment_is_order_aware() {
        let w = ExecutorWeights::default();
        let a = ToolCall::new("login", json!({"username": "alice"}));
        let b = ToolCall::new("get_balance", json!({"account": "checking"}));
        assert_eq!(
            trajectory_alignment(&[a.clone(), b.clone()], &[a.clone(), b.clone()], &w),
            1.0
        );
        assert!(
            (trajectory_alignment(&[b.clone(), a.clone()], &[a.clone(), b.clone()], &w) - 0.5)
                .abs()
                < 1e-9
        );
        assert_eq!(trajectory_alignment(&[], std::slice::from_ref(&a), &w), 0.0);
        assert_eq!(trajectory_alignment(&[], &[], &w), 1.0);
    }

    #[test]
    fn planner_reward_rewards_stated_values_and_execution() {
        let cfg = RewardConfig::default();
        let tasks =
            crate::worlds::builtin::generate_tasks(crate::worlds::Split::Train, 300, 4).unwrap();
        let t = tasks
            .iter()
            .find(|t| t.template.as_deref() == Some("transfer"))
            .unwrap();
        let plan = format!(
            "<think>two steps</think>\n<plan>\n{}\n</plan>",
            crate::worlds::builtin::render_plan(&t.gold_plan)
        );
        let ep = PlanEpisode {
            plan_text: &plan,
            executed: &t.gold_calls,
            final_state: t.gold_final_state.as_ref(),
            gold_calls: &t.gold_calls,
            gold_derived: &t.gold_derived,
            gold_state: t.gold_final_state.as_ref(),
        };
        let r = planner_reward(&ep, &cfg);
        assert_eq!(r.component("param_values"), Some(1.0), "{:?}", r.reasons);
        assert_eq!(r.component("execution_level"), Some(1.0));
        assert!((r.total - 3.5).abs() < 1e-9);
        // a vague plan that omits the amount, executed wrongly
        let vague = "<think>x</think>\n<plan>\n1. log in\n</plan>";
        let ep2 = PlanEpisode {
            plan_text: vague,
            executed: &t.gold_calls[..1],
            final_state: None,
            ..ep
        };
        let r2 = planner_reward(&ep2, &cfg);
        assert!(r2.component("param_values").unwrap() < 0.5);
        assert_eq!(
            r2.component("subtasks_used"),
            Some(1.0),
            "its one sub-task carries login"
        );
        assert!((r2.component("trajectory_alignment").unwrap() - 0.5).abs() < 1e-9);
        assert!(r2.total < r.total);
    }

    #[test]
    fn config_rejects_unknown_fields_and_fills_defaults() {
        let c: RewardConfig = serde_json::from_str(r#"{"executor": {"format": 2.0}}"#).unwrap();
        assert_eq!(c.executor.format, 2.0);
        assert_eq!(c.executor.semantics, 2.0);
        assert!(serde_json::from_str::<RewardConfig>(r#"{"executor": {"fromat": 2.0}}"#).is_err());
        assert!(serde_json::from_str::<RewardConfig>(r#"{"other": {}}"#).is_err());
    }
}

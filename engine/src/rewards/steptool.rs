//! StepTool's step-grained rewards and returns (Yu et al. 2024, arXiv 2410.07745; code
//! yuyq18/StepTool), as `--mode steptool` computes them.
//!
//! Per turn `t` of a trajectory that made calls:
//! `r_t = alpha * invocation + beta * contribution`, each in [0, 1]:
//! - invocation ("SuccCalling"): share of the turn's call entries that parse, pass the tool
//!   schema and were accepted by the world (an observation that is not an error);
//! - contribution: share of the turn's calls that matter for the task: an accepted call that
//!   matches a gold call not matched before (the content alignment of [`super::align::call_matches`]), or
//!   one whose observation feeds a later call's argument or the final answer.
//!
//! The last turn of the trajectory adds `terminal * solved` (the paper's IsSolved, here the
//! episode's verifiable success). Returns are discounted sums `R_t = sum_k gamma^(k-t) r_k`;
//! advantages normalise each step index across the task's group of trajectories
//! ([`crate::grpo::per_index_advantages`]), and every token of turn `t` carries `A_t`.
//!
//! What differs from the published code, and why: it scores steps with GPT-4 annotations (or
//! rules on the tool response and the answer) and optimises with PPO and a value head; here
//! the scores are the world's verifiable ones and the baseline is the group's mean per step
//! index (critic-free, like the other modes of this tool). Its IsSolved reward is weighted by
//! zero in `step_ppotrainer.py` (each step's score is multiplied by `n - 1 - k`); here it counts
//! with `terminal`.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::align::call_matches;
use super::{value_key, RewardBreakdown};
use crate::parse::{validate_call, ExecutorOutput, ToolCall, ToolSchema};

/// StepTool's weights (`[steptool]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepToolConfig {
    /// Weight of invocation success per step (the paper's alpha; its value is not stated, 1).
    pub alpha: f64,
    /// Weight of contribution per step (1 in the paper's r = alpha * SC + Con).
    pub beta: f64,
    /// Weight of task success on the final step (the paper's IsSolved in [0, 1]).
    pub terminal: f64,
    /// Discount of later steps' rewards in the return (0.99 in the released configs).
    pub gamma: f64,
}

impl Default for StepToolConfig {
    fn default() -> Self {
        StepToolConfig {
            alpha: 1.0,
            beta: 1.0,
            terminal: 1.0,
            gamma: 0.99,
        }
    }
}

/// What one turn did, for its reward.
pub struct TurnView<'a> {
    /// The turn's parsed output.
    pub output: &'a ExecutorOutput,
    /// The calls the world ran, in order, and whether each was accepted (observation not an
    /// error), with its observation.
    pub ran: &'a [(ToolCall, bool, Value)],
    /// Which gold calls were matched before this turn.
    pub made_before: &'a [bool],
}

/// Whether `obs` holds a value (a string of 3+ characters or a number of 2+ digits, not a
/// boolean) that a later call passes as an argument or the final answer states.
pub fn observation_feeds(obs: &Value, later: &[ToolCall], answer: Option<&str>) -> bool {
    let mut leaves = Vec::new();
    collect_leaves(obs, &mut leaves);
    let answer = answer.map(str::to_lowercase);
    leaves.iter().any(|leaf| {
        let key = value_key(leaf);
        let used = later.iter().any(|c| {
            let mut args = Vec::new();
            c.arguments
                .values()
                .for_each(|v| collect_leaves(v, &mut args));
            args.iter().any(|a| value_key(a) == key)
        });
        used || answer.as_deref().is_some_and(|a| a.contains(&key))
    })
}

fn collect_leaves<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            // An error message is no result.
            if m.contains_key("error") {
                return;
            }
            m.values().for_each(|x| collect_leaves(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_leaves(x, out)),
        Value::String(s) if s.trim().chars().count() >= 3 => out.push(v),
        Value::Number(_) if value_key(v).trim_start_matches('-').len() >= 2 => out.push(v),
        _ => {}
    }
}

/// The reward of one turn (see the module docs). `later` are the calls the trajectory ran after
/// this turn, `answer` its final response; `solved` is `Some` on the final turn only. Marks the
/// gold calls this turn matched in `made`.
pub fn steptool_step_reward(
    turn: &TurnView<'_>,
    tools: &[ToolSchema],
    gold: &[ToolCall],
    later: &[ToolCall],
    answer: Option<&str>,
    solved: Option<bool>,
    cfg: &StepToolConfig,
) -> RewardBreakdown {
    let mut b = RewardBreakdown::default();
    let entries = turn.output.entries.len();
    // Invocation: entries that parse, validate and were accepted, over all entries.
    let mut accepted = 0usize;
    let mut ran = turn.ran.iter();
    for e in &turn.output.entries {
        let Some(call) = &e.call else {
            b.reasons.push("a call entry does not parse".into());
            continue;
        };
        let issues = validate_call(call, tools);
        // The world ran the parsed calls in order; a refused or failed one is not accepted.
        let ok_world = ran.next().is_some_and(|(c, ok, _)| c == call && *ok);
        if issues.is_empty() && ok_world {
            accepted += 1;
        } else if !issues.is_empty() {
            b.reasons
                .extend(issues.iter().map(crate::parse::ParseIssue::message));
        } else {
            b.reasons.push(format!(
                "the world did not accept {}",
                call.to_toolrl_json()
            ));
        }
    }
    let invocation = if entries == 0 {
        0.0
    } else {
        accepted as f64 / entries as f64
    };
    // Contribution: calls that match a gold call not matched before, or feed a later step.
    let mut made = turn.made_before.to_vec();
    let mut useful = 0usize;
    for (call, ok, obs) in turn.ran {
        // A call the world refused or failed achieved nothing, whatever it says.
        if !*ok {
            continue;
        }
        let gold_hit = gold
            .iter()
            .enumerate()
            .find(|(i, g)| !made[*i] && call_matches(call, g))
            .map(|(i, _)| i);
        if let Some(i) = gold_hit {
            made[i] = true;
            useful += 1;
        } else if observation_feeds(obs, later, answer) {
            useful += 1;
        }
    }
    let contribution = if entries == 0 {
        0.0
    } else {
        useful as f64 / entries.max(turn.ran.len()) as f64
    };
    if entries > 0 && contribution < 1.0 {
        b.reasons.push(format!(
            "{useful} of {} calls contribute (new gold call or result used later)",
            entries.max(turn.ran.len())
        ));
    }
    b.push("invocation", invocation, cfg.alpha);
    b.push("contribution", contribution, cfg.beta);
    if let Some(s) = solved {
        b.push("solved", if s { 1.0 } else { 0.0 }, cfg.terminal);
        if !s {
            b.reasons.push("task not solved".into());
        }
    }
    b.finish()
}

/// `R_t = sum_{k >= t} gamma^(k - t) r_k`.
pub fn discounted_returns(rewards: &[f64], gamma: f64) -> Vec<f64> {
    let mut out = vec![0.0; rewards.len()];
    let mut acc = 0.0;
    for t in (0..rewards.len()).rev() {
        acc = rewards[t] + gamma * acc;
        out[t] = acc;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpo::per_index_advantages;
    use crate::parse::parse_executor;
    use serde_json::json;

    /// A 3-step trajectory, by hand: r = (1.5, 1.0, 1.0 + 1), gamma 0.9 ->
    /// R_2 = 2, R_1 = 1 + 0.9 * 2 = 2.8, R_0 = 1.5 + 0.9 * 2.8 = 4.02.
    #[test]
    fn returns_of_a_three_step_trajectory_by_hand() {
        let r = discounted_returns(&[1.5, 1.0, 2.0], 0.9);
        let want = [4.02, 2.8, 2.0];
        for (g, w) in r.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{r:?}");
        }
    }

    /// Two trajectories of 3 and 2 steps, unscaled: index 0 compares 4.02 with 1.0 (mean
    /// 2.51), index 1 compares 2.8 with 0.5 (mean 1.65), index 2 has one trajectory: 0.
    /// Scaled: two values always give +-1/sqrt(2) (sample std), here +-0.70706... with 1e-4.
    #[test]
    fn advantages_normalise_each_step_index_across_the_group() {
        let returns = vec![vec![4.02, 2.8, 2.0], vec![1.0, 0.5]];
        let a = per_index_advantages(&returns, false);
        assert!((a[0][0] - 1.51).abs() < 1e-12 && (a[1][0] + 1.51).abs() < 1e-12);
        assert!((a[0][1] - 1.15).abs() < 1e-12 && (a[1][1] + 1.15).abs() < 1e-12);
        assert_eq!(a[0][2], 0.0);
        let s = per_index_advantages(&returns, true);
        // std of {4.02, 1.0} = 3.02 / sqrt(2).
        let std0 = 3.02 / 2f64.sqrt();
        assert!((s[0][0] - 1.51 / (std0 + 1e-4)).abs() < 1e-12);
    }

    fn tools() -> Vec<ToolSchema> {
        crate::worlds::builtin::builtin_tools().to_vec()
    }

    #[test]
    fn a_step_is_paid_for_accepted_calls_and_their_contribution() {
        let login = ToolCall::new("login", json!({"username": "alice", "password": "red7"}));
        let transfer = ToolCall::new(
            "transfer",
            json!({"token": "tok-bob-77", "from_account": "checking", "to_account": "savings", "amount": 5}),
        );
        let gold = vec![login.clone(), transfer.clone()];
        let text = format!(
            "<think>x</think>\n<tool_call>\n{}\n</tool_call>",
            login.to_toolrl_json()
        );
        let out = parse_executor(&text);
        let ran = vec![(login.clone(), true, json!({"token": "tok-bob-77"}))];
        let view = TurnView {
            output: &out,
            ran: &ran,
            made_before: &[false, false],
        };
        let cfg = StepToolConfig::default();
        let r = steptool_step_reward(&view, &tools(), &gold, &[], None, None, &cfg);
        assert_eq!(r.component("invocation"), Some(1.0));
        assert_eq!(r.component("contribution"), Some(1.0), "a new gold call");
        assert_eq!(r.component("solved"), None, "only the final step");
        assert_eq!(r.total, 2.0);
        // Already matched before: it only contributes when its result is used later.
        let view = TurnView {
            output: &out,
            ran: &ran,
            made_before: &[true, false],
        };
        let r = steptool_step_reward(&view, &tools(), &gold, &[], None, None, &cfg);
        assert_eq!(r.component("contribution"), Some(0.0));
        let r = steptool_step_reward(
            &view,
            &tools(),
            &gold,
            std::slice::from_ref(&transfer),
            None,
            None,
            &cfg,
        );
        assert_eq!(
            r.component("contribution"),
            Some(1.0),
            "its token feeds the transfer"
        );
        // Refused by the world (as the one-call testbed refuses a second call): neither
        // invocation success nor contribution, though it is a gold call not made before.
        let refused = vec![(login.clone(), false, json!({"error": "not run"}))];
        let view = TurnView {
            output: &out,
            ran: &refused,
            made_before: &[false, false],
        };
        let r = steptool_step_reward(&view, &tools(), &gold, &[], None, Some(true), &cfg);
        assert_eq!(r.component("invocation"), Some(0.0));
        assert_eq!(r.component("contribution"), Some(0.0));
        assert_eq!(r.component("solved"), Some(1.0));
        assert_eq!(r.total, 1.0);
    }

    #[test]
    fn feeding_needs_a_real_value_not_a_flag() {
        let later = [ToolCall::new("f", json!({"x": "abc", "n": 42, "b": true}))];
        assert!(observation_feeds(&json!({"v": "ABC"}), &later, None));
        assert!(observation_feeds(&json!([1, 42]), &later, None));
        assert!(!observation_feeds(
            &json!({"ok": true, "n": 4}),
            &later,
            None
        ));
        assert!(!observation_feeds(&json!({"error": "abc"}), &later, None));
        assert!(observation_feeds(
            &json!({"temp": 21.5}),
            &[],
            Some("It is 21.5 degrees")
        ));
    }
}

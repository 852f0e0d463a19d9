//! Content alignment of a plan's sub-tasks with the gold calls: which sub-task describes which
//! gold call, by the call's stated argument values and its tool's name, not by position. Every
//! reward and the misalignment split read the same alignment, so a merged sub-task ("A, then
//! B") owns two calls, split sub-tasks share out one call's values, a reordered plan keeps its
//! calls, and an extra sub-task owns none.
use serde_json::Value;

use super::{call_similarity, padded_words, value_key, ExecutorWeights};
use crate::parse::ToolCall;

/// Which sub-task owns each gold call.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanAlignment {
    /// For each gold call, the index of the sub-task that describes it best (`None`: no
    /// sub-task mentions its values or its tool).
    pub owner: Vec<Option<usize>>,
    /// For each sub-task, the gold calls it owns (ascending).
    pub calls_of: Vec<Vec<usize>>,
}

impl PlanAlignment {
    /// Gold calls no sub-task describes.
    pub fn unowned(&self) -> Vec<usize> {
        (0..self.owner.len())
            .filter(|&j| self.owner[j].is_none())
            .collect()
    }
}

/// The values of gold call `j` that a plan can state: every argument but the derived ones
/// (a token returned by `login` cannot be in a plan written before it runs).
pub fn stated_values<'a>(
    call: &'a ToolCall,
    derived: Option<&'a Vec<String>>,
) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
    call.arguments
        .iter()
        .filter(move |(k, _)| !derived.is_some_and(|d| d.contains(k)))
}

/// Whether `value` appears in the padded word form of a sub-task.
pub fn mentions(padded_subtask: &str, value: &Value) -> bool {
    let needle = padded_words(&value_key(value));
    !needle.trim().is_empty() && padded_subtask.contains(&needle)
}

/// Words of a tool's name a sub-task may use for it ("add_alarm" → "add", "alarm"); words of
/// up to two letters are left out.
fn name_words(name: &str) -> Vec<String> {
    name.split(['_', '-', '.'])
        .filter(|w| w.len() > 2)
        .map(str::to_lowercase)
        .collect()
}

/// Whether a padded sub-task contains `word`, written as one word or two ("log in" for
/// "login"), or a word sharing its first five letters (so "transfer" finds "transferring",
/// "alarm" finds "alarms").
fn has_word(padded_subtask: &str, word: &str) -> bool {
    let stem: String = word.chars().take(5).collect();
    let words: Vec<&str> = padded_subtask.split_whitespace().collect();
    let joined = words.windows(2).map(|p| format!("{}{}", p[0], p[1]));
    words
        .iter()
        .map(|w| w.to_string())
        .chain(joined)
        .any(|w| w == word || (stem.len() >= 4 && w.starts_with(&stem)))
}

/// How well a sub-task describes a gold call, in [0, 1]: 0.7 × the share of the call's stated
/// values it mentions + 0.3 × the share of the tool name's words it uses (the name alone when
/// the call has no stated values).
pub fn describes(padded_subtask: &str, call: &ToolCall, derived: Option<&Vec<String>>) -> f64 {
    let vals: Vec<&Value> = stated_values(call, derived).map(|(_, v)| v).collect();
    let words = name_words(&call.name);
    let name = if words.is_empty() {
        0.0
    } else {
        words.iter().filter(|w| has_word(padded_subtask, w)).count() as f64 / words.len() as f64
    };
    if vals.is_empty() {
        return name;
    }
    let hit = vals.iter().filter(|v| mentions(padded_subtask, v)).count() as f64;
    0.7 * hit / vals.len() as f64 + 0.3 * name
}

/// Align `subtasks` with `gold`: each gold call goes to the sub-task that describes it best
/// (ties: the earliest), when any describes it at all.
pub fn align_plan(
    subtasks: &[String],
    gold: &[ToolCall],
    derived: &[Vec<String>],
) -> PlanAlignment {
    let padded: Vec<String> = subtasks.iter().map(|s| padded_words(s)).collect();
    let mut owner = Vec::with_capacity(gold.len());
    let mut calls_of = vec![Vec::new(); subtasks.len()];
    for (j, call) in gold.iter().enumerate() {
        let mut best: Option<(usize, f64)> = None;
        for (i, p) in padded.iter().enumerate() {
            let s = describes(p, call, derived.get(j));
            if s > 0.0 && best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        owner.push(best.map(|(i, _)| i));
        if let Some((i, _)) = best {
            calls_of[i].push(j);
        }
    }
    PlanAlignment { owner, calls_of }
}

/// A predicted call fully matches a gold call: same name, same argument names, every gold
/// value matched (numbers with a relative tolerance, strings case-insensitively).
pub fn call_matches(pred: &ToolCall, gold: &ToolCall) -> bool {
    call_similarity(pred, gold, &ExecutorWeights::default()) >= 1.0 - 1e-9
}

/// The gold of sub-task `k` under `align`: the gold calls it describes that were not made yet
/// (`made[j]`: gold call `j` was made by an earlier step), so an executor that made a call
/// early is not asked for it again.
pub fn step_gold(
    align: &PlanAlignment,
    gold: &[ToolCall],
    made: &[bool],
    k: usize,
) -> Vec<ToolCall> {
    align
        .calls_of
        .get(k)
        .map(|js| {
            js.iter()
                .filter(|&&j| !made.get(j).copied().unwrap_or(false))
                .map(|&j| gold[j].clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Mark in `made` the gold calls that `executed` made (each executed call makes at most one,
/// the first not yet made that it fully matches).
pub fn mark_made(executed: &[ToolCall], gold: &[ToolCall], made: &mut [bool]) {
    for c in executed {
        if let Some(j) = (0..gold.len()).find(|&j| !made[j] && call_matches(c, &gold[j])) {
            made[j] = true;
        }
    }
}

/// The gold calls grouped into turns, as a flat (ToolRL) agent answers them: calls that need
/// no earlier result go out together in one turn (ToolRL's parallel calls); a call with a
/// derived argument (`derived[j]` non-empty: a token from `login`, a price from an earlier
/// call) starts a new turn. Items whose calls need nothing earlier are one turn, as ToolRL's.
pub fn gold_turns(gold: &[ToolCall], derived: &[Vec<String>]) -> Vec<Vec<usize>> {
    let mut turns: Vec<Vec<usize>> = Vec::new();
    for j in 0..gold.len() {
        let needs_earlier = derived.get(j).is_some_and(|d| !d.is_empty());
        match turns.last_mut() {
            Some(t) if !needs_earlier => t.push(j),
            _ => turns.push(vec![j]),
        }
    }
    turns
}

/// The gold of the next flat turn: the calls not made yet of the first gold turn that still
/// has some (empty when all were made: the turn should answer).
pub fn turn_gold(gold: &[ToolCall], turns: &[Vec<usize>], made: &[bool]) -> Vec<ToolCall> {
    turns
        .iter()
        .find(|t| t.iter().any(|&j| !made[j]))
        .map(|t| {
            t.iter()
                .filter(|&&j| !made[j])
                .map(|&j| gold[j].clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gold() -> Vec<ToolCall> {
        vec![
            ToolCall::new("login", json!({"username": "alice", "password": "pw1"})),
            ToolCall::new("transfer", json!({"token": "T", "to": "bob", "amount": 50})),
        ]
    }

    fn derived() -> Vec<Vec<String>> {
        vec![vec![], vec!["token".into()]]
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn gold_shaped_plan_aligns_one_to_one() {
        let a = align_plan(
            &s(&["Log in as alice with password pw1", "Transfer 50 to bob"]),
            &gold(),
            &derived(),
        );
        assert_eq!(a.owner, vec![Some(0), Some(1)]);
        assert_eq!(a.calls_of, vec![vec![0], vec![1]]);
    }

    #[test]
    fn merged_reordered_extra_and_missing_subtasks() {
        // Merged: one sub-task owns both calls.
        let m = align_plan(
            &s(&["Log in as alice (password pw1), then transfer 50 to bob"]),
            &gold(),
            &derived(),
        );
        assert_eq!(m.calls_of, vec![vec![0, 1]]);
        // Reordered: calls follow their content, not the position.
        let r = align_plan(
            &s(&["Transfer 50 to bob", "Log in as alice with password pw1"]),
            &gold(),
            &derived(),
        );
        assert_eq!(r.owner, vec![Some(1), Some(0)]);
        // Extra: a sub-task describing no gold call owns none.
        let e = align_plan(
            &s(&[
                "Say hello",
                "Log in as alice with password pw1",
                "Transfer 50 to bob",
            ]),
            &gold(),
            &derived(),
        );
        assert_eq!(e.calls_of, vec![vec![], vec![0], vec![1]]);
        // Missing: the transfer is described nowhere.
        let x = align_plan(
            &s(&["Log in as alice with password pw1"]),
            &gold(),
            &derived(),
        );
        assert_eq!(x.unowned(), vec![1]);
    }

    #[test]
    fn split_subtasks_give_the_call_to_the_one_saying_more() {
        let a = align_plan(
            &s(&["Log in as alice", "Use password pw1 to log in"]),
            &gold(),
            &derived(),
        );
        // Each states one of the two values and says "log in": equal scores go to the
        // earliest.
        assert_eq!(a.owner[0], Some(0));
        assert!(a.calls_of[1].is_empty());
    }

    #[test]
    fn turns_break_where_a_call_needs_an_earlier_result() {
        let g = vec![
            ToolCall::new("get_weather", json!({"city": "a"})),
            ToolCall::new("get_weather", json!({"city": "b"})),
            ToolCall::new("login", json!({"username": "u", "password": "p"})),
            ToolCall::new("transfer", json!({"token": "T", "amount": 5})),
            ToolCall::new("logout", json!({"token": "T"})),
        ];
        let d = vec![
            vec![],
            vec![],
            vec![],
            vec!["token".into()],
            vec!["token".into()],
        ];
        assert_eq!(gold_turns(&g, &d), vec![vec![0, 1, 2], vec![3], vec![4]]);
        assert_eq!(
            gold_turns(&g[..2], &[]),
            vec![vec![0, 1]],
            "ToolRL items: one turn"
        );
        let turns = gold_turns(&g, &d);
        let mut made = vec![false; 5];
        assert_eq!(turn_gold(&g, &turns, &made).len(), 3);
        made[0] = true;
        made[2] = true;
        assert_eq!(turn_gold(&g, &turns, &made), vec![g[1].clone()]);
        made = vec![true; 5];
        assert!(turn_gold(&g, &turns, &made).is_empty());
    }
}

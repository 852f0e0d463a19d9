//! Planner–executor misalignment taxonomy of a failed hierarchical episode, by content: the
//! plan's sub-tasks are aligned with the gold calls by what they say ([`align_plan`]: values
//! and tool names, not positions), and each failed task gets one label, the first rule that
//! applies, in this order:
//!
//! 1. `plan_unparsable` (planner side): the planner's output has no usable sub-task list;
//! 2. `plan_missing_call` (planner): a gold call that no sub-task describes;
//! 3. `subtask_value_missing` (planner): a value a call needs (a non-derived gold argument
//!    value) is missing from, or misstated in, the sub-task that carries the call;
//! 4. `plan_too_coarse` (planner): a sub-task that carries several gold calls (a merge) and
//!    whose calls were not all made: a plan beyond what this executor carries out;
//! 5. `executor_failed` (executor): the plan is complete and correct, but a gold call of a
//!    one-call sub-task was never made (or the gold calls were made out of order);
//! 6. `plan_too_fine` (planner): every gold call was made in order, the task failed, and
//!    sub-tasks that carry no gold call made calls (the plan's extra steps did the damage);
//! 7. `final_state_wrong` (executor): every gold call was made in order, yet the task failed:
//!    the final world state differs from the gold state, or the benchmark's scorer rejected the
//!    call list (e.g. extra calls under API-Bank's exact match).
//!
//! Tasks without a gold call sequence (Bamboogle, BFCL irrelevance) are `unclassified`; flat
//! episodes have no plan and get no label.
use serde::{Deserialize, Serialize};

use crate::parse::ToolCall;
use crate::rewards::{align_plan, value_coverage_aligned};

/// One misalignment label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misalignment {
    PlanUnparsable,
    PlanMissingCall,
    SubtaskValueMissing,
    PlanTooCoarse,
    ExecutorFailed,
    PlanTooFine,
    FinalStateWrong,
    Unclassified,
}

/// Which side of the hierarchy a failure is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The plan lacks a call or a value, or asks for more than the executor carries out.
    Planner,
    /// The plan was complete and correct; the executor's calls were not.
    Executor,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Planner => "planner",
            Side::Executor => "executor",
        }
    }
}

impl Misalignment {
    /// All labels, in rule order.
    pub const ALL: [Misalignment; 8] = [
        Misalignment::PlanUnparsable,
        Misalignment::PlanMissingCall,
        Misalignment::SubtaskValueMissing,
        Misalignment::PlanTooCoarse,
        Misalignment::ExecutorFailed,
        Misalignment::PlanTooFine,
        Misalignment::FinalStateWrong,
        Misalignment::Unclassified,
    ];

    /// The side the failure is on (`None` for `unclassified`).
    pub fn side(self) -> Option<Side> {
        match self {
            Misalignment::PlanUnparsable
            | Misalignment::PlanMissingCall
            | Misalignment::SubtaskValueMissing
            | Misalignment::PlanTooCoarse
            | Misalignment::PlanTooFine => Some(Side::Planner),
            Misalignment::ExecutorFailed | Misalignment::FinalStateWrong => Some(Side::Executor),
            Misalignment::Unclassified => None,
        }
    }

    /// The snake_case name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Misalignment::PlanUnparsable => "plan_unparsable",
            Misalignment::PlanMissingCall => "plan_missing_call",
            Misalignment::PlanTooCoarse => "plan_too_coarse",
            Misalignment::PlanTooFine => "plan_too_fine",
            Misalignment::SubtaskValueMissing => "subtask_value_missing",
            Misalignment::ExecutorFailed => "executor_failed",
            Misalignment::FinalStateWrong => "final_state_wrong",
            Misalignment::Unclassified => "unclassified",
        }
    }

    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Misalignment::PlanUnparsable => "planner output has no usable sub-tasks",
            Misalignment::PlanMissingCall => "no sub-task describes a needed call",
            Misalignment::SubtaskValueMissing => {
                "the sub-task carrying a call misses or misstates a needed value"
            }
            Misalignment::PlanTooCoarse => {
                "a merged sub-task (several calls) the executor did not carry out"
            }
            Misalignment::ExecutorFailed => "executor failed on a complete, correct plan",
            Misalignment::PlanTooFine => "extra sub-tasks made calls that spoiled the outcome",
            Misalignment::FinalStateWrong => {
                "executor made the gold calls but the outcome is wrong"
            }
            Misalignment::Unclassified => "no gold call sequence to compare with",
        }
    }

    pub fn parse(s: &str) -> Option<Misalignment> {
        Misalignment::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// A label with the evidence that chose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub label: Misalignment,
    pub detail: String,
}

/// What the taxonomy looks at: one hierarchical episode (the greedy plan and its execution).
#[derive(Debug, Clone, Copy)]
pub struct EpisodeView<'a> {
    /// Whether the plan parsed into at least one sub-task.
    pub plan_parsed: bool,
    pub subtasks: &'a [String],
    /// The calls the executor made for each executed sub-task, in order.
    pub step_calls: &'a [Vec<ToolCall>],
    pub gold_calls: &'a [ToolCall],
    /// Per gold call, the argument names whose values come from earlier results.
    pub gold_derived: &'a [Vec<String>],
}

pub use crate::rewards::align::call_matches;

/// Gold calls form an ordered subsequence of the executed calls, under [`call_matches`].
pub fn gold_made_in_order(executed: &[ToolCall], gold: &[ToolCall]) -> bool {
    let mut it = executed.iter();
    gold.iter().all(|g| it.any(|e| call_matches(e, g)))
}

/// The label of a failed hierarchical episode (call only for failures).
pub fn classify(ep: &EpisodeView<'_>) -> Label {
    let label = |l: Misalignment, detail: String| Label { label: l, detail };
    if ep.gold_calls.is_empty() {
        return label(
            Misalignment::Unclassified,
            "the item has no gold calls".into(),
        );
    }
    if !ep.plan_parsed || ep.subtasks.is_empty() {
        return label(
            Misalignment::PlanUnparsable,
            "no sub-tasks could be read from the plan".into(),
        );
    }
    let a = align_plan(ep.subtasks, ep.gold_calls, ep.gold_derived);
    let unowned = a.unowned();
    if let Some(&j) = unowned.first() {
        return label(
            Misalignment::PlanMissingCall,
            format!(
                "no sub-task describes {}",
                ep.gold_calls[j].to_toolrl_json()
            ),
        );
    }
    let (_, missing) = value_coverage_aligned(ep.subtasks, ep.gold_calls, ep.gold_derived, &a);
    if !missing.is_empty() {
        return label(
            Misalignment::SubtaskValueMissing,
            format!("plan does not state {}", missing.join(", ")),
        );
    }
    let executed: Vec<ToolCall> = ep.step_calls.iter().flatten().cloned().collect();
    let made = |g: &ToolCall| executed.iter().any(|c| call_matches(c, g));
    // The first sub-task (in plan order) with a gold call never made.
    let failed = a.calls_of.iter().enumerate().find_map(|(i, js)| {
        let lost: Vec<usize> = js
            .iter()
            .copied()
            .filter(|&j| !made(&ep.gold_calls[j]))
            .collect();
        (!lost.is_empty()).then_some((i, js.len(), lost))
    });
    if let Some((i, carried, lost)) = failed {
        let got = ep.step_calls.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let got = if got.is_empty() {
            "no call".to_string()
        } else {
            got.iter()
                .map(ToolCall::to_toolrl_json)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let expected = lost
            .iter()
            .map(|&j| ep.gold_calls[j].to_toolrl_json())
            .collect::<Vec<_>>()
            .join("; ");
        let (l, what) = if carried > 1 {
            (
                Misalignment::PlanTooCoarse,
                format!("sub-task {} merges {carried} calls", i + 1),
            )
        } else {
            (Misalignment::ExecutorFailed, format!("sub-task {}", i + 1))
        };
        return label(l, format!("{what}: expected {expected} but got {got}"));
    }
    if !gold_made_in_order(&executed, ep.gold_calls) {
        return label(
            Misalignment::ExecutorFailed,
            "every gold call was made, but not in order".into(),
        );
    }
    let extra: Vec<usize> = a
        .calls_of
        .iter()
        .enumerate()
        .filter(|(i, js)| js.is_empty() && ep.step_calls.get(*i).is_some_and(|c| !c.is_empty()))
        .map(|(i, _)| i + 1)
        .collect();
    if !extra.is_empty() {
        return label(
            Misalignment::PlanTooFine,
            format!(
                "sub-task(s) {} carry no gold call but made calls",
                extra
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    label(
        Misalignment::FinalStateWrong,
        format!(
            "all {} gold calls were made ({} calls in all) but the task failed",
            ep.gold_calls.len(),
            executed.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gold() -> Vec<ToolCall> {
        vec![
            ToolCall::new("login", json!({"user": "ana"})),
            ToolCall::new("send", json!({"to": "bob", "token": "t1"})),
        ]
    }
    fn derived() -> Vec<Vec<String>> {
        vec![vec![], vec!["token".into()]]
    }
    fn plan(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn run(subtasks: &[String], steps: &[Vec<ToolCall>], parsed: bool) -> Label {
        let g = gold();
        let d = derived();
        classify(&EpisodeView {
            plan_parsed: parsed,
            subtasks,
            step_calls: steps,
            gold_calls: &g,
            gold_derived: &d,
        })
    }

    #[test]
    fn unparsable_missing_call_merge_and_extra_steps() {
        assert_eq!(run(&[], &[], false).label, Misalignment::PlanUnparsable);
        let l = run(&plan(&["log in as ana"]), &[], true);
        assert_eq!(l.label, Misalignment::PlanMissingCall);
        assert!(l.detail.contains("send"), "{}", l.detail);
        // A merge the executor carried half of: planner side (beyond this executor).
        let g = gold();
        let merged = plan(&["log in as ana and send to bob"]);
        let l = run(&merged, &[vec![g[0].clone()]], true);
        assert_eq!(l.label, Misalignment::PlanTooCoarse);
        assert!(
            l.detail.starts_with("sub-task 1 merges 2 calls"),
            "{}",
            l.detail
        );
        assert_eq!(l.label.side(), Some(Side::Planner));
        // The same merge carried out whole is no failure of the plan: the outcome decides.
        let l = run(&merged, &[vec![g[0].clone(), g[1].clone()]], true);
        assert_eq!(l.label, Misalignment::FinalStateWrong);
        // An extra sub-task that made a call, all gold calls made: the extra step did it.
        let l = run(
            &plan(&["log in as ana", "look around", "send to bob"]),
            &[
                vec![g[0].clone()],
                vec![ToolCall::new("extra", json!({}))],
                vec![g[1].clone()],
            ],
            true,
        );
        assert_eq!(l.label, Misalignment::PlanTooFine);
        assert_eq!(l.detail, "sub-task(s) 2 carry no gold call but made calls");
        // Reordered sub-tasks are aligned by content: the executor's failure is named on the
        // sub-task that carries the call.
        let l = run(
            &plan(&["send to bob", "log in as ana"]),
            &[vec![], vec![g[0].clone()]],
            true,
        );
        assert_eq!(l.label, Misalignment::ExecutorFailed);
        assert!(l.detail.starts_with("sub-task 1: expected"), "{}", l.detail);
        assert_eq!(l.label.side(), Some(Side::Executor));
    }

    #[test]
    fn missing_value_is_named_and_derived_values_are_exempt() {
        let l = run(&plan(&["log in", "send the message to bob"]), &[], true);
        assert_eq!(l.label, Misalignment::SubtaskValueMissing);
        assert!(l.detail.contains("login.user=ana"), "{}", l.detail);
        // the token is derived: a plan that never states it is fine
        assert!(!l.detail.contains("token"), "{}", l.detail);
        let l = run(&plan(&["log in as ana", "send to carl"]), &[], true);
        assert_eq!(l.label, Misalignment::SubtaskValueMissing);
        assert!(l.detail.contains("send.to=bob"));
    }

    #[test]
    fn executor_failure_names_the_step() {
        let g = gold();
        let steps = vec![
            vec![g[0].clone()],
            vec![ToolCall::new(
                "send",
                json!({"to": "bob", "token": "WRONG"}),
            )],
        ];
        let l = run(&plan(&["log in as ana", "send to bob"]), &steps, true);
        assert_eq!(l.label, Misalignment::ExecutorFailed);
        assert!(l.detail.starts_with("sub-task 2: expected"), "{}", l.detail);
        let l = run(&plan(&["log in as ana", "send to bob"]), &[vec![]], true);
        assert!(l.detail.contains("sub-task 1: expected") && l.detail.ends_with("no call"));
    }

    #[test]
    fn gold_calls_made_means_outcome_wrong() {
        let g = gold();
        // numbers and case normalised: "ANA" matches "ana"
        let steps = vec![
            vec![ToolCall::new("login", json!({"user": "ANA"}))],
            vec![g[1].clone(), ToolCall::new("extra", json!({}))],
        ];
        let l = run(&plan(&["log in as ana", "send to bob"]), &steps, true);
        assert_eq!(l.label, Misalignment::FinalStateWrong);
        assert!(l.detail.contains("3 calls in all"));
    }

    #[test]
    fn no_gold_is_unclassified_and_names_round_trip() {
        let l = classify(&EpisodeView {
            plan_parsed: false,
            subtasks: &[],
            step_calls: &[],
            gold_calls: &[],
            gold_derived: &[],
        });
        assert_eq!(l.label, Misalignment::Unclassified);
        for m in Misalignment::ALL {
            assert_eq!(Misalignment::parse(m.name()), Some(m));
            assert_eq!(
                serde_json::to_value(m).unwrap(),
                serde_json::Value::String(m.name().into())
            );
        }
    }

    #[test]
    fn numeric_tolerance_in_matching() {
        let a = ToolCall::new("f", json!({"x": 5}));
        let b = ToolCall::new("f", json!({"x": 5.0}));
        assert!(call_matches(&a, &b));
        assert!(!call_matches(
            &ToolCall::new("f", json!({"x": 5, "y": 1})),
            &b
        ));
        assert!(gold_made_in_order(&[a.clone(), b.clone()], &[b.clone(), a]));
        assert!(!gold_made_in_order(&[], &[b]));
    }
}

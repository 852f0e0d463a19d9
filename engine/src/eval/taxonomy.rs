//! Planner–executor misalignment taxonomy of a failed hierarchical episode.
//!
//! Each failed task gets one label, the first rule that applies, in this order:
//!
//! 1. `plan_unparsable` — the planner's output has no usable sub-task list;
//! 2. `plan_too_coarse` — fewer sub-tasks than needed (the gold plan's length, or the number of
//!    gold calls where there is no gold plan);
//! 3. `plan_too_fine` — more sub-tasks than needed;
//! 4. `subtask_value_missing` — the right number of sub-tasks, but a value the calls need (a
//!    non-derived gold argument value) is missing from, or misstated in, the sub-task texts;
//! 5. `executor_failed` — the plan is right (count and values), but the executor's calls on some
//!    sub-task do not match the gold call of that sub-task;
//! 6. `final_state_wrong` — every gold call was made (in order), yet the task failed: the final
//!    world state differs from the gold state, or the benchmark's scorer rejected the call list
//!    (e.g. extra calls under API-Bank's exact match).
//!
//! Tasks without a gold call sequence (Bamboogle, BFCL irrelevance) are `unclassified`; flat
//! episodes have no plan and get no label.
use serde::{Deserialize, Serialize};

use crate::parse::ToolCall;
use crate::rewards::{call_similarity, plan_value_coverage, ExecutorWeights};

/// One misalignment label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misalignment {
    PlanUnparsable,
    PlanTooCoarse,
    PlanTooFine,
    SubtaskValueMissing,
    ExecutorFailed,
    FinalStateWrong,
    Unclassified,
}

impl Misalignment {
    /// All labels, in rule order.
    pub const ALL: [Misalignment; 7] = [
        Misalignment::PlanUnparsable,
        Misalignment::PlanTooCoarse,
        Misalignment::PlanTooFine,
        Misalignment::SubtaskValueMissing,
        Misalignment::ExecutorFailed,
        Misalignment::FinalStateWrong,
        Misalignment::Unclassified,
    ];

    /// The snake_case name used in files.
    pub fn name(self) -> &'static str {
        match self {
            Misalignment::PlanUnparsable => "plan_unparsable",
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
            Misalignment::PlanTooCoarse => "plan too coarse (fewer sub-tasks than needed)",
            Misalignment::PlanTooFine => "plan too fine (more sub-tasks than needed)",
            Misalignment::SubtaskValueMissing => "a sub-task misses or misstates a needed value",
            Misalignment::ExecutorFailed => "executor failed on a correct sub-task",
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
    /// Gold plan (may be empty: benchmarks have none).
    pub gold_plan: &'a [String],
    pub gold_calls: &'a [ToolCall],
    /// Per gold call, the argument names whose values come from earlier results.
    pub gold_derived: &'a [Vec<String>],
}

/// A predicted call fully matches a gold call: same name, same argument names, every gold
/// value matched (numbers compared with a relative tolerance, strings case-insensitively).
pub fn call_matches(pred: &ToolCall, gold: &ToolCall) -> bool {
    call_similarity(pred, gold, &ExecutorWeights::default()) >= 1.0 - 1e-9
}

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
    let needed = if ep.gold_plan.is_empty() {
        ep.gold_calls.len()
    } else {
        ep.gold_plan.len()
    };
    let n = ep.subtasks.len();
    if n < needed {
        return label(
            Misalignment::PlanTooCoarse,
            format!("{n} sub-tasks, {needed} needed"),
        );
    }
    if n > needed {
        return label(
            Misalignment::PlanTooFine,
            format!("{n} sub-tasks, {needed} needed"),
        );
    }
    let (_, missing) = plan_value_coverage(ep.subtasks, ep.gold_calls, ep.gold_derived);
    if !missing.is_empty() {
        return label(
            Misalignment::SubtaskValueMissing,
            format!("plan does not state {}", missing.join(", ")),
        );
    }
    let executed: Vec<ToolCall> = ep.step_calls.iter().flatten().cloned().collect();
    if !gold_made_in_order(&executed, ep.gold_calls) {
        // With one sub-task per gold call, name the first sub-task whose calls miss its gold call.
        let bad = if needed == ep.gold_calls.len() {
            ep.gold_calls.iter().enumerate().find_map(|(k, g)| {
                let made = ep.step_calls.get(k).map(Vec::as_slice).unwrap_or(&[]);
                (!made.iter().any(|c| call_matches(c, g))).then_some((k, g, made))
            })
        } else {
            None
        };
        let detail = match bad {
            Some((k, g, made)) => format!(
                "sub-task {} expected {} but got {}",
                k + 1,
                g.to_toolrl_json(),
                if made.is_empty() {
                    "no call".to_string()
                } else {
                    made.iter()
                        .map(ToolCall::to_toolrl_json)
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ),
            None => "the gold calls were not all made in order".to_string(),
        };
        return label(Misalignment::ExecutorFailed, detail);
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
            gold_plan: &[],
            gold_calls: &g,
            gold_derived: &d,
        })
    }

    #[test]
    fn unparsable_and_counts() {
        assert_eq!(run(&[], &[], false).label, Misalignment::PlanUnparsable);
        let l = run(&plan(&["log in as ana and send to bob"]), &[], true);
        assert_eq!(l.label, Misalignment::PlanTooCoarse);
        assert_eq!(l.detail, "1 sub-tasks, 2 needed");
        let l = run(&plan(&["log in as ana", "look", "send to bob"]), &[], true);
        assert_eq!(l.label, Misalignment::PlanTooFine);
    }

    #[test]
    fn gold_plan_length_wins_over_call_count() {
        let g = gold();
        let d = derived();
        let sub = plan(&["log in as ana and send to bob"]);
        let l = classify(&EpisodeView {
            plan_parsed: true,
            subtasks: &sub,
            step_calls: &[vec![]],
            gold_plan: &plan(&["do it all"]),
            gold_calls: &g,
            gold_derived: &d,
        });
        // count matches the gold plan; values present; the executor made no call
        assert_eq!(l.label, Misalignment::ExecutorFailed);
        assert_eq!(
            l.detail, "the gold calls were not all made in order",
            "no per-step attribution when sub-tasks and gold calls are not one-to-one"
        );
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
        assert!(l.detail.starts_with("sub-task 2 expected"), "{}", l.detail);
        let l = run(&plan(&["log in as ana", "send to bob"]), &[vec![]], true);
        assert!(l.detail.contains("sub-task 1 expected") && l.detail.ends_with("no call"));
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
            gold_plan: &[],
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

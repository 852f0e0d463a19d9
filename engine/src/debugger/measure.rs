//! Measuring and judging whole plans for the debugger: a plan run N times (or once with argmax
//! decoding) from a fresh world, and a branch judged as it ran, each run scored as training
//! scores an execution (success, final-state difference, planner reward, failure label and
//! side from the content alignment).
use cahl_sessions::debug::PlanRun;
use cahl_sessions::CallRecord;
use serde_json::Value;

use crate::eval::taxonomy::{classify, EpisodeView};
use crate::parse::{call_record, parse_planner, ToolCall};
use crate::rewards::{planner_reward_parsed, PlanEpisode};
use crate::train::rollout::episode_success;
use crate::train::TrainConfig;
use crate::worlds::builtin::render_plan;
use crate::worlds::Task;

/// At most this many entries in [`PlanRun::state_diff`].
pub const MAX_STATE_DIFF: usize = 4;

/// The planner's answer for a plan given in the debugger (an edit, or a recorded plan's
/// sub-tasks): the planner's own format, so its format score is full and the parameter and
/// execution levels are what tell plans apart.
pub fn debugger_plan_text(subtasks: &[String]) -> String {
    format!(
        "<think>plan given in the debugger</think>\n<plan>\n{}\n</plan>",
        render_plan(subtasks)
    )
}

/// Where `got` differs from `gold`, as `path: got (gold want)` lines, depth first, at most
/// `max` of them (a last line says how many more).
pub fn state_diff(gold: &Value, got: &Value, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    walk(gold, got, String::new(), &mut out);
    if out.len() > max {
        let more = out.len() - max;
        out.truncate(max);
        out.push(format!(
            "… {more} more difference{}",
            if more == 1 { "" } else { "s" }
        ));
    }
    out
}

fn short(v: Option<&Value>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 40 {
                format!("{}…", s.chars().take(39).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn walk(gold: &Value, got: &Value, path: String, out: &mut Vec<String>) {
    match (gold, got) {
        (Value::Object(g), Value::Object(o)) => {
            let mut keys: Vec<&String> = g.keys().chain(o.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (g.get(k), o.get(k)) {
                    (Some(a), Some(b)) => walk(a, b, p, out),
                    (a, b) => out.push(format!("{p}: {} (gold {})", short(b), short(a))),
                }
            }
        }
        (Value::Array(g), Value::Array(o)) if g.len() == o.len() => {
            for (i, (a, b)) in g.iter().zip(o).enumerate() {
                walk(a, b, format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => {
            let p = if path.is_empty() {
                "state".into()
            } else {
                path
            };
            out.push(format!("{p}: {} (gold {})", short(Some(b)), short(Some(a))));
        }
        _ => {}
    }
}

/// One execution of `subtasks`, judged as training judges it.
pub struct Judged<'a> {
    pub task: &'a Task,
    pub subtasks: &'a [String],
    /// The calls each sub-task's step ran (refused calls excluded).
    pub step_calls: &'a [Vec<ToolCall>],
    pub final_state: Option<&'a Value>,
    /// Every step's executor reward (empty: not known).
    pub step_rewards: &'a [f64],
    /// The run ended with a final answer to the user.
    pub answered: bool,
}

/// Judges one execution: success, state difference, the planner's reward (its answer written
/// by [`debugger_plan_text`]), and for a failure its label, side and detail.
pub fn judge_run(j: &Judged<'_>, cfg: &TrainConfig) -> PlanRun {
    let executed: Vec<ToolCall> = j.step_calls.iter().flatten().cloned().collect();
    let success = episode_success(j.task, &executed, j.final_state, j.answered);
    let plan_text = debugger_plan_text(j.subtasks);
    let parsed = parse_planner(&plan_text);
    let planner = planner_reward_parsed(
        &parsed,
        &PlanEpisode {
            plan_text: &plan_text,
            executed: &executed,
            final_state: j.final_state,
            gold_calls: &j.task.gold_calls,
            gold_derived: &j.task.gold_derived,
            gold_state: j.task.gold_final_state.as_ref(),
        },
        &cfg.rewards,
    );
    let (failure, failure_side, failure_detail) = if success {
        (None, None, None)
    } else {
        let ran = &j.subtasks[..j.subtasks.len().min(cfg.rollout.max_subtasks)];
        let l = classify(&EpisodeView {
            plan_parsed: !ran.is_empty(),
            subtasks: ran,
            step_calls: j.step_calls,
            gold_calls: &j.task.gold_calls,
            gold_derived: &j.task.gold_derived,
        });
        (
            Some(l.label.name().to_string()),
            l.label.side().map(|s| s.name().to_string()),
            Some(l.detail),
        )
    };
    let state_diff = match (&j.task.gold_final_state, j.final_state) {
        (Some(g), Some(f)) => state_diff(g, f, MAX_STATE_DIFF),
        (Some(_), None) => vec!["the world reported no final state".into()],
        _ => Vec::new(),
    };
    let executor_reward = if j.step_rewards.is_empty() {
        f64::NAN
    } else {
        j.step_rewards.iter().sum::<f64>() / j.step_rewards.len() as f64
    };
    PlanRun {
        success,
        planner_reward: planner.total,
        executor_reward,
        failure,
        failure_side,
        failure_detail,
        state_diff,
        calls: executed
            .iter()
            .map(call_record)
            .collect::<Vec<CallRecord>>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_diff_names_each_differing_leaf() {
        let gold =
            json!({"accounts": {"alice": {"balance": 50}, "bob": {"balance": 80}}, "log": [1, 2]});
        let got = json!({"accounts": {"alice": {"balance": 100}, "bob": {"balance": 80}}, "log": [1, 3], "x": true});
        assert_eq!(
            state_diff(&gold, &got, 4),
            vec![
                "accounts.alice.balance: 100 (gold 50)".to_string(),
                "log[1]: 3 (gold 2)".to_string(),
                "x: true (gold absent)".to_string(),
            ]
        );
        assert!(state_diff(&gold, &gold, 4).is_empty());
        let d = state_diff(&gold, &got, 1);
        assert_eq!(d.len(), 2);
        assert_eq!(d[1], "… 2 more differences");
    }

    #[test]
    fn the_debugger_plan_text_parses_back_to_its_subtasks() {
        let plan = vec![
            "Log in as alice".to_string(),
            "Transfer 5 to bob".to_string(),
        ];
        let parsed = parse_planner(&debugger_plan_text(&plan));
        assert_eq!(parsed.subtasks, plan);
        assert!(parsed.issues.is_empty(), "{:?}", parsed.issues);
    }
}

//! What `[world]` gives a training run: training tasks, held-out tasks and the world, from the
//! built-in generator or a benchmark's items (with gold plans synthesized from their gold calls).
use std::path::Path;

use serde_json::Value;

use super::{toolrl, world_by_name, Bench, BenchError};
use crate::train::TrainConfig;
use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
use crate::worlds::{Split, Task, World};

/// What `[world]` gives a training run.
pub struct TrainingWorld {
    pub train: Vec<Task>,
    /// Held-out tasks for `[eval]` (empty when it is off).
    pub held_out: Vec<Task>,
    pub world: Box<dyn World>,
}

/// Training tasks, held-out tasks and the world of a run's `[world]`.
///
/// * `builtin`: `train_tasks` generated train-split tasks; held out: `[eval].tasks` test-split
///   tasks.
/// * `toolrl`, `api-bank`, `bfcl`, `nestful` (`data` = the benchmark's folder): the items with
///   gold calls, shuffled with `seed`; `[eval].tasks` of them are held out (at most half), the
///   rest (at most `train_tasks`) are trained on. Their tools are not executable: a static world
///   answers each valid call with a placeholder observation and rewards compare against the gold
///   calls. Gold plans are synthesized from the gold calls (one sub-task per call).
pub fn training_world(cfg: &TrainConfig) -> Result<TrainingWorld, BenchError> {
    let kind = cfg.world.kind.as_str();
    let held_n = if cfg.eval.every > 0 {
        cfg.eval.tasks
    } else {
        0
    };
    if kind == "builtin" || kind == "builtin-one-call" {
        return Ok(TrainingWorld {
            train: generate_tasks(Split::Train, cfg.world.train_tasks, cfg.seed)?,
            held_out: generate_tasks(Split::Test, held_n, cfg.seed)?,
            world: Box::new(if kind == "builtin" {
                BuiltinWorld::new()
            } else {
                BuiltinWorld::one_call_per_step()
            }),
        });
    }
    if cfg.world.data.is_empty() {
        return Err(BenchError::Input(format!(
            "[world].kind {kind:?} needs a data folder: --data DIR (e.g. ../shared/data/{kind})"
        )));
    }
    let data = Path::new(&cfg.world.data);
    let all =
        match kind {
            "toolrl" => toolrl::load_tasks(data)?,
            "api-bank" | "bfcl" | "nestful" => {
                Bench::parse(kind)?.load_tasks(Some(data), None, cfg.seed, None)?
            }
            "bamboogle" => return Err(BenchError::Input(
                "world \"bamboogle\" is for eval only (it needs a search corpus index): train on \
                 builtin, toolrl, api-bank, bfcl or nestful"
                    .into(),
            )),
            other => {
                return Err(BenchError::Input(format!(
            "unknown [world].kind {other:?} (expected builtin, builtin-one-call, toolrl, api-bank, bfcl or nestful)"
        )))
            }
        };
    // Items with gold calls, and ToolRL's items whose gold is a final answer only.
    let mut usable: Vec<Task> = all
        .into_iter()
        .filter(|t| !t.gold_calls.is_empty() || (kind == "toolrl" && t.gold_answer.is_some()))
        .collect();
    if usable.is_empty() {
        return Err(BenchError::Input(format!(
            "{}: no items with gold calls to train on",
            data.display()
        )));
    }
    for t in &mut usable {
        if t.gold_plan.is_empty() {
            t.gold_plan = synth_gold_plan(t);
        }
    }
    let (mut train, held_out) = split_held_out(usable, held_n, cfg.seed);
    train.truncate(cfg.world.train_tasks.max(1));
    Ok(TrainingWorld {
        train,
        held_out,
        world: world_by_name(kind, None)?,
    })
}

/// The sub-task of an item whose gold is a final answer without a tool call.
pub const ANSWER_SUBTASK: &str = "Answer the user directly, without calling a tool.";

/// A gold plan for benchmark items, which come with gold calls only: one sub-task per call
/// that names the tool and states every argument value (derived ones as "from the earlier
/// result"); an item with no call but a gold answer gets the one sub-task [`ANSWER_SUBTASK`].
/// Used by `separate` mode (executor on gold sub-tasks) and by `sft`.
pub fn synth_gold_plan(task: &Task) -> Vec<String> {
    if task.gold_calls.is_empty() && task.gold_answer.is_some() {
        return vec![ANSWER_SUBTASK.to_string()];
    }
    task.gold_calls
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let derived = task.gold_derived.get(k);
            let args: Vec<String> = c
                .arguments
                .iter()
                .map(|(a, v)| {
                    if derived.is_some_and(|d| d.contains(a)) {
                        format!("{a} from the earlier result")
                    } else {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        format!("{a} {v}")
                    }
                })
                .collect();
            if args.is_empty() {
                format!("Call {}.", c.name)
            } else {
                format!("Call {} with {}.", c.name, args.join(", "))
            }
        })
        .collect()
}

/// Split benchmark tasks into (train, held-out): a seeded shuffle, the last `held_out` items
/// held out (at most half of the tasks).
pub fn split_held_out(mut tasks: Vec<Task>, held_out: usize, seed: u64) -> (Vec<Task>, Vec<Task>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x5eed_0001));
    tasks.shuffle(&mut rng);
    let n = held_out.min(tasks.len() / 2);
    let held = tasks.split_off(tasks.len() - n);
    (tasks, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_arguments_are_not_stated_in_synthesized_plans() {
        let task = Task {
            id: "x".into(),
            world: "nestful".into(),
            split: None,
            request: "r".into(),
            tools: vec![],
            gold_plan: vec![],
            gold_calls: vec![
                crate::parse::ToolCall::new("a", serde_json::json!({})),
                crate::parse::ToolCall::new("b", serde_json::json!({"x": "$var1.y$", "n": 2})),
            ],
            gold_derived: vec![vec![], vec!["x".into()]],
            gold_final_state: None,
            gold_answer: None,
            template: None,
        };
        let plan = synth_gold_plan(&task);
        assert_eq!(plan[0], "Call a.");
        assert_eq!(plan[1], "Call b with x from the earlier result, n 2.");
    }

    #[test]
    fn held_out_split_is_seeded_disjoint_and_at_most_half() {
        let mk = |i: usize| Task {
            id: format!("t{i}"),
            world: "toolrl".into(),
            split: None,
            request: String::new(),
            tools: vec![],
            gold_plan: vec![],
            gold_calls: vec![],
            gold_derived: vec![],
            gold_final_state: None,
            gold_answer: None,
            template: None,
        };
        let tasks: Vec<Task> = (0..10).map(mk).collect();
        let (a, b) = split_held_out(tasks.clone(), 3, 5);
        let (a2, b2) = split_held_out(tasks.clone(), 3, 5);
        assert_eq!((a.len(), b.len()), (7, 3));
        assert_eq!(a, a2);
        assert_eq!(b, b2);
        assert!(b.iter().all(|t| !a.contains(t)));
        let (_, b3) = split_held_out(tasks.clone(), 3, 6);
        assert_ne!(b, b3, "another seed holds out other items");
        let (a4, b4) = split_held_out(tasks, 100, 5);
        assert_eq!((a4.len(), b4.len()), (5, 5));
    }
}

//! Gold conversation texts: the planner, executor and flat conversations of a task rendered
//! through the rollout's own prompts, plan merging for imperfect demonstrations, and role
//! weighting.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::train::prompts::{self, HistoryItem};
use crate::worlds::builtin::{generate_tasks, render_plan, BuiltinWorld};
use crate::worlds::{Split, Task, World};

/// Which conversation an example comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Planner,
    Executor,
    Flat,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Planner, Role::Executor, Role::Flat];
    pub fn name(self) -> &'static str {
        match self {
            Role::Planner => "planner",
            Role::Executor => "executor",
            Role::Flat => "flat",
        }
    }

    /// The role called `name` (`planner`, `executor`, `flat`).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One gold conversation as text.
#[derive(Debug, Clone)]
pub struct GoldText {
    pub role: Role,
    pub system: String,
    pub user: String,
    /// The assistant's answer (the rollout parsers' format); `<|im_end|>` is appended when
    /// tokenized.
    pub completion: String,
}

/// The gold planner answer for a task.
pub fn gold_plan_text(task: &Task) -> String {
    plan_text(task, &task.gold_plan)
}

/// A planner answer for `task` with the sub-tasks `plan` (the `<think>` line names the gold
/// calls).
pub fn plan_text(task: &Task, plan: &[String]) -> String {
    let names: Vec<&str> = task.gold_calls.iter().map(|c| c.name.as_str()).collect();
    let n = task.gold_plan.len();
    format!(
        "<think>{n} step{}: {}.</think>\n<plan>\n{}\n</plan>",
        if n == 1 { "" } else { "s" },
        names.join(", "),
        render_plan(plan)
    )
}

/// The gold plan with its last two sub-tasks written as one ("A, then B"): the coarse plan of
/// an imperfect demonstration. `None` for single-step plans.
pub fn merged_plan(plan: &[String]) -> Option<Vec<String>> {
    let n = plan.len();
    if n < 2 {
        return None;
    }
    let mut out = plan[..n - 2].to_vec();
    out.push(format!("{}, then {}", plan[n - 2], plan[n - 1]));
    Some(out)
}

/// Replace the planner answer of a `merged` fraction of the multi-step tasks with a coarse
/// plan ([`merged_plan`]), chosen deterministically from `seed`. `texts` holds the
/// conversations of `tasks` in order, each task's planner conversation first (as
/// [`builtin_gold_texts`] returns them). Returns how many plans were merged.
pub fn merge_some_plans(tasks: &[Task], texts: &mut [GoldText], merged: f64, seed: u64) -> usize {
    if merged <= 0.0 {
        return 0;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_7267_6564);
    let mut planner = texts.iter_mut().filter(|g| g.role == Role::Planner);
    let mut count = 0;
    for t in tasks {
        let Some(g) = planner.next() else { break };
        let draw: f64 = rng.random();
        if let Some(plan) = merged_plan(&t.gold_plan) {
            if draw < merged {
                g.completion = plan_text(t, &plan);
                count += 1;
            }
        }
    }
    count
}

/// The gold executor answer for one call.
pub fn gold_call_text(call: &crate::parse::ToolCall) -> String {
    format!(
        "<think>Call {}.</think>\n<tool_call>\n{}\n</tool_call>",
        call.name,
        call.to_toolrl_json()
    )
}

/// The flat baseline's final answer once every call is made.
pub const FLAT_DONE: &str = "<think>All steps are done.</think>\n<response>Done.</response>";

/// Gold conversations of one task (planner, executor per sub-task, flat per turn). Gold calls
/// are executed in `world` for the observations the later prompts show.
pub fn gold_texts(task: &Task, world: &mut dyn World) -> Result<Vec<GoldText>> {
    let err = |source| EngineError::Task {
        task: task.id.clone(),
        source,
    };
    let tools = if task.tools.is_empty() {
        world.tools()
    } else {
        task.tools.clone()
    };
    let mut out = vec![GoldText {
        role: Role::Planner,
        system: prompts::planner_system(&tools),
        user: task.request.clone(),
        completion: gold_plan_text(task),
    }];
    world.reset(task).map_err(err)?;
    let esys = prompts::executor_system(&tools);
    let fsys = prompts::flat_system(&tools);
    let mut history: Vec<HistoryItem> = Vec::new();
    for (k, call) in task.gold_calls.iter().enumerate() {
        if k < task.gold_plan.len() {
            out.push(GoldText {
                role: Role::Executor,
                system: esys.clone(),
                user: prompts::executor_user(&task.request, &task.gold_plan, k, &history),
                completion: gold_call_text(call),
            });
        }
        out.push(GoldText {
            role: Role::Flat,
            system: fsys.clone(),
            user: prompts::flat_user(&task.request, &history),
            completion: gold_call_text(call),
        });
        let observation = world.execute(call);
        history.push(HistoryItem {
            call: call.clone(),
            observation,
        });
    }
    // An item whose gold ends in a final answer (ToolRL): the answer closes the flat run, and
    // an item with no call has it as its one executor step.
    let finish = match &task.gold_answer {
        Some(a) if task.world == crate::benchmarks::toolrl::WORLD_NAME => answer_text(a),
        _ => FLAT_DONE.to_string(),
    };
    if task.gold_calls.is_empty() && task.gold_plan.len() == 1 && task.gold_answer.is_some() {
        out.push(GoldText {
            role: Role::Executor,
            system: esys.clone(),
            user: prompts::executor_user(&task.request, &task.gold_plan, 0, &history),
            completion: finish.clone(),
        });
    }
    out.push(GoldText {
        role: Role::Flat,
        system: fsys,
        user: prompts::flat_user(&task.request, &history),
        completion: finish,
    });
    Ok(out)
}

/// A final answer in ToolRL's format.
pub fn answer_text(answer: &str) -> String {
    format!("<think>Answer the user.</think>\n<response>{answer}</response>")
}

/// The examples of `n` train-split tasks of the built-in world, and the tasks.
pub fn builtin_gold_texts(n: usize, seed: u64) -> Result<(Vec<Task>, Vec<GoldText>)> {
    let tasks = generate_tasks(Split::Train, n, seed)?;
    let mut world = BuiltinWorld::new();
    let mut texts = Vec::new();
    for t in &tasks {
        texts.extend(gold_texts(t, &mut world)?);
    }
    Ok((tasks, texts))
}

/// Keep the conversations of the roles in `roles`, each as often as its role is listed (empty:
/// all, once).
pub fn weight_roles(texts: Vec<GoldText>, roles: &[Role]) -> Vec<GoldText> {
    if roles.is_empty() {
        return texts;
    }
    let mut out = Vec::new();
    for r in Role::ALL {
        let n = roles.iter().filter(|x| **x == r).count();
        for _ in 0..n {
            out.extend(texts.iter().filter(|g| g.role == r).cloned());
        }
    }
    out
}

//! `--mode ih-grpo`: an implicit hierarchy in one policy. One adapter (the executor's) writes
//! `<think>…</think><plan>…</plan><tool_call>…</tool_call>` in one completion: the plan's
//! numbered sub-tasks, then one call per sub-task in plan order. The calls run only after the
//! completion is written (delayed execution), in order, each reference to an earlier result
//! (`"$k.field"`, [`crate::worlds::refs`]) resolved before it runs; at most
//! `rollout.max_subtasks` of them. The capability-boundary testbed's limit (one call per
//! sub-task) does not bind here: each call is its own sub-task's by construction.
//!
//! Rewards are CAHL's: the plan gets the planner reward (format, parameter level, and the
//! execution level of what its calls achieved); call `j` gets the executor's step reward
//! against the gold calls its sub-task `j` describes (content alignment). With
//! `[ih_grpo] advantage = "segments"` the plan's tokens (and every token outside the calls)
//! carry the group advantage of the planner reward, and call `j`'s tokens the advantage of its
//! reward normalised across the group's completions that wrote a call `j`: one policy learns
//! what the two policies of `cahl` learn, from one sample. `"outcome"` gives every token the
//! group advantage of task success instead.
//!
//! This is the design of this tool's issue #20, after the published IH-GRPO (arXiv 2605.18500,
//! code Lumina04/IH-GRPO-01), which is for math with a Python interpreter: its delayed
//! execution is a token the model emits to run the code written so far, its reward is the
//! outcome only, and its loss adds a hierarchy correction term on that token (lambda = 0.001).
//! Taken from it: one policy, calls written before any runs, executed afterwards; not
//! implemented: the correction term and the model's own choice of when to execute.
use cahl_sessions::records::{ExecSample, PlanRecord, StepRecord, TrajectoryRecord};
use serde_json::Value;

use crate::agent::Agent;
use crate::backend::SampleRequest;
use crate::error::Result;
use crate::grpo::{group_advantages, per_index_advantages, SeqAdvantage};
use crate::parse::{
    call_record, parse_executor, parse_planner, ExecutorOutput, IssueClass, PlannerOutput, ToolCall,
};
use crate::rewards::align::{gold_turns, mark_made, step_gold, turn_gold};
use crate::rewards::{
    align_plan, executor_step_reward_parsed, planner_reward_parsed, PlanEpisode, RewardBreakdown,
};
use crate::sampling::{Detok, SamplingParams};
use crate::train::config::{IhAdvantage, TrainConfig};
use crate::train::prompts;
use crate::worlds::refs::resolve_call;
use crate::worlds::{Observation, Task, World};

use super::rollout::{
    episode_success, failure_of, mean, mix_seed, task_info, to_record_breakdown, tools_of, Group,
    Policy, Prefixes, SideCounts, TaskRollout,
};

/// A completion cut into its plan part and its calls.
#[derive(Debug, Clone)]
pub struct IhParsed {
    /// The plan part (`<think>` and `<plan>`), parsed as a planner output.
    pub plan: PlannerOutput,
    /// Byte length of the plan part in the completion.
    pub plan_len: usize,
    /// The calls part, parsed as an executor output whose thinking is the plan.
    pub calls: ExecutorOutput,
    /// Byte range in the completion of each call entry of `calls` (`None` where it cannot be
    /// told apart, e.g. several calls in one JSON array).
    pub spans: Vec<Option<(usize, usize)>>,
}

/// Split a completion at the end of its first `</plan>` (without one: where its first
/// `<tool_call>` starts, so calls written without a plan still run) and parse both parts.
pub fn parse_ih(text: &str) -> IhParsed {
    let plan_len = text
        .find("</plan>")
        .map(|p| p + "</plan>".len())
        .or_else(|| text.find("<tool_call>"))
        .unwrap_or(text.len());
    let head = &text[..plan_len];
    let tail = &text[plan_len..];
    let plan = parse_planner(head);
    // The calls part is scored as an executor's answer: its thinking was the plan.
    let calls = parse_executor(&format!("<think></think>\n{}", tail.trim_start()));
    // Where each entry is: entries of the (first) block are its non-empty lines, numbered from
    // 1 in the trimmed block as the parser numbers them.
    let mut spans = vec![None; calls.entries.len()];
    if let Some(open) = tail.find("<tool_call>") {
        let body_start = open + "<tool_call>".len();
        let body_end = tail[body_start..]
            .find("</tool_call>")
            .map(|e| body_start + e)
            .unwrap_or(tail.len());
        let body = &tail[body_start..body_end];
        let lead = body.len() - body.trim_start().len();
        let trimmed = body.trim();
        let mut lines = Vec::new();
        let mut at = 0;
        for line in trimmed.split('\n') {
            let l = line.trim();
            let start = at + (line.len() - line.trim_start().len());
            lines.push((start, start + l.len()));
            at += line.len() + 1;
        }
        let base = plan_len + body_start + lead;
        let mut seen = std::collections::HashSet::new();
        let unique = calls
            .entries
            .iter()
            .all(|e| e.block == 0 && seen.insert(e.line));
        if calls.entries.len() == 1 {
            // One entry is the whole block (one line, or one object over several lines).
            spans[0] = Some((base, base + trimmed.len()));
        } else if unique {
            for (k, e) in calls.entries.iter().enumerate() {
                if let Some(&(s, t)) = lines.get(e.line.wrapping_sub(1)) {
                    spans[k] = Some((base + s, base + t));
                }
            }
        }
    }
    IhParsed {
        plan,
        plan_len,
        calls,
        spans,
    }
}

/// The byte offset in the decoded text where each token ends (monotone, at most the text's
/// length).
pub fn token_ends(tok: &dyn Detok, tokens: &[u32], text_len: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut last = 0;
    for k in 0..tokens.len() {
        let n = tok.decode(&tokens[..=k]).len().min(text_len).max(last);
        out.push(n);
        last = n;
    }
    out
}

/// Per-token advantages of one completion: a token that overlaps call `j`'s span carries
/// `calls[j]`, every other token `plan`.
pub fn segment_advantages(
    ends: &[usize],
    spans: &[Option<(usize, usize)>],
    plan: f64,
    calls: &[f64],
) -> Vec<f64> {
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let (s, e) = (start, end);
            start = end;
            spans
                .iter()
                .zip(calls)
                .find(|(sp, _)| sp.is_some_and(|(a, b)| s < b && e > a))
                .map(|(_, &adv)| adv)
                .unwrap_or(plan)
        })
        .collect()
}

/// Set component `name` to 0 and recompute the total.
fn zero_component(rb: &mut RewardBreakdown, name: &str) {
    for c in rb.components.iter_mut().filter(|c| c.name == name) {
        c.value = 0.0;
    }
    rb.total = rb.components.iter().map(|c| c.value * c.weight).sum();
}

/// One completion's delayed execution and rewards.
struct Scored {
    parsed: IhParsed,
    /// Per call entry: the call as run (references resolved), its observation, its reward.
    calls: Vec<(Option<ToolCall>, Value, RewardBreakdown)>,
    planner: RewardBreakdown,
    success: bool,
    failure: (Option<String>, Option<String>),
}

fn score_completion(
    world: &mut dyn World,
    task: &Task,
    text: &str,
    cfg: &TrainConfig,
) -> Result<Scored> {
    world.reset(task)?;
    let tools = tools_of(world, task);
    let parsed = parse_ih(text);
    let subtasks = &parsed.plan.subtasks;
    let align = align_plan(subtasks, &task.gold_calls, &task.gold_derived);
    let turns = gold_turns(&task.gold_calls, &task.gold_derived);
    let mut made = vec![false; task.gold_calls.len()];
    let mut results: Vec<Option<Value>> = Vec::new();
    let mut executed = Vec::new();
    let mut calls = Vec::new();
    let mut step_calls: Vec<Vec<ToolCall>> = vec![Vec::new(); subtasks.len()];
    // Format issues of the calls part count for every call; each entry adds its own.
    let shared: Vec<_> = parsed
        .calls
        .issues
        .iter()
        .filter(|i| i.class() == IssueClass::Format)
        .cloned()
        .collect();
    // At most `rollout.max_subtasks` calls run (and are rewarded); the tokens of any further
    // ones carry the plan's advantage.
    for (j, entry) in parsed
        .calls
        .entries
        .iter()
        .take(cfg.rollout.max_subtasks)
        .enumerate()
    {
        // Call j is sub-task j's: its gold is what that sub-task describes. A call past the
        // plan's sub-tasks (or written without a plan) is compared with the calls still due
        // (the next gold turn, as flat mode's turns are).
        let gold = if j < subtasks.len() {
            step_gold(&align, &task.gold_calls, &made, j)
        } else {
            turn_gold(&task.gold_calls, &turns, &made)
        };
        let mut reasons = Vec::new();
        let (run, obs) = match &entry.call {
            None => (None, Observation::error("the call does not parse")),
            Some(call) => match resolve_call(call, &results) {
                Ok(resolved) => {
                    let obs = world.execute(&resolved);
                    (Some(resolved), obs)
                }
                Err(why) => {
                    reasons.push(format!("not run: {why}"));
                    (None, Observation::error(format!("not run: {why}")))
                }
            },
        };
        results.push(obs.ok.then(|| obs.content.clone()));
        // Scored as a one-call executor answer with the call as it ran.
        let mut one = parsed.calls.clone();
        one.entries = vec![entry.clone()];
        if let (Some(r), Some(e)) = (&run, one.entries.first_mut()) {
            e.call = Some(r.clone());
        }
        one.issues = shared.clone();
        one.issues.extend(entry.issues.iter().cloned());
        let mut rb = executor_step_reward_parsed(&one, &tools, &gold, &cfg.rewards);
        rb.reasons.extend(reasons);
        if entry.call.is_none() {
            // A call was written and does not parse: it made nothing, which the executor's
            // semantics would otherwise count as right where no call is due (a policy learned
            // to write broken calls for it).
            zero_component(&mut rb, "semantics");
        }
        if let Some(r) = &run {
            mark_made(std::slice::from_ref(r), &task.gold_calls, &mut made);
            executed.push(r.clone());
            if let Some(sc) = step_calls.get_mut(j) {
                sc.push(r.clone());
            }
        }
        calls.push((run, obs.content, rb));
    }
    let final_state = world.final_state();
    let planner = planner_reward_parsed(
        &parsed.plan,
        &PlanEpisode {
            plan_text: &text[..parsed.plan_len],
            executed: &executed,
            final_state: final_state.as_ref(),
            gold_calls: &task.gold_calls,
            gold_derived: &task.gold_derived,
            gold_state: task.gold_final_state.as_ref(),
        },
        &cfg.rewards,
    );
    // IH-GRPO's completion has no answer channel (plan, then calls): not asked for.
    let success = episode_success(task, &executed, final_state.as_ref(), true);
    let failure = if success {
        (None, None)
    } else {
        let ran = &subtasks[..subtasks.len().min(cfg.rollout.max_subtasks)];
        let sc = &step_calls[..ran.len()];
        failure_of(task, !ran.is_empty(), ran, sc)
    };
    Ok(Scored {
        parsed,
        calls,
        planner,
        success,
        failure,
    })
}

/// IH-GRPO's rollout of one task: G completions, each executed after generation, with the
/// plan's and each call's advantages.
pub fn rollout_ih_grpo(
    agent: &Agent,
    world: &mut dyn World,
    task: &Task,
    cfg: &TrainConfig,
    seed: u64,
    step: u64,
    prefixes: &Prefixes,
) -> Result<TaskRollout> {
    world.reset(task)?;
    let tools = tools_of(world, task);
    let prompt = agent.prompt_ids(
        &prompts::ih_system(&tools),
        &prompts::ih_user(&task.request),
    )?;
    let params = SamplingParams {
        seed: mix_seed(&[seed, 5]),
        max_tokens: cfg.ih_grpo.max_tokens,
        stop: vec!["</tool_call>".into()],
        ..cfg.rollout.executor.clone()
    };
    let g = cfg.rollout.samples_per_step.max(1);
    let comps = agent.sample(&SampleRequest {
        adapter: Some("executor"),
        prefix: prefixes.executor.as_ref(),
        prompt: &prompt,
        g,
        first_stream: 0,
        params: &params,
    })?;
    let mut scored = Vec::with_capacity(g);
    for c in &comps {
        scored.push(score_completion(world, task, &c.text, cfg)?);
    }
    // Advantages: the plan's over the group; call j's over the completions that wrote one.
    let scale = cfg.grpo.scale_rewards;
    let plan_r: Vec<f64> = scored.iter().map(|s| s.planner.total).collect();
    let plan_adv = group_advantages(&plan_r, scale);
    let call_r: Vec<Vec<f64>> = scored
        .iter()
        .map(|s| s.calls.iter().map(|c| c.2.total).collect())
        .collect();
    let call_adv = per_index_advantages(&call_r, scale);
    let outcome: Vec<f64> = scored
        .iter()
        .map(|s| if s.success { 1.0 } else { 0.0 })
        .collect();
    let outcome_adv = group_advantages(&outcome, scale);
    let mut advantages = Vec::with_capacity(g);
    let mut plans = Vec::with_capacity(g);
    let mut components = Vec::new();
    let mut exec_r = Vec::new();
    let mut sides = SideCounts::default();
    let mut any_success = false;
    let mut planner_side_failure = false;
    let tokens = comps.iter().map(|c| c.tokens.len()).sum();
    for (i, (c, s)) in comps.iter().zip(&scored).enumerate() {
        let ends = token_ends(&agent.tok, &c.tokens, c.text.len());
        let (adv, plan_a, calls_a) = match cfg.ih_grpo.advantage {
            IhAdvantage::Segments => (
                SeqAdvantage::PerToken(segment_advantages(
                    &ends,
                    &s.parsed.spans,
                    plan_adv[i],
                    &call_adv[i],
                )),
                plan_adv[i],
                call_adv[i].clone(),
            ),
            IhAdvantage::Outcome => (
                SeqAdvantage::Uniform(outcome_adv[i]),
                outcome_adv[i],
                vec![outcome_adv[i]; s.calls.len()],
            ),
        };
        advantages.push(adv);
        for comp in &s.planner.components {
            components.push((format!("planner/{}", comp.name), comp.value));
        }
        let mut steps = Vec::with_capacity(s.calls.len());
        for (j, (run, obs, rb)) in s.calls.iter().enumerate() {
            exec_r.push(rb.total);
            for comp in &rb.components {
                components.push((format!("executor/{}", comp.name), comp.value));
            }
            let entry = &s.parsed.calls.entries[j];
            let span_text = s.parsed.spans[j]
                .and_then(|(a, b)| c.text.get(a..b))
                .unwrap_or("")
                .to_string();
            let seg_tokens = s.parsed.spans[j].map_or(0, |(a, b)| {
                let mut start = 0;
                ends.iter()
                    .filter(|&&end| {
                        let hit = start < b && end > a;
                        start = end;
                        hit
                    })
                    .count()
            });
            steps.push(StepRecord {
                subtask_index: j,
                subtask: s
                    .parsed
                    .plan
                    .subtasks
                    .get(j)
                    .cloned()
                    .unwrap_or_else(|| format!("call {} (no sub-task {})", j + 1, j + 1)),
                prompt: None,
                samples: vec![ExecSample {
                    raw_text: span_text,
                    calls: run
                        .as_ref()
                        .or(entry.call.as_ref())
                        .map(call_record)
                        .into_iter()
                        .collect(),
                    parse_error: entry.issues.first().map(|e| e.message()),
                    observation: Some(obs.clone()),
                    reward: to_record_breakdown(rb),
                    // What its tokens trained with: a call without a span of its own (several
                    // calls in one JSON array) trained with the plan's.
                    advantage: Some(if s.parsed.spans[j].is_some() {
                        calls_a[j]
                    } else {
                        plan_a
                    }),
                    step_return: None,
                    tokens: seg_tokens,
                }],
                continued: 0,
                execution: 0,
            });
        }
        any_success |= s.success;
        sides.count(s.failure.1.as_deref());
        if s.failure.1.as_deref() == Some("planner")
            && s.failure.0.as_deref() != Some("plan_unparsable")
        {
            planner_side_failure = true;
        }
        plans.push(PlanRecord {
            index: i,
            raw_text: c.text.clone(),
            subtasks: s.parsed.plan.subtasks.clone(),
            parse_error: s.parsed.plan.issues.first().map(|e| e.message()),
            reward: to_record_breakdown(&s.planner),
            advantage: Some(plan_a),
            tokens: c.tokens.len(),
            steps,
            final_response: None,
            success: s.success,
            success_rate: if s.success { 1.0 } else { 0.0 },
            failure: s.failure.0.clone(),
            failure_side: s.failure.1.clone(),
        });
    }
    let groups = vec![Group {
        policy: Policy::Executor,
        prompt,
        completions: comps,
        rewards: plan_r.clone(),
        at: (0, None),
        advantages: Some(advantages),
    }];
    let record = TrajectoryRecord {
        step,
        task: task_info(task),
        seed,
        plans,
        success: any_success,
        planner_reward: mean(&plan_r),
        executor_reward: mean(&exec_r),
        misaligned: !any_success && planner_side_failure,
        mode: cfg.mode.name().to_string(),
        policy_version: None,
    };
    Ok(TaskRollout {
        record,
        groups,
        generated_tokens: tokens,
        components,
        sides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "<think>log in, then pay</think>\n<plan>\n1. log in as alice\n2. transfer 5\n</plan>\n<tool_call>\n{\"name\": \"login\", \"parameters\": {\"username\": \"alice\", \"password\": \"red7\"}}\n{\"name\": \"transfer\", \"parameters\": {\"token\": \"$1.token\"}}\n</tool_call>";

    #[test]
    fn a_completion_splits_into_its_plan_and_its_calls() {
        let p = parse_ih(TEXT);
        assert_eq!(p.plan.subtasks, vec!["log in as alice", "transfer 5"]);
        assert!(p.plan.is_well_formed(), "{:?}", p.plan.issues);
        assert_eq!(p.calls.entries.len(), 2);
        assert!(p.calls.is_well_formed(), "{:?}", p.calls.issues);
        let spans: Vec<&str> = p
            .spans
            .iter()
            .map(|s| &TEXT[s.unwrap().0..s.unwrap().1])
            .collect();
        assert!(spans[0].starts_with("{\"name\": \"login\"") && spans[0].ends_with("}}"));
        assert!(spans[1].contains("$1.token") && spans[1].ends_with("}}"));
        assert_eq!(
            &TEXT[..p.plan_len],
            &TEXT[..TEXT.find("</plan>").unwrap() + 7]
        );
    }

    /// One token per byte: decoding is the bytes as text.
    struct Bytes;
    impl Detok for Bytes {
        fn decode(&self, ids: &[u32]) -> String {
            ids.iter().map(|&b| b as u8 as char).collect()
        }
        fn is_eos(&self, _: u32) -> bool {
            false
        }
    }

    /// Through the parser and the token offsets: every token of the plan part (and of the tags
    /// around the calls) carries the plan's advantage, every token of call j's line call j's.
    #[test]
    fn plan_tokens_get_the_plan_advantage_and_call_tokens_their_sub_tasks() {
        let tokens: Vec<u32> = TEXT.bytes().map(u32::from).collect();
        let ends = token_ends(&Bytes, &tokens, TEXT.len());
        let p = parse_ih(TEXT);
        let adv = segment_advantages(&ends, &p.spans, 0.5, &[1.5, -2.0]);
        // Exactly: the plan part is all 0.5; each call line is its own value; tags are 0.5.
        assert!(adv[..p.plan_len].iter().all(|&a| a == 0.5));
        let (s1, e1) = p.spans[0].unwrap();
        let (s2, e2) = p.spans[1].unwrap();
        assert!(adv[s1..e1].iter().all(|&a| a == 1.5));
        assert!(adv[s2..e2].iter().all(|&a| a == -2.0));
        assert!(
            adv[e1..s2].iter().all(|&a| a == 0.5),
            "the newline between calls"
        );
        assert!(adv[e2..].iter().all(|&a| a == 0.5), "the closing tag");
        assert!(
            adv[p.plan_len..s1].iter().all(|&a| a == 0.5),
            "the opening tag"
        );
    }

    /// Delayed execution: the transfer written with "$1.token" before anything ran gets the
    /// login's token when it runs, so the episode makes the gold calls and succeeds.
    #[test]
    fn delayed_execution_resolves_a_reference_to_an_earlier_result() {
        use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
        use crate::worlds::Split;
        let task = generate_tasks(Split::Train, 300, 4)
            .unwrap()
            .into_iter()
            .find(|t| t.template.as_deref() == Some("transfer"))
            .unwrap();
        let mut second = task.gold_calls[1].clone();
        assert!(second.arguments.contains_key("token"));
        second
            .arguments
            .insert("token".into(), Value::String("$1.token".into()));
        let text = format!(
            "<think>x</think>\n<plan>\n1. {}\n2. {}\n</plan>\n<tool_call>\n{}\n{}\n</tool_call>",
            task.gold_plan[0],
            task.gold_plan[1],
            task.gold_calls[0].to_toolrl_json(),
            second.to_toolrl_json()
        );
        let mut world = BuiltinWorld::new();
        let s = score_completion(&mut world, &task, &text, &TrainConfig::default()).unwrap();
        let ran: Vec<ToolCall> = s.calls.iter().filter_map(|c| c.0.clone()).collect();
        assert_eq!(
            ran, task.gold_calls,
            "the reference resolved to the login's token"
        );
        assert!(s.success, "{:?}", s.failure);
        assert_eq!(s.calls[1].2.component("semantics"), Some(1.0));
        assert_eq!(s.planner.component("param_level"), Some(1.0));
        // Without the reference the transfer fails in the world and the task is not solved.
        let mut bad = second.clone();
        bad.arguments
            .insert("token".into(), Value::String("$2.token".into()));
        let text = text.replace(&second.to_toolrl_json(), &bad.to_toolrl_json());
        let s = score_completion(&mut world, &task, &text, &TrainConfig::default()).unwrap();
        assert!(!s.success);
        assert!(
            s.calls[1].0.is_none(),
            "an unresolvable reference is not run"
        );
        assert!(s.calls[1].2.reasons.iter().any(|r| r.contains("not run")));
    }

    /// A call that does not parse is never worth more than a valid one: it gets no semantics,
    /// even where no call is due; a call written without a plan is compared with the calls
    /// still due.
    #[test]
    fn a_broken_call_earns_less_than_a_valid_one() {
        use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
        use crate::worlds::Split;
        let task = generate_tasks(Split::Train, 300, 4)
            .unwrap()
            .into_iter()
            .find(|t| t.template.as_deref() == Some("transfer"))
            .unwrap();
        let cfg = TrainConfig::default();
        let mut world = BuiltinWorld::new();
        let with = |line: &str| format!("<think>x</think>\n<tool_call>\n{line}\n</tool_call>");
        let broken = score_completion(
            &mut world,
            &task,
            &with("{\"name\": \"login\", \"parameters\": {\"username\":\"\":1}}"),
            &cfg,
        )
        .unwrap();
        let right = score_completion(
            &mut world,
            &task,
            &with(&task.gold_calls[0].to_toolrl_json()),
            &cfg,
        )
        .unwrap();
        let (b, r) = (&broken.calls[0].2, &right.calls[0].2);
        assert_eq!(b.component("semantics"), Some(0.0), "{b:?}");
        assert_eq!(
            r.component("semantics"),
            Some(1.0),
            "the login is the call due: {r:?}"
        );
        assert!(b.total < r.total);
        // Where nothing is due any more (every gold call made), a broken extra call still
        // earns no semantics.
        let all = format!(
            "<think>x</think>\n<tool_call>\n{}\n{}\n{{broken\n</tool_call>",
            task.gold_calls[0].to_toolrl_json(),
            task.gold_calls[1].to_toolrl_json().replace(
                task.gold_calls[1].arguments["token"].as_str().unwrap(),
                "$1.token"
            )
        );
        let s = score_completion(&mut world, &task, &all, &cfg).unwrap();
        assert!(s.success, "{:?}", s.failure);
        assert_eq!(s.calls[2].2.component("semantics"), Some(0.0));
    }

    /// One call written over several lines is one segment: all of its lines.
    #[test]
    fn one_call_over_several_lines_is_one_segment() {
        let text = "<think>x</think>\n<plan>\n1. a\n</plan>\n<tool_call>\n{\"name\": \"f\",\n \"parameters\": {}}\n</tool_call>";
        let p = parse_ih(text);
        assert_eq!(p.calls.calls().len(), 1);
        let (a, b) = p.spans[0].unwrap();
        assert_eq!(&text[a..b], "{\"name\": \"f\",\n \"parameters\": {}}");
    }

    /// Calls written without a plan are still calls: they run, and the missing plan is the
    /// plan part's business (its format and parameter level).
    #[test]
    fn calls_without_a_plan_still_run() {
        let text = "<think>x</think>\n<tool_call>\n{\"name\": \"list_meetings\", \"parameters\": {\"day\": \"monday\"}}\n</tool_call>";
        let p = parse_ih(text);
        assert!(p.plan.subtasks.is_empty() && !p.plan.is_well_formed());
        assert_eq!(p.calls.calls().len(), 1);
        assert_eq!(&text[..p.plan_len], "<think>x</think>\n");
        assert!(p.spans[0].is_some());
    }

    /// Tokens inside a call's span carry the call's advantage, all others the plan's.
    #[test]
    fn segment_advantages_follow_the_spans() {
        // Token ends: [0,3) [3,5) [5,9) [9,12) [12,20)
        let ends = [3, 5, 9, 12, 20];
        let spans = [Some((4, 9)), Some((12, 15))];
        let a = segment_advantages(&ends, &spans, 1.0, &[-2.0, 3.0]);
        assert_eq!(a, vec![1.0, -2.0, -2.0, 1.0, 3.0]);
        // An entry without a span (an array of calls) leaves its tokens to the plan.
        let a = segment_advantages(&ends, &[None, Some((12, 15))], 1.0, &[-2.0, 3.0]);
        assert_eq!(a, vec![1.0, 1.0, 1.0, 1.0, 3.0]);
    }
}

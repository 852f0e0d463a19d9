//! Tests of the debugger's backend on a tiny random model written in the test.
use std::path::{Path, PathBuf};

use cahl_sessions::debug::{BackendLoader, PriorStep};
use candle_core::{DType, Device};

use super::*;
use crate::benchmarks::{find_item as find_bench_task, Bench};
use crate::load::embedded;
use crate::model::{LoraAdapter, LoraConfig, Model, ModelConfig};
use cahl_sessions::CallRecord;

/// Writes a tiny random HF model folder (word-level tokenizer, ChatML fallback template)
/// whose vocabulary covers the executor prompt's markup and a few tool names.
fn write_tiny_model(dir: &Path) {
    let words = "Task Plan Done so far nothing Current sub-task <think> </think> <tool_call> \
                 </tool_call> <response> </response> { } [ ] \" : , . - ( ) / name parameters \
                 ModifyRegistration appointment_id new_appointment_date search query Dr Lee \
                 34567890 2023 03 26 answer the a to of";
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[UNK]", "<|im_start|>", "<|im_end|>"]
        .iter()
        .chain(words.split_whitespace().collect::<Vec<_>>().iter())
        .enumerate()
    {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    let n = vocab.len();
    let added = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(1, "<|im_start|>"), added(2, "<|im_end|>")],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).expect("tokenizer");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<|im_end|>"}"#,
    )
    .expect("tokenizer config");
    let config = format!(
        r#"{{"model_type": "qwen2", "vocab_size": {n}, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 4096, "tie_word_embeddings": true}}"#
    );
    std::fs::write(dir.join("config.json"), &config).expect("config");
    let cfg = ModelConfig::from_json_str(&config, "tiny").expect("config parses");
    let w = Model::random_weights(&cfg, 7).expect("weights");
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).expect("weights");
}

fn quick_config() -> TrainConfig {
    let mut c = TrainConfig::default();
    c.rollout.planner.max_tokens = 12;
    c.rollout.executor.max_tokens = 12;
    c
}

fn shared_data() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if d.is_dir() {
        Some(d)
    } else {
        println!("SKIP: {} is absent (benchmark data)", d.display());
        None
    }
}

#[test]
fn benchmark_items_load_by_id_and_run_on_a_tiny_model() {
    let Some(data) = shared_data() else { return };
    // Each benchmark by its scorer's ids (the data folder itself or its parent).
    let t = find_bench_task(Bench::ApiBank, &data, "level-1-0").expect("api-bank");
    assert_eq!(t.world, "api-bank");
    assert!(t.tools.iter().any(|s| s.name == "ModifyRegistration"));
    assert_eq!(t.gold_calls[0].name, "ModifyRegistration");
    let b = find_bench_task(Bench::Bfcl, &data.join("bfcl"), "simple_python_0").expect("bfcl");
    assert_eq!((b.world.as_str(), b.gold_calls.len()), ("bfcl", 1));
    assert!(!b.tools.is_empty());
    let m = find_bench_task(Bench::Bfcl, &data, "multiple_3").expect("bfcl multiple");
    assert_eq!(m.template.as_deref(), Some("multiple"));
    let n =
        find_bench_task(Bench::Nestful, &data, "non-executable-glaive-data-0").expect("nestful");
    assert!(!n.gold_calls.is_empty() && !n.tools.is_empty());
    let q = find_bench_task(Bench::Bamboogle, &data, "bamboogle-0").expect("bamboogle");
    assert!(q.gold_answer.is_some());
    let err = find_bench_task(Bench::ApiBank, &data, "level-9-9").unwrap_err();
    assert!(
        err.to_string()
            .contains("no api-bank item with id \"level-9-9\""),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path());
    let spec = dir.path().display().to_string();
    let mut backend = engine_backend(&spec, None, quick_config()).expect("tiny model loads");
    assert!(backend.describe().contains("base model (no adapters)"));
    let task = debug_task_of(&t);
    let plan = vec![
        "Modify appointment 34567890".to_string(),
        "Confirm".to_string(),
    ];
    let req = |index: usize, previous: Vec<PriorStep>| DebugStepRequest {
        task: task.clone(),
        subtasks: plan.clone(),
        index,
        previous,
        seed: 11,
    };
    let first = backend.run_step(req(0, vec![])).expect("step runs");
    assert!(
        first.prompt.contains("ModifyRegistration("),
        "{}",
        first.prompt
    );
    for k in ["format", "syntax", "semantics"] {
        assert!(
            first.reward.components.contains_key(k),
            "{k} in {:?}",
            first.reward
        );
    }
    assert!(first.reward.total.is_finite());
    assert_eq!(
        backend.run_step(req(0, vec![])).expect("again"),
        first,
        "seeded"
    );
    // The gold call as an earlier step: the world answers with the labelled placeholder.
    let prior = PriorStep {
        subtask: plan[0].clone(),
        calls: task.gold_calls.clone(),
        observation: None,
    };
    let second = backend.run_step(req(1, vec![prior])).expect("second step");
    assert!(
        second
            .prompt
            .contains("simulated: this benchmark's tools are not executable"),
        "{}",
        second.prompt
    );
    // Bamboogle without an index: searches are answered with a placeholder that says so.
    let qt = debug_task_of(&q);
    let search = PriorStep {
        subtask: "search".into(),
        calls: vec![CallRecord {
            name: "search".into(),
            arguments: serde_json::json!({"query": "Titan IIIE"}),
        }],
        observation: None,
    };
    let out = backend
        .run_step(DebugStepRequest {
            task: qt,
            subtasks: vec!["Search".into(), "Answer".into()],
            index: 1,
            previous: vec![search],
            seed: 0,
        })
        .expect("bamboogle step");
    assert!(out.prompt.contains(NO_INDEX_NOTE), "{}", out.prompt);
}

#[test]
fn session_loader_loads_fresh_or_checkpoint_adapters() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path());
    let spec = dir.path().display().to_string();
    let mut loader = SessionModelLoader {
        model: spec.clone(),
        cfg: quick_config(),
        params: Some(1_000_000),
    };
    assert!(
        loader.describe().contains("second copy, ~4 MB"),
        "{}",
        loader.describe()
    );
    let fresh = loader.load(None).expect("fresh");
    assert!(
        fresh.describe().contains("fresh adapters"),
        "{}",
        fresh.describe()
    );
    // A checkpoint with both adapters.
    let ck = dir.path().join("checkpoints").join("step-1");
    let lm = embedded::load_spec(&spec).expect("load");
    for name in ["planner", "executor"] {
        LoraAdapter::new_random(
            name,
            &LoraConfig::default(),
            &lm.config,
            DType::F32,
            &Device::Cpu,
            1,
        )
        .expect("adapter")
        .save_peft(&ck.join(name), &spec)
        .expect("save");
    }
    let mut b = loader.load(Some(&ck)).expect("checkpoint loads");
    assert!(
        b.describe()
            .ends_with("planner+executor adapters of step-1"),
        "{}",
        b.describe()
    );
    let plan = b.plan(PlanRequest {
        task: DebugTask {
            text: "list my alarms".into(),
            ..DebugTask::default()
        },
        seed: 3,
    });
    // A random model rarely writes a plan: either way the answer is a result, not a panic.
    if let Err(e) = plan {
        assert!(e.to_string().contains("no sub-tasks"), "{e}");
    }
    let empty = dir.path().join("checkpoints").join("step-2");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let err = loader
        .load(Some(&empty))
        .err()
        .expect("no adapters is an error");
    assert!(
        err.to_string()
            .contains("neither a planner/ nor an executor/ adapter"),
        "{err}"
    );
}

#[test]
fn debug_tasks_round_trip_world_tools_and_gold() {
    let t = Task {
        id: "level-1-0".into(),
        world: "api-bank".into(),
        split: None,
        request: "modify my appointment".into(),
        tools: vec![ToolSchema {
            name: "ModifyRegistration".into(),
            description: "Modifies an appointment.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"appointment_id": {"type": "string"}}, "required": []}),
        }],
        gold_plan: vec![],
        gold_calls: vec![ToolCall::new(
            "ModifyRegistration",
            serde_json::json!({"appointment_id": "34567890"}),
        )],
        gold_derived: vec![vec![]],
        gold_final_state: None,
        gold_answer: None,
        template: Some("level-1".into()),
    };
    let d = debug_task_of(&t);
    assert_eq!(d.world, "api-bank");
    assert_eq!(d.tools.len(), 1);
    assert_eq!(d.gold_calls[0].name, "ModifyRegistration");
    let back = task_of(&d).expect("tools parse");
    assert_eq!(back.tools, t.tools);
    assert_eq!(back.gold_calls, t.gold_calls);
    assert_eq!(back.world, "api-bank");
    let typed = task_of(&DebugTask::default()).expect("typed");
    assert_eq!(typed.world, "builtin");
    let bad = DebugTask {
        tools: vec![serde_json::json!(42)],
        ..DebugTask::default()
    };
    assert!(task_of(&bad)
        .unwrap_err()
        .to_string()
        .contains("tool schema 1"));
}

/// A recorded step is reproduced by the debugger from the trajectory's seed: same prompt, same
/// sampling seed, same executor output as the continued sample of the plan's first execution.
#[test]
fn a_recorded_step_is_reproduced_from_its_seed() {
    use crate::worlds::builtin::{generate_tasks, BuiltinWorld};
    use crate::worlds::Split;
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path());
    let spec = dir.path().display().to_string();
    let mut cfg = quick_config();
    cfg.mode = crate::train::Mode::Separate; // plan 0 runs the gold plan: steps to compare
    cfg.rollout.plans_per_task = 2;
    cfg.rollout.samples_per_step = 3;
    cfg.rollout.executions_per_plan = 1;
    let mut backend = engine_backend(&spec, None, cfg.clone()).expect("tiny model loads");
    // Fresh adapters (B = 0: the base model exactly), which the rollout needs.
    crate::eval::ensure_adapters(backend.local_agent()).expect("adapters");
    let task = generate_tasks(Split::Train, 20, 1)
        .expect("tasks")
        .into_iter()
        .find(|t| t.gold_plan.len() >= 2)
        .expect("a two-step task");
    let mut world = BuiltinWorld::new();
    let r = crate::train::rollout_task(backend.local_agent(), &mut world, &task, &cfg, 77, 1)
        .expect("rollout");
    let plan = &r.record.plans[0];
    let step = &plan.steps[0];
    let recorded = &step.samples[step.continued];
    let out = backend
        .run_step(DebugStepRequest {
            task: debug_task_of(&task),
            subtasks: plan.subtasks.clone(),
            index: 0,
            previous: vec![],
            seed: r.record.seed,
        })
        .expect("step runs");
    assert!(!recorded.raw_text.is_empty());
    assert_eq!(out.raw_output, recorded.raw_text);
    let user = step
        .prompt
        .as_deref()
        .expect("the rollout records the user message");
    assert!(out.prompt.contains(user), "{}", out.prompt);
}

fn two_step_task() -> crate::worlds::Task {
    use crate::worlds::builtin::generate_tasks;
    use crate::worlds::Split;
    generate_tasks(Split::Train, 40, 3)
        .expect("tasks")
        .into_iter()
        .find(|t| {
            // the second call changes the world's state, so leaving it out shows in the state
            t.gold_plan.len() == 2
                && t.gold_final_state.is_some()
                && [
                    "add_alarm",
                    "add_reminder",
                    "add_meeting",
                    "add_contact",
                    "send_email",
                ]
                .contains(&t.gold_calls[1].name.as_str())
        })
        .expect("a two-step task whose second call changes the state")
}

fn calls_of(task: &crate::worlds::Task) -> Vec<CallRecord> {
    task.gold_calls
        .iter()
        .map(crate::parse::call_record)
        .collect()
}

#[test]
fn judging_a_branch_replays_its_calls_and_labels_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path());
    let spec = dir.path().display().to_string();
    let mut backend = engine_backend(&spec, None, quick_config()).expect("tiny model loads");
    let task = two_step_task();
    let dt = debug_task_of(&task);
    // The debugger protocol carries no gold state: the backend finds it by the task's id.
    assert!(backend
        .full_task(&dt)
        .expect("task")
        .gold_final_state
        .is_some());
    let gold = calls_of(&task);
    let solved = backend
        .judge(JudgeRequest {
            task: dt.clone(),
            subtasks: task.gold_plan.clone(),
            step_calls: gold.iter().map(|c| vec![c.clone()]).collect(),
            answered: false,
        })
        .expect("judged");
    assert!(solved.success, "{solved:?}");
    assert_eq!(solved.failure, None);
    assert!(solved.state_diff.is_empty(), "{:?}", solved.state_diff);
    assert!(solved.planner_reward.is_finite());
    assert_eq!(solved.calls, gold);
    // Only the first call made: the second sub-task's call is missing, the state differs.
    let half = backend
        .judge(JudgeRequest {
            task: dt.clone(),
            subtasks: task.gold_plan.clone(),
            step_calls: vec![vec![gold[0].clone()], vec![]],
            answered: false,
        })
        .expect("judged");
    assert!(!half.success);
    assert_eq!(half.failure.as_deref(), Some("executor_failed"), "{half:?}");
    assert_eq!(half.failure_side.as_deref(), Some("executor"));
    assert!(!half.state_diff.is_empty(), "{half:?}");
    assert!(half.planner_reward < solved.planner_reward);
    // Both calls in one merged sub-task: the built-in world carries them out…
    let merged = vec![format!(
        "{} and then {}",
        task.gold_plan[0], task.gold_plan[1]
    )];
    let both = vec![gold.clone()];
    let ok = backend
        .judge(JudgeRequest {
            task: dt.clone(),
            subtasks: merged.clone(),
            step_calls: both.clone(),
            answered: false,
        })
        .expect("judged");
    assert!(ok.success, "{ok:?}");
    // …the testbed's executor (one call per sub-task) does not: a planner-side failure.
    let mut cfg = quick_config();
    cfg.world.kind = "builtin-one-call".into();
    let mut testbed = engine_backend(&spec, None, cfg).expect("tiny model loads");
    let refused = testbed
        .judge(JudgeRequest {
            task: dt,
            subtasks: merged,
            step_calls: both,
            answered: false,
        })
        .expect("judged");
    assert!(!refused.success);
    assert_eq!(
        refused.failure.as_deref(),
        Some("plan_too_coarse"),
        "{refused:?}"
    );
    assert_eq!(refused.failure_side.as_deref(), Some("planner"));
    assert_eq!(refused.calls, vec![gold[0].clone()]);
}

#[test]
fn measuring_runs_the_plan_n_times_and_run_zero_is_the_branch() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path());
    let spec = dir.path().display().to_string();
    let mut backend = engine_backend(&spec, None, quick_config()).expect("tiny model loads");
    crate::eval::ensure_adapters(backend.local_agent()).expect("adapters");
    let task = two_step_task();
    let dt = debug_task_of(&task);
    let req = |samples: usize, greedy: bool| MeasureRequest {
        task: dt.clone(),
        subtasks: task.gold_plan.clone(),
        seed: 11,
        samples,
        greedy,
    };
    let m = backend.measure(req(4, false)).expect("measured");
    assert_eq!(m.runs.len(), 4);
    assert!(!m.greedy);
    assert!(
        m.model.contains("adapters") || m.model.contains("base"),
        "{}",
        m.model
    );
    assert!(m.runs.iter().all(|r| r.executor_reward.is_finite()));
    // Run 0 is the branch stepped with the same seed: judging those steps gives the same run.
    let mut previous: Vec<PriorStep> = Vec::new();
    for (i, st) in task.gold_plan.iter().enumerate() {
        let out = backend
            .run_step(DebugStepRequest {
                task: dt.clone(),
                subtasks: task.gold_plan.clone(),
                index: i,
                previous: previous.clone(),
                seed: 11,
            })
            .expect("step");
        previous.push(PriorStep {
            subtask: st.clone(),
            calls: out.calls,
            observation: out.tool_result,
        });
    }
    let judged = backend
        .judge(JudgeRequest {
            task: dt.clone(),
            subtasks: task.gold_plan.clone(),
            step_calls: previous.iter().map(|p| p.calls.clone()).collect(),
            answered: false,
        })
        .expect("judged");
    let run0 = &m.runs[0];
    assert_eq!(
        (
            &run0.calls,
            run0.success,
            &run0.failure,
            run0.planner_reward
        ),
        (
            &judged.calls,
            judged.success,
            &judged.failure,
            judged.planner_reward
        )
    );
    // Greedy: one run, the same every time.
    let g1 = backend.measure(req(4, true)).expect("greedy");
    let g2 = backend.measure(req(9, true)).expect("greedy");
    assert_eq!(g1.runs.len(), 1);
    assert!(g1.greedy);
    assert_eq!(g1.runs, g2.runs);
    // An empty plan is refused with a reason.
    let empty = backend.measure(MeasureRequest {
        subtasks: vec![],
        ..req(2, false)
    });
    assert!(empty.unwrap_err().0.contains("empty"));
}

/// `debug --endpoint`: the planner's plan, each step and a measurement on a served copy of the
/// model are what the local backend gives (same prompts through the same template, same seeds).
#[test]
fn a_served_model_plans_steps_and_measures_as_the_local_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path());
    let spec = dir.path().display().to_string();
    let served = crate::agent::Agent::load(&ModelSection::cpu_f32(&spec)).expect("loads");
    let server = crate::backend::serve::Server::bind(served, "127.0.0.1:0", "tiny")
        .expect("binds")
        .spawn(1)
        .expect("serves");
    let url = format!("http://{}", server.addr);
    let mut local = engine_backend(&spec, None, quick_config()).expect("tiny model loads");
    let mut remote = endpoint_backend(&url, None, None, quick_config()).expect("connects");
    assert!(
        remote.describe().contains("served tiny / tiny"),
        "{}",
        remote.describe()
    );
    let task = two_step_task();
    let dt = debug_task_of(&task);
    let plan_req = PlanRequest {
        task: dt.clone(),
        seed: 4,
    };
    // (A random model's plan rarely parses: then both refuse with the same reason.)
    assert_eq!(local.plan(plan_req.clone()), remote.plan(plan_req));
    let step = DebugStepRequest {
        task: dt.clone(),
        subtasks: task.gold_plan.clone(),
        index: 0,
        previous: vec![],
        seed: 9,
    };
    let (a, b) = (
        local.run_step(step.clone()).expect("local step"),
        remote.run_step(step).expect("served step"),
    );
    assert_eq!(a.raw_output, b.raw_output);
    assert_eq!(a.reward.total, b.reward.total);
    let m = MeasureRequest {
        task: dt,
        subtasks: task.gold_plan.clone(),
        seed: 3,
        samples: 3,
        greedy: false,
    };
    let (ml, mr) = (
        local.measure(m.clone()).expect("local"),
        remote.measure(m).expect("served"),
    );
    assert_eq!(ml.runs, mr.runs);
    // A name the server does not list is refused, naming those it does.
    let e = endpoint_backend(&url, Some("planner@9"), None, quick_config())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("--planner-model \"planner@9\" is not served") && e.contains("tiny"),
        "{e}"
    );
    server.stop();
}

//! Trainer tests on a tiny random model with a word-level test tokenizer (no downloads).
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::mpsc;

use cahl_engine::chat::ChatTemplate;
use cahl_engine::grpo::{group_advantages, SeqAdvantage};
use cahl_engine::model::{LoraConfig, Model, ModelConfig};
use cahl_engine::sampling::sample_group;
use cahl_engine::tokenizer::Tokenizer;
use cahl_engine::train::{self, prompts, Agent, Group, Policy, TrainConfig, Trainer};
use cahl_engine::worlds::builtin::{generate_tasks, BuiltinWorld};
use cahl_engine::worlds::{Split, World};
use cahl_sessions::records::{MetricsRecord, RunInfo};
use cahl_sessions::SessionWriter;
use candle_core::{DType, Device, Tensor};

/// A word-level tokenizer whose vocabulary covers the prompts of the built-in world.
fn test_tokenizer() -> Tokenizer {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    let world = BuiltinWorld::new();
    let tasks = generate_tasks(Split::Train, 200, 1).unwrap();
    let mut text =
        prompts::planner_system(&world.tools()) + &prompts::executor_system(&world.tools());
    text += &prompts::flat_system(&world.tools());
    text += " Task Plan Done so far nothing Current sub-task Next step -> <think> </think> <plan> </plan> <tool_call> </tool_call> <response> </response> system user assistant";
    for t in &tasks {
        text.push(' ');
        text += &t.request;
        for p in &t.gold_plan {
            text.push(' ');
            text += p;
        }
    }
    let mut words = BTreeSet::new();
    let re = regex::Regex::new(r"\w+|[^\w\s]+").unwrap();
    for m in re.find_iter(&text) {
        words.insert(m.as_str().to_string());
    }
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, w) in ["[UNK]", "<|im_start|>", "<|im_end|>"].iter().enumerate() {
        vocab.insert(w.to_string(), i as u32);
    }
    for w in words {
        let n = vocab.len() as u32;
        vocab.entry(w).or_insert(n);
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut inner = tokenizers::Tokenizer::new(model);
    inner.with_pre_tokenizer(Some(Whitespace {}));
    inner.add_special_tokens(&[
        tokenizers::AddedToken::from("<|im_start|>", true),
        tokenizers::AddedToken::from("<|im_end|>", true),
    ]);
    Tokenizer::from_hf(inner, None, Some("<|im_end|>".into()), &[])
}

fn tiny_agent(seed: u64) -> Agent {
    let tok = test_tokenizer();
    let cfg = ModelConfig::from_json_str(
        &format!(
            r#"{{"model_type": "qwen2", "vocab_size": {}, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "tie_word_embeddings": true}}"#,
            tok.vocab_size()
        ),
        "tiny",
    )
    .unwrap();
    let w = Model::random_weights(&cfg, seed).unwrap();
    let model = Model::new(&cfg, &w, DType::F32, &Device::Cpu).unwrap();
    let template = ChatTemplate::chatml_fallback(None, Some("<|im_end|>")).unwrap();
    Agent {
        model,
        tok,
        template,
        model_name: "tiny-random".into(),
        remote: None,
    }
}

fn small_config() -> TrainConfig {
    let mut c = TrainConfig {
        seed: 5,
        steps: 4,
        tasks_per_step: 1,
        checkpoint_every: 1,
        ..Default::default()
    };
    c.rollout.plans_per_task = 2;
    c.rollout.samples_per_step = 2;
    c.rollout.max_subtasks = 2;
    c.rollout.planner.max_tokens = 12;
    c.rollout.executor.max_tokens = 8;
    c.grpo.beta = 0.5;
    c.optim.planner.lr = 1e-2;
    c.optim.executor.lr = 1e-2;
    c.lora.planner = LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        ..Default::default()
    };
    c.lora.executor = LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        ..Default::default()
    };
    c
}

/// Adapters with non-zero B so the policy differs from the reference and the KL term has a
/// gradient even when every sample gets the same reward (a random model's usual case).
fn trainer(cfg: &TrainConfig) -> Trainer {
    let mut agent = tiny_agent(3);
    for (i, name) in ["planner", "executor"].iter().enumerate() {
        agent
            .model
            .add_adapter(name, &cfg.lora.planner, 40 + i as u64)
            .unwrap();
        for (k, v) in agent.model.adapter(name).unwrap().named_vars() {
            if k.ends_with("lora_B.weight") {
                let n = v.elem_count();
                let vals: Vec<f32> = (0..n)
                    .map(|j| 0.2 * ((j as f32 + 1.0) * (i as f32 + 1.3)).sin())
                    .collect();
                v.set(&Tensor::from_vec(vals, v.dims(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
    }
    let tasks = generate_tasks(Split::Train, 50, cfg.seed).unwrap();
    Trainer::new(cfg.clone(), agent, Box::new(BuiltinWorld::new()), tasks).unwrap()
}

/// Replace every weight of adapter `name` with `f` of it.
fn map_adapter(t: &Trainer, name: &str, f: impl Fn(&Tensor) -> Tensor) {
    for (_, v) in t.agent.model.adapter(name).unwrap().named_vars() {
        v.set(&f(v.as_tensor())).unwrap();
    }
}

fn snapshot(t: &Trainer, name: &str) -> Vec<Vec<f32>> {
    t.agent
        .model
        .adapter(name)
        .unwrap()
        .named_vars()
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn grpo_update_changes_only_the_active_adapter() {
    let cfg = small_config();
    let mut t = trainer(&cfg);
    let world = BuiltinWorld::new();
    let prompt = t
        .agent
        .prompt_ids(&prompts::planner_system(&world.tools()), "log in as bob")
        .unwrap();
    let mut params = cfg.rollout.planner.clone();
    params.seed = 9;
    let comps = sample_group(
        &t.agent.model,
        Some("planner"),
        &prompt,
        3,
        0,
        &params,
        &t.agent.tok,
    )
    .unwrap();
    let rewards = vec![1.0, 0.0, 0.5];
    let adv = group_advantages(&rewards, true);
    let group = Group {
        policy: Policy::Planner,
        prompt,
        completions: comps,
        rewards,
        at: (0, None),
        advantages: None,
    };
    let adv = uniform(&adv);
    let before_p = snapshot(&t, "planner");
    let before_e = snapshot(&t, "executor");
    let mut warnings = Vec::new();
    let stats = t
        .update(Policy::Planner, &[(group, adv)], 1.0, &mut warnings)
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(stats.grad_norm > 0.0 && stats.grad_norm.is_finite());
    let after_p = snapshot(&t, "planner");
    assert_ne!(before_p, after_p, "the planner adapter must change");
    // Every planner tensor received an update.
    for (b, a) in before_p.iter().zip(&after_p) {
        assert_ne!(b, a, "a planner tensor did not change");
    }
    assert_eq!(
        before_e,
        snapshot(&t, "executor"),
        "the executor adapter must not change"
    );
}

/// Sequence-level advantages as the update takes them.
fn uniform(adv: &[f64]) -> Vec<SeqAdvantage> {
    adv.iter().map(|&a| SeqAdvantage::Uniform(a)).collect()
}

/// Three executor groups of 4 sampled completions with fixed rewards (prompts of the built-in
/// world).
fn executor_groups(t: &Trainer, cfg: &TrainConfig) -> Vec<(Group, Vec<SeqAdvantage>)> {
    let world = BuiltinWorld::new();
    let mut groups = Vec::new();
    for (k, user) in ["log in as bob", "add 3 and 4", "record weight 70"]
        .iter()
        .enumerate()
    {
        let prompt = t
            .agent
            .prompt_ids(&prompts::executor_system(&world.tools()), user)
            .unwrap();
        let mut params = cfg.rollout.executor.clone();
        params.seed = 20 + k as u64;
        params.max_tokens = 6;
        let comps = sample_group(
            &t.agent.model,
            Some("executor"),
            &prompt,
            4,
            0,
            &params,
            &t.agent.tok,
        )
        .unwrap();
        let rewards: Vec<f64> = (0..4).map(|i| ((i * 3 + k) % 4) as f64).collect();
        let adv = group_advantages(&rewards, true);
        groups.push((
            Group {
                policy: Policy::Executor,
                prompt,
                completions: comps,
                rewards,
                at: (0, None),
                advantages: None,
            },
            uniform(&adv),
        ));
    }
    groups
}

/// One GRPO update moves log-probability toward the samples with positive advantage and away
/// from those with negative advantage (no KL, so only the policy term acts). Guards the sign and
/// the pairing of advantages with completions through the whole update path (lanes, shared
/// prefix, micro-batches).
#[test]
fn grpo_update_raises_the_log_probs_of_advantaged_samples() {
    let mut cfg = small_config();
    cfg.grpo.beta = 0.0;
    cfg.grpo.micro_batch = 2;
    cfg.optim.executor.lr = 2e-3;
    cfg.workers = 2;
    let mut t = trainer(&cfg);
    let groups = executor_groups(&t, &cfg);
    // Each completion's log-probability: its tokens' (padding left out).
    let seq_logp = |t: &Trainer| -> Vec<Vec<f64>> {
        executor_token_logprobs(t, &groups)
            .iter()
            .zip(&groups)
            .map(|(lps, (g, _))| {
                lps.iter()
                    .zip(&g.completions)
                    .map(|(row, c)| row[..c.tokens.len()].iter().sum())
                    .collect()
            })
            .collect()
    };
    let before = seq_logp(&t);
    let mut warnings = Vec::new();
    t.update(Policy::Executor, &groups, 1.0, &mut warnings)
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let after = seq_logp(&t);
    let mut score = 0.0;
    for ((b, a), (_, adv)) in before.iter().zip(&after).zip(&groups) {
        for i in 0..adv.len() {
            score += adv[i].at(0) * (a[i] - b[i]);
        }
    }
    assert!(
        score > 0.0,
        "advantage-weighted log-prob change {score} should be positive"
    );
}

/// How an update's sequences are cut into micro-batches (by count, by token budget, sorted by
/// length) changes the summation order only: the adapter after the update is the same.
#[test]
fn micro_batch_partition_does_not_change_the_update() {
    let mut cfg = small_config();
    cfg.optim.executor.lr = 2e-3;
    let mut after = Vec::new();
    // The groups' prompts share the system prefix; each tail is ~7 tokens and completions
    // at most 6: (1, 0) runs sequences alone, (3, 0) splits groups 3 + 1, (4, 20) into pairs by
    // the token budget (7 + 2 * 6 <= 20 < 7 + 3 * 6).
    for (seqs, tokens) in [(4, 0), (1, 0), (3, 0), (4, 20)] {
        cfg.grpo.micro_batch = seqs;
        cfg.grpo.micro_batch_tokens = tokens;
        let mut t = trainer(&cfg);
        let groups = executor_groups(&t, &cfg);
        let before = snapshot(&t, "executor");
        let mut warnings = Vec::new();
        t.update(Policy::Executor, &groups, 1.0, &mut warnings)
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let now = snapshot(&t, "executor");
        assert_ne!(before, now, "the update must move the adapter");
        after.push(now);
    }
    for other in &after[1..] {
        for (a, b) in after[0].iter().flatten().zip(other.iter().flatten()) {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * a.abs(), "{a} vs {b}");
        }
    }
}

fn run_steps(t: Trainer, writer: SessionWriter) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    let (_ctx, crx) = mpsc::channel();
    train::run(t, Some(writer), tx, crx).unwrap();
    rx.try_iter()
        .filter_map(|e| match e {
            cahl_sessions::events::TrainEvent::Warning(w)
            | cahl_sessions::events::TrainEvent::Error(w) => Some(w),
            _ => None,
        })
        .collect()
}

fn new_session(dir: &Path, cfg: &TrainConfig) -> SessionWriter {
    let info = RunInfo::new("tiny-random", cfg.mode.name(), cfg.steps, cfg.seed, "cpu");
    SessionWriter::create(dir, &cfg.to_toml().unwrap(), &info).unwrap()
}

/// Metrics without the timing fields (which differ between runs by nature).
fn metrics_sans_timing(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut m: MetricsRecord = serde_json::from_str(l).unwrap();
            m.tokens_per_s = 0.0;
            m.elapsed_s = 0.0;
            m.step_time_s = 0.0;
            m.rollout_s = 0.0;
            // JSON form: NaN (no executor step ran) becomes null and compares equal.
            serde_json::to_value(&m).unwrap()
        })
        .collect()
}

#[test]
fn end_to_end_and_resume_equals_uninterrupted() {
    let cfg = small_config();
    let tmp = tempfile::tempdir().unwrap();
    // Uninterrupted run of 4 steps.
    let a = tmp.path().join("a");
    let warn = run_steps(trainer(&cfg), new_session(&a, &cfg));
    assert!(warn.iter().all(|w| !w.contains("failed")), "{warn:?}");
    let ma = metrics_sans_timing(&a);
    assert_eq!(
        ma.iter()
            .map(|m| m["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for m in &ma {
        let m: MetricsRecord = serde_json::from_value(m.clone()).unwrap();
        assert!(m.planner_reward.is_finite());
        assert!(m.planner.kl > 0.0, "KL to the reference must be measured");
        assert!(m.planner.grad_norm > 0.0);
        assert!(m.components.keys().any(|k| k.starts_with("planner/")));
    }
    let ta = std::fs::read_to_string(a.join("trajectories.jsonl")).unwrap();
    assert_eq!(ta.lines().count(), 4);
    let first: serde_json::Value = serde_json::from_str(ta.lines().next().unwrap()).unwrap();
    assert_eq!(first["plans"].as_array().unwrap().len(), 2);
    assert!(first["task"]["gold_calls"]
        .as_array()
        .is_some_and(|g| !g.is_empty()));
    for s in 1..=4 {
        let ck = a.join(format!("checkpoints/step-{s}"));
        for f in [
            "planner/adapter_config.json",
            "planner/adapter_model.safetensors",
            "executor/adapter_model.safetensors",
            "executor/optimizer.safetensors",
            "trainer_state.json",
        ] {
            assert!(ck.join(f).exists(), "missing {}", ck.join(f).display());
        }
    }
    // Interrupted run: 2 steps, then a crash mid-way through step 3 (a record of step 3 and a
    // torn metrics line), then --resume to 4 steps.
    let b = tmp.path().join("b");
    let mut cfg2 = cfg.clone();
    cfg2.steps = 2;
    run_steps(trainer(&cfg2), new_session(&b, &cfg2));
    {
        use std::io::Write;
        let third = ta.lines().nth(2).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(b.join("trajectories.jsonl"))
            .unwrap();
        writeln!(f, "{third}").unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(b.join("metrics.jsonl"))
            .unwrap();
        write!(f, "{{\"step\":3,\"planner_rew").unwrap();
    }
    let mut t = trainer(&cfg);
    let r = train::resume_session(&mut t, &b).unwrap();
    let (w, from) = (r.writer, r.step);
    assert!(
        r.notes.iter().any(|n| n.contains("torn last write")),
        "the repair is reported: {:?}",
        r.notes
    );
    assert_eq!(from, 2);
    assert_eq!(t.steps_done(), 2);
    run_steps(t, w);
    assert_eq!(
        metrics_sans_timing(&b),
        ma,
        "resumed metrics differ from the uninterrupted run"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("trajectories.jsonl")).unwrap(),
        ta,
        "resumed trajectories differ"
    );
}

#[test]
fn side_by_side_workers_give_the_same_run_as_one() {
    // Tasks, evaluation and micro-batches spread over lanes; the results are combined in item
    // order, so metrics (rewards, losses, KL, held-out success) and the adapters are identical.
    let mut cfg = small_config();
    cfg.tasks_per_step = 3;
    cfg.steps = 2;
    cfg.grpo.micro_batch = 1;
    cfg.eval.every = 1;
    cfg.eval.tasks = 3;
    let held_out = generate_tasks(Split::Test, 3, 1).unwrap();
    let mut runs = Vec::new();
    for workers in [1, 3] {
        cfg.workers = workers;
        let mut t = trainer(&cfg);
        assert_eq!(t.workers(), workers);
        t.set_eval_tasks(held_out.clone());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        let w = new_session(&dir, &cfg);
        let warnings = run_steps(t, w);
        assert!(warnings.is_empty(), "{warnings:?}");
        let m = metrics_sans_timing(&dir);
        assert_eq!(m.len(), 3, "baseline + 2 steps");
        let adapters =
            std::fs::read(dir.join("checkpoints/step-2/executor/adapter_model.safetensors"))
                .unwrap();
        runs.push((m, adapters));
    }
    assert_eq!(runs[0].0, runs[1].0);
    assert!(runs[0].1 == runs[1].1, "executor adapters differ");
}

#[test]
fn every_mode_runs_a_step() {
    use cahl_engine::train::Mode;
    for mode in [
        Mode::Flat,
        Mode::Separate,
        Mode::FrozenPlanner,
        Mode::FrozenExecutor,
        Mode::StepTool,
        Mode::IhGrpo,
    ] {
        let mut cfg = small_config();
        cfg.ih_grpo.max_tokens = 16;
        cfg.mode = mode;
        cfg.steps = 1;
        let mut t = trainer(&cfg);
        let before_p = snapshot(&t, "planner");
        let before_e = snapshot(&t, "executor");
        let res = t.step().unwrap();
        assert!(res.warnings.is_empty(), "{mode:?}: {:?}", res.warnings);
        assert_eq!(res.trajectories.len(), 1);
        let tr = &res.trajectories[0];
        assert_eq!(tr.mode, mode.name());
        match mode {
            Mode::Flat => {
                assert!(
                    res.metrics.planner_reward.is_nan(),
                    "flat has no planner reward"
                );
                assert!(res.metrics.executor_reward.is_finite());
                assert_eq!(tr.plans.len(), 1);
                assert!(
                    !tr.plans[0].steps.is_empty(),
                    "flat mode must take at least one turn"
                );
                assert!(tr.plans[0].steps[0].samples.iter().all(|s| s
                    .reward
                    .components
                    .contains_key("correctness")
                    || s.reward.components.contains_key("format")));
            }
            Mode::Separate => {
                // The executor works on the gold sub-tasks, once.
                assert_eq!(tr.plans[0].subtasks, tr.task.gold_plan);
                assert!(!tr.plans[0].steps.is_empty());
                assert!(tr.plans[1..].iter().all(|p| p.steps.is_empty()));
                // The planner reward still averages every plan of the group.
                let mean =
                    tr.plans.iter().map(|p| p.reward.total).sum::<f64>() / tr.plans.len() as f64;
                assert!((res.metrics.planner_reward - mean).abs() < 1e-12);
            }
            Mode::StepTool => {
                // G whole trajectories, each turn with its reward, return and advantage.
                assert!(res.metrics.planner_reward.is_nan());
                assert_eq!(tr.plans.len(), cfg.rollout.samples_per_step);
                for p in &tr.plans {
                    assert!(!p.steps.is_empty());
                    for st in &p.steps {
                        assert_eq!(st.samples.len(), 1);
                        let smp = &st.samples[0];
                        assert!(smp.step_return.is_some_and(f64::is_finite));
                        assert!(smp.advantage.is_some_and(f64::is_finite));
                        assert!(smp.reward.components.contains_key("invocation"));
                    }
                    // The last turn carries the terminal reward.
                    let last = &p.steps.last().unwrap().samples[0];
                    assert!(last.reward.components.contains_key("solved"));
                }
            }
            Mode::IhGrpo => {
                // One completion per sample with its planner reward and plan advantage.
                assert!(res.metrics.planner_reward.is_finite());
                assert_eq!(tr.plans.len(), cfg.rollout.samples_per_step);
                assert!(tr
                    .plans
                    .iter()
                    .all(|p| p.advantage.is_some() && !p.raw_text.is_empty()));
            }
            _ => {}
        }
        let (after_p, after_e) = (snapshot(&t, "planner"), snapshot(&t, "executor"));
        assert_eq!(
            before_p != after_p,
            mode.trains_planner(),
            "{mode:?}: planner update"
        );
        if !mode.trains_executor() {
            assert_eq!(before_e, after_e, "{mode:?}: executor must stay frozen");
        }
    }
}

#[test]
fn held_out_evaluation_runs_at_baseline_and_on_schedule() {
    let mut cfg = small_config();
    cfg.steps = 3;
    cfg.checkpoint_every = 0;
    cfg.eval.every = 2;
    let mut t = trainer(&cfg);
    let eval_tasks = generate_tasks(Split::Test, 2, 9).unwrap();
    t.set_eval_tasks(eval_tasks);
    assert!(t.eval_enabled());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let w = new_session(&dir, &cfg);
    let warnings = run_steps(t, w);
    assert!(
        warnings.iter().all(|w| !w.contains("evaluation failed")),
        "{warnings:?}"
    );
    let lines: Vec<MetricsRecord> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<(u64, bool)> = lines.iter().map(|m| (m.step, m.eval.is_some())).collect();
    // Baseline, then every 2 steps, and after the last.
    assert_eq!(steps, vec![(0, true), (1, false), (2, true), (3, true)]);
    let ev = lines[0].eval.as_ref().unwrap();
    assert_eq!(ev.tasks, 2);
    assert_eq!(ev.split, "test");
    assert!((0.0..=1.0).contains(&ev.success_rate));
    assert!(ev.executor_reward.is_finite() || ev.planner_reward.is_finite());
}

/// With LoRA dropout, a prefix built again from the same dropout-RNG state has the same keys and
/// values (what `Trainer::update` relies on when it recomputes the shared prefix's graph for its
/// one backward), while a build from a later state differs (the masks are really drawn).
#[test]
fn prefix_rebuilt_from_the_same_dropout_state_is_identical() {
    use cahl_engine::model::Prefix;
    let mut cfg = small_config();
    cfg.lora.planner.lora_dropout = 0.3;
    let t = trainer(&cfg);
    let world = BuiltinWorld::new();
    let ids = t
        .agent
        .prompt_ids(&prompts::executor_system(&world.tools()), "log in as bob")
        .unwrap();
    let model = &t.agent.model;
    let ad = model.adapter("executor").unwrap();
    let kv = |p: &Prefix| -> Vec<f32> {
        p.cache_for(ids.len())
            .unwrap()
            .layer_tensors()
            .unwrap()
            .into_iter()
            .flatten()
            .flat_map(|(k, v)| {
                let mut a = k.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                a.extend(v.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                a
            })
            .collect()
    };
    let state = ad.dropout_rng_state().unwrap();
    let first = kv(&Prefix::build(model, Some("executor"), &ids, true).unwrap());
    let later = kv(&Prefix::build(model, Some("executor"), &ids, true).unwrap());
    ad.set_dropout_rng_state(state);
    let again = kv(&Prefix::build(model, Some("executor"), &ids, true).unwrap());
    assert_eq!(first, again, "same dropout state, same prefix");
    assert_ne!(first, later, "dropout must change the prefix between draws");
}

/// A run whose checkpoints cannot be written (here `checkpoints` is a file, which even root
/// cannot write into) stops with an error naming the path after a bounded retry, and does not
/// report itself as completed.
#[test]
fn a_run_that_cannot_write_its_checkpoint_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut cfg = small_config();
    cfg.steps = 1;
    let w = new_session(&dir, &cfg);
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();
    std::fs::write(dir.join("checkpoints"), b"not a folder").unwrap();
    let (tx, rx) = mpsc::channel();
    let (_ctx, crx) = mpsc::channel();
    let err = train::run(trainer(&cfg), Some(w), tx, crx).unwrap_err();
    assert!(err.to_string().contains("checkpoints"), "{err}");
    let finished = rx
        .try_iter()
        .find_map(|e| match e {
            cahl_sessions::events::TrainEvent::Finished {
                completed, message, ..
            } => Some((completed, message)),
            _ => None,
        })
        .expect("a Finished event");
    assert!(!finished.0, "not completed: {}", finished.1);
    assert!(finished.1.contains("cannot be written"), "{}", finished.1);
    // The metrics of the step that ran are on disk all the same.
    assert!(std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .contains("\"step\":1"));
}

/// The `Finished` event of a run's events, as (completed, message), and every warning.
fn finished_and_warnings(
    rx: &mpsc::Receiver<cahl_sessions::events::TrainEvent>,
) -> ((bool, String), Vec<String>) {
    use cahl_sessions::events::TrainEvent;
    let mut fin = None;
    let mut warnings = Vec::new();
    for e in rx.try_iter() {
        match e {
            TrainEvent::Finished {
                completed, message, ..
            } => fin = Some((completed, message)),
            TrainEvent::Warning(w) => warnings.push(w),
            _ => {}
        }
    }
    (fin.expect("a Finished event"), warnings)
}

/// Every weight of the adapter saved in `dir` (PEFT safetensors).
fn saved_weights(dir: &Path) -> Vec<f32> {
    let t = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    let mut keys: Vec<_> = t.keys().cloned().collect();
    keys.sort();
    keys.iter()
        .flat_map(|k| t[k].flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

/// A learning rate that overflows the weights (finite, so the config accepts it; 1e39 is past
/// f32's range): every update is rolled back, no non-finite adapter is written, and the run
/// does not end as completed.
#[test]
fn updates_that_make_weights_non_finite_are_rolled_back_and_the_run_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut cfg = small_config();
    cfg.steps = 2;
    cfg.optim.planner.lr = 1e39;
    cfg.optim.executor.lr = 1e39;
    let w = new_session(&dir, &cfg);
    let t = trainer(&cfg);
    let before: Vec<f32> = t
        .agent
        .model
        .adapter("planner")
        .unwrap()
        .named_vars()
        .into_iter()
        .flat_map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    let (_ctx, crx) = mpsc::channel();
    let err = train::run(t, Some(w), tx, crx).unwrap_err();
    assert!(err.to_string().contains("rolled back"), "{err}");
    let ((completed, message), warnings) = finished_and_warnings(&rx);
    assert!(!completed, "{message}");
    assert!(message.starts_with("not completed"), "{message}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("would make weights non-finite")),
        "{warnings:?}"
    );
    // The checkpoints hold the untouched, finite adapters.
    let last = dir.join("checkpoints/step-2/planner");
    let saved = saved_weights(&last);
    assert!(saved.iter().all(|x| x.is_finite()));
    let mut sorted_before = before.clone();
    let mut sorted_saved = saved.clone();
    sorted_before.sort_by(f32::total_cmp);
    sorted_saved.sort_by(f32::total_cmp);
    assert_eq!(sorted_before, sorted_saved, "rolled back means unchanged");
}

/// A learning rate that blows the weights up without overflowing them (1e3: AdamW moves each
/// weight by about 1e3 per step): the run completes its steps but says it diverged, as a
/// warning and in its final message.
#[test]
fn a_diverging_run_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut cfg = small_config();
    cfg.steps = 1;
    cfg.optim.planner.lr = 1e3;
    cfg.optim.executor.lr = 1e3;
    let w = new_session(&dir, &cfg);
    let (tx, rx) = mpsc::channel();
    let (_ctx, crx) = mpsc::channel();
    train::run(trainer(&cfg), Some(w), tx, crx).unwrap();
    let ((completed, message), warnings) = finished_and_warnings(&rx);
    assert!(completed, "{message}");
    assert!(message.contains("diverged"), "{message}");
    assert!(message.contains("weights reach"), "{message}");
    assert!(
        warnings.iter().any(|w| w.starts_with("divergence: ")),
        "{warnings:?}"
    );
}

/// Resume skips a damaged newest checkpoint, says which one it used, drops the records after
/// it, and the continued run records every step again.
#[test]
fn resume_falls_back_to_the_newest_intact_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let mut cfg = small_config();
    cfg.steps = 3;
    run_steps(trainer(&cfg), new_session(&dir, &cfg));
    std::fs::write(
        dir.join("checkpoints/step-3/planner/adapter_model.safetensors"),
        b"garbage",
    )
    .unwrap();
    let mut t = trainer(&cfg);
    let r = train::resume_session(&mut t, &dir).unwrap();
    assert_eq!(r.step, 2, "{:?}", r.notes);
    assert_eq!(t.steps_done(), 2);
    assert!(
        r.notes.iter().any(|n| n.contains("step-3")),
        "the damaged checkpoint is named: {:?}",
        r.notes
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n == "resuming from checkpoint step-2"),
        "{:?}",
        r.notes
    );
    let steps = |d: &Path| -> Vec<u64> {
        metrics_sans_timing(d)
            .iter()
            .map(|m| m["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        steps(&dir),
        vec![1, 2],
        "records after the checkpoint dropped"
    );
    run_steps(t, r.writer);
    assert_eq!(steps(&dir), vec![1, 2, 3]);
}

/// GRPO's mu: with one update per batch the ratio stays at 1 and nothing is clipped; with
/// several, the later updates see a moved policy against the sampling-time log-probs, so the
/// ratio leaves the trust region and the clip fraction is positive.
#[test]
fn several_iterations_per_batch_make_clipping_act() {
    let clip = |mu: usize| {
        let mut cfg = small_config();
        cfg.grpo.iterations = mu;
        cfg.grpo.beta = 0.0;
        cfg.grpo.epsilon_low = 0.01;
        cfg.grpo.epsilon_high = 0.01;
        cfg.optim.executor.lr = 5e-2;
        let mut t = trainer(&cfg);
        let groups = executor_groups(&t, &cfg);
        let mut warnings = Vec::new();
        let temp = cfg.rollout.executor.temperature;
        let st = t
            .update_iterations(Policy::Executor, &groups, temp, &mut warnings)
            .unwrap();
        assert!(!st.skipped, "{warnings:?}");
        st.clip_frac
    };
    let one = clip(1);
    assert!(one < 1e-3, "mu = 1: the ratio is 1, clip fraction {one}");
    let three = clip(3);
    assert!(three > 0.0, "mu = 3: clip fraction {three}");
}

/// Every plan of a task meets the same executor randomness: execution r of any plan draws the
/// same samples for the same sub-tasks; executions differ from each other.
#[test]
fn plans_share_their_executions_seeds() {
    let mut cfg = small_config();
    cfg.rollout.executions_per_plan = 2;
    cfg.rollout.executor.max_tokens = 6;
    let t = trainer(&cfg);
    let task = generate_tasks(Split::Train, 50, 2)
        .unwrap()
        .into_iter()
        .find(|t| t.gold_plan.len() == 2)
        .unwrap();
    let mut world = BuiltinWorld::new();
    let tools = world.tools();
    let run = |world: &mut BuiltinWorld, pi: usize, r: usize| {
        train::execute_plan(
            &t.agent,
            world,
            &task,
            &tools,
            &task.gold_plan,
            &cfg,
            77,
            (pi, r),
            &train::Prefixes::default(),
        )
        .unwrap()
    };
    let texts = |e: &train::Execution| -> Vec<String> {
        e.steps
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.raw_text.clone()))
            .collect()
    };
    let a0 = run(&mut world, 0, 0);
    let b0 = run(&mut world, 1, 0);
    let a1 = run(&mut world, 0, 1);
    assert_eq!(texts(&a0), texts(&b0), "same execution index, same draws");
    assert_ne!(texts(&a0), texts(&a1), "another execution, other draws");
    assert!(a1.steps.iter().all(|s| s.execution == 1));
    assert_eq!(
        b0.groups[0].at,
        (1, Some(0)),
        "plan 1's groups point at plan 1"
    );
}

/// With K executions per plan, every executor sample in the trace gets its own group's
/// advantage (the groups of the second execution point past the first's steps).
#[test]
fn every_execution_step_gets_its_advantages() {
    let mut cfg = small_config();
    cfg.mode = train::Mode::Separate;
    cfg.rollout.executions_per_plan = 2;
    let mut t = trainer(&cfg);
    let r = t.step().unwrap();
    let plan0 = &r.trajectories[0].plans[0];
    assert!(
        plan0.steps.iter().any(|s| s.execution == 1),
        "two executions"
    );
    for st in &plan0.steps {
        assert!(
            st.samples.iter().all(|x| x.advantage.is_some()),
            "step of execution {} without advantages",
            st.execution
        );
    }
    assert!(plan0.success_rate.is_finite());
}

/// Each group's completions' per-token log-probs under the executor adapter, `[group][i][j]`.
fn executor_token_logprobs(
    t: &Trainer,
    groups: &[(Group, Vec<SeqAdvantage>)],
) -> Vec<Vec<Vec<f64>>> {
    use cahl_engine::grpo::completion_logprobs;
    groups
        .iter()
        .map(|(g, _)| {
            let refs: Vec<&[u32]> = g.completions.iter().map(|c| c.tokens.as_slice()).collect();
            let (lp, _) = completion_logprobs(
                &t.agent.model,
                Some("executor"),
                &g.prompt,
                &refs,
                1.0,
                false,
            )
            .unwrap();
            lp.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
        })
        .collect()
}

/// An update with per-token advantages (IH-GRPO's segments, StepTool's turns) moves each
/// token's log-probability in the direction of its own advantage: within one completion the
/// first half is pushed up and the second half down (and the reverse in the next completion).
#[test]
fn a_per_token_update_raises_the_log_probs_of_positively_advantaged_segments() {
    let mut cfg = small_config();
    cfg.grpo.beta = 0.0;
    cfg.optim.executor.lr = 2e-3;
    let mut t = trainer(&cfg);
    let groups: Vec<(Group, Vec<SeqAdvantage>)> = executor_groups(&t, &cfg)
        .into_iter()
        .map(|(g, _)| {
            let adv = g
                .completions
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let n = c.tokens.len();
                    let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                    SeqAdvantage::PerToken(
                        (0..n)
                            .map(|j| if 2 * j < n { sign } else { -sign })
                            .collect(),
                    )
                })
                .collect();
            (g, adv)
        })
        .collect();
    let before = executor_token_logprobs(&t, &groups);
    let mut warnings = Vec::new();
    t.update(Policy::Executor, &groups, 1.0, &mut warnings)
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let after = executor_token_logprobs(&t, &groups);
    let (mut score, mut moved) = (0.0, 0);
    for ((b, a), (g, adv)) in before.iter().zip(&after).zip(&groups) {
        for (i, c) in g.completions.iter().enumerate() {
            for j in 0..c.tokens.len() {
                let d = a[i][j] - b[i][j];
                score += adv[i].at(j) * d;
                moved += (adv[i].at(j) * d > 0.0) as usize;
            }
        }
    }
    let total: usize = groups
        .iter()
        .flat_map(|(g, _)| g.completions.iter().map(|c| c.tokens.len()))
        .sum();
    assert!(
        score > 0.0,
        "advantage-weighted token log-prob change {score}"
    );
    assert!(
        moved * 2 > total,
        "most tokens ({moved} of {total}) move the way their own advantage says"
    );
}

/// One update in each of `steptool` and `ih-grpo`, on the groups their own rollouts produce
/// (steptool: one group per turn, each with its own prompt; ih-grpo: one group of whole
/// completions with per-token advantages), raises the log-probs of the positively advantaged
/// segments. A random model earns equal rewards everywhere, so the advantages are set by hand
/// in each mode's shape: per turn +1 / -1 alternating (steptool), per token +1 in the first
/// half and -1 in the second (ih-grpo, where the plan comes first and the calls after it).
#[test]
fn an_update_in_each_new_mode_raises_its_positively_advantaged_segments() {
    use cahl_engine::train::{rollout_task_with, Mode, Prefixes};
    for mode in [Mode::StepTool, Mode::IhGrpo] {
        let mut cfg = small_config();
        cfg.mode = mode;
        cfg.grpo.beta = 0.0;
        cfg.optim.executor.lr = 2e-3;
        cfg.ih_grpo.max_tokens = 12;
        cfg.rollout.samples_per_step = 3;
        let mut t = trainer(&cfg);
        let task = generate_tasks(Split::Train, 20, 3).unwrap().remove(0);
        let mut world = BuiltinWorld::new();
        let r = rollout_task_with(
            &t.agent,
            &mut world,
            &task,
            &cfg,
            11,
            1,
            &Prefixes::default(),
        )
        .unwrap();
        assert!(r.groups.iter().all(|g| g.advantages.is_some()), "{mode:?}");
        let groups: Vec<(Group, Vec<SeqAdvantage>)> = r
            .groups
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let adv = g
                    .completions
                    .iter()
                    .map(|c| match mode {
                        Mode::StepTool => {
                            SeqAdvantage::Uniform(if k % 2 == 0 { 1.0 } else { -1.0 })
                        }
                        _ => {
                            let n = c.tokens.len();
                            SeqAdvantage::PerToken(
                                (0..n).map(|j| if 2 * j < n { 1.0 } else { -1.0 }).collect(),
                            )
                        }
                    })
                    .collect();
                (g.clone(), adv)
            })
            .collect();
        let before = executor_token_logprobs(&t, &groups);
        let mut warnings = Vec::new();
        t.update(Policy::Executor, &groups, 1.0, &mut warnings)
            .unwrap();
        assert!(warnings.is_empty(), "{mode:?}: {warnings:?}");
        let after = executor_token_logprobs(&t, &groups);
        let mut score = 0.0;
        for ((b, a), (g, adv)) in before.iter().zip(&after).zip(&groups) {
            for (i, c) in g.completions.iter().enumerate() {
                for j in 0..c.tokens.len() {
                    score += adv[i].at(j) * (a[i][j] - b[i][j]);
                }
            }
        }
        assert!(score > 0.0, "{mode:?}: advantage-weighted change {score}");
    }
}

/// `[ih_grpo] advantage` decides the advantages' shape: one per token (segments: plan and
/// calls apart) or one per completion (outcome).
#[test]
fn ih_grpo_advantage_setting_is_honoured() {
    use cahl_engine::train::config::IhAdvantage;
    use cahl_engine::train::{rollout_task_with, Mode, Prefixes};
    let task = generate_tasks(Split::Train, 20, 3).unwrap().remove(0);
    for (how, per_token) in [(IhAdvantage::Segments, true), (IhAdvantage::Outcome, false)] {
        let mut cfg = small_config();
        cfg.mode = Mode::IhGrpo;
        cfg.ih_grpo.max_tokens = 12;
        cfg.ih_grpo.advantage = how;
        let t = trainer(&cfg);
        let mut world = BuiltinWorld::new();
        let r = rollout_task_with(
            &t.agent,
            &mut world,
            &task,
            &cfg,
            11,
            1,
            &Prefixes::default(),
        )
        .unwrap();
        let adv = r.groups[0]
            .advantages
            .as_ref()
            .expect("ih-grpo brings its advantages");
        assert_eq!(adv.len(), cfg.rollout.samples_per_step);
        for a in adv {
            assert_eq!(
                matches!(a, SeqAdvantage::PerToken(_)),
                per_token,
                "{how:?}: {a:?}"
            );
        }
    }
}

// ---- The `openai` rollout backend against `serve` (see `cahl_engine::backend`). ----

mod served {
    use super::*;
    use cahl_engine::backend::openai::OpenAiBackend;
    use cahl_engine::backend::serve::{Server, ServerHandle};
    use cahl_engine::backend::{BackendKind, BackendSection, RolloutBackend, SampleRequest};
    use cahl_engine::sampling::SamplingParams;
    use std::sync::Arc;

    /// A server of the same tiny model the trainers hold (base weights only: the trainer
    /// publishes its adapters).
    fn serve() -> ServerHandle {
        Server::bind(tiny_agent(3), "127.0.0.1:0", "tiny-random")
            .unwrap()
            .spawn(2)
            .unwrap()
    }

    fn section(servers: &[&ServerHandle]) -> BackendSection {
        BackendSection {
            kind: BackendKind::OpenAi,
            endpoints: servers
                .iter()
                .map(|s| format!("http://{}", s.addr))
                .collect(),
            retries: 1,
            backoff_s: 0.01,
            timeout_s: 60.0,
            ..BackendSection::default()
        }
    }

    fn remote(t: &mut Trainer, servers: &[&ServerHandle], dir: &Path) {
        let b = OpenAiBackend::connect(&section(servers), dir).unwrap();
        t.agent.remote = Some(Arc::new(b));
    }

    /// Everything of a step that does not depend on timing, with log-prob-derived numbers
    /// rounded (the servers prefill whole prompts, the local backend reuses a cached prefix).
    fn comparable(m: &MetricsRecord) -> Vec<String> {
        let r = |x: f64| format!("{:.4}", x);
        vec![
            r(m.planner_reward),
            r(m.executor_reward),
            r(m.success_rate),
            r(m.misaligned_rate),
            r(m.planner.loss),
            r(m.executor.loss),
            r(m.planner.kl),
            r(m.executor.kl),
            format!("{:?}", m.components.keys().collect::<Vec<_>>()),
        ]
    }

    #[test]
    fn a_seeded_run_on_two_servers_gives_the_local_backends_metrics_and_trajectories() {
        let cfg = TrainConfig {
            steps: 3,
            ..small_config()
        };
        let (a, b) = (serve(), serve());
        let dir = tempfile::tempdir().unwrap();
        let mut local = trainer(&cfg);
        let mut served = trainer(&cfg);
        remote(&mut served, &[&a, &b], dir.path());
        for step in 1..=3u64 {
            let l = local.step().unwrap();
            let s = served.step().unwrap();
            assert!(s.warnings.is_empty(), "{:?}", s.warnings);
            assert_eq!(
                comparable(&l.metrics),
                comparable(&s.metrics),
                "step {step}"
            );
            assert_eq!(l.trajectories.len(), s.trajectories.len());
            for (lt, st) in l.trajectories.iter().zip(&s.trajectories) {
                // Same plans, calls, texts, rewards and advantages: the same samples.
                assert_eq!(
                    serde_json::to_value(lt).unwrap(),
                    serde_json::to_value(st).unwrap(),
                    "step {step}"
                );
                assert_eq!(st.policy_version, Some(step - 1));
            }
        }
        // The same updates: the adapters agree.
        for name in ["planner", "executor"] {
            let (sl, ss) = (snapshot(&local, name), snapshot(&served, name));
            assert_eq!(sl.len(), ss.len());
            assert!(!sl.is_empty());
            for (x, y) in sl.iter().zip(ss) {
                let d = x
                    .iter()
                    .zip(&y)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-4, "{name}: adapters differ by {d}");
            }
        }
        // Only the newest version's adapters stay on disk and on the servers.
        let backend = served.agent.remote.as_ref().unwrap();
        let tagged = |v: u64| {
            let n = |role: &str| format!("{role}@{v}-");
            (n("planner"), n("executor"))
        };
        let runs: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(runs.len(), 1, "one folder per run");
        let run = runs.into_iter().next().unwrap().unwrap().path();
        let mut kept: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        let (p2, e2) = tagged(2);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(
            kept[0].starts_with(&e2) && kept[1].starts_with(&p2),
            "{kept:?}"
        );
        assert_eq!(backend.policy_version(), Some(2));
        for server in [&a, &b] {
            let ids = served_ids(server);
            assert_eq!(ids.len(), 3, "{ids:?}");
            assert!(
                ids[1].starts_with(&e2) && ids[2].starts_with(&p2),
                "{ids:?}"
            );
        }
        a.stop();
        b.stop();
    }

    #[test]
    fn a_published_adapter_changes_what_the_server_samples() {
        let cfg = small_config();
        let server = serve();
        let dir = tempfile::tempdir().unwrap();
        let t = trainer(&cfg);
        let backend = OpenAiBackend::connect(&section(&[&server]), dir.path()).unwrap();
        let prompt = t
            .agent
            .prompt_ids("You plan.", "Check the weather in Paris")
            .unwrap();
        let params = SamplingParams {
            max_tokens: 6,
            seed: 11,
            ..SamplingParams::default()
        };
        let req = SampleRequest {
            adapter: Some("planner"),
            prefix: None,
            prompt: &prompt,
            g: 3,
            first_stream: 5,
            params: &params,
        };
        let local = |t: &Trainer| {
            sample_group(
                &t.agent.model,
                Some("planner"),
                &prompt,
                3,
                5,
                &params,
                &t.agent.tok,
            )
            .unwrap()
        };
        let close = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
        };
        backend.publish(0, &t.agent.model, "tiny-random").unwrap();
        let before = backend.sample(&req).unwrap();
        let want = local(&t);
        for (x, y) in before.iter().zip(&want) {
            assert_eq!(x.tokens, y.tokens);
            assert!(close(&x.logprobs, &y.logprobs));
        }
        // New planner weights, published as version 1.
        for (k, v) in t.agent.model.adapter("planner").unwrap().named_vars() {
            if k.ends_with("lora_B.weight") {
                let w = (v.as_tensor() * -3.0).unwrap();
                v.set(&w).unwrap();
            }
        }
        backend.publish(1, &t.agent.model, "tiny-random").unwrap();
        assert_eq!(backend.policy_version(), Some(1));
        let after = backend.sample(&req).unwrap();
        assert!(
            after
                .iter()
                .zip(&before)
                .any(|(x, y)| !close(&x.logprobs, &y.logprobs)),
            "the served answer did not change after loading new weights"
        );
        for (x, y) in after.iter().zip(&local(&t)) {
            assert_eq!(x.tokens, y.tokens);
            assert!(close(&x.logprobs, &y.logprobs));
        }
        // The old version is gone from the server.
        let ids = served_ids(&server);
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert_eq!(ids[0], "tiny-random");
        assert_eq!(ids[1], backend.adapter_name("executor", 1));
        assert_eq!(ids[2], backend.adapter_name("planner", 1));
        server.stop();
    }

    /// The model ids a server lists (`GET /v1/models`).
    fn served_ids(server: &ServerHandle) -> Vec<String> {
        let models = http_get(&format!("http://{}/v1/models", server.addr));
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `GET url` as JSON, over a bare TCP connection (HTTP/1.0: the server closes after).
    fn http_get(url: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn a_server_that_dies_mid_step_fails_the_step_naming_it_and_a_new_one_continues() {
        let cfg = small_config();
        let server = serve();
        let dir = tempfile::tempdir().unwrap();
        let mut t = trainer(&cfg);
        remote(&mut t, &[&server], dir.path());
        t.step().unwrap();
        // Version 1 is served; the server then goes away: step 2 fails in its rollouts.
        t.publish_adapters().unwrap();
        let addr = server.addr;
        server.stop();
        let e = t.step().unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, cahl_engine::EngineError::Endpoint { .. }),
            "{msg}"
        );
        assert!(msg.contains(&format!("{addr}/v1")), "{msg}");
        assert!(msg.contains("POST /completions failed 2 time(s)"), "{msg}");
        assert_eq!(t.steps_done(), 1, "a failed step changes nothing");
        // The version is forgotten: the next step loads the adapters again.
        assert_eq!(t.agent.remote.as_ref().unwrap().policy_version(), None);
        // Another server: the run goes on from where it was.
        let other = serve();
        remote(&mut t, &[&other], dir.path());
        let r = t.step().unwrap();
        assert_eq!(r.metrics.step, 2);
        assert_eq!(r.trajectories[0].policy_version, Some(1));
        other.stop();
    }
}

/// Waves: every task (and every execution of a plan) on its own thread, their samples decoded
/// together.
mod waves {
    use super::*;
    use cahl_engine::backend::SampleRequest;
    use cahl_engine::sampling::{Completion, SamplingParams};
    use cahl_engine::train::BatchMode;
    use cahl_engine::wave;

    fn params(seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: 1.1,
            max_tokens: 6 + seed as usize % 5,
            seed,
            ..Default::default()
        }
    }

    /// Item `i` samples `1 + i % 3` times in a row, each prompt depending on the last answer,
    /// and item 2 forks into three nested participants.
    fn work(agent: &Agent, i: usize) -> Vec<Vec<Completion>> {
        let mut prompt: Vec<u32> = (0..(3 + 4 * i as u32))
            .map(|k| 5 + (k * 11 + i as u32) % 40)
            .collect();
        let mut out = Vec::new();
        for round in 0..(1 + i % 3) {
            let p = params((i * 10 + round) as u64);
            let c = agent
                .sample(&SampleRequest {
                    adapter: Some(if round % 2 == 0 {
                        "executor"
                    } else {
                        "planner"
                    }),
                    prefix: None,
                    prompt: &prompt,
                    g: 1 + (i + round) % 3,
                    first_stream: 0,
                    params: &p,
                })
                .unwrap();
            prompt.extend(c[0].tokens.iter().take(2));
            out.push(c);
        }
        if i == 2 {
            let nested = wave::map(vec![0usize, 1, 2], |j| {
                let p = params(100 + j as u64);
                let pr: Vec<u32> = prompt.iter().copied().skip(j).collect();
                agent
                    .sample(&SampleRequest {
                        adapter: Some("executor"),
                        prefix: None,
                        prompt: &pr,
                        g: 2,
                        first_stream: j as u64,
                        params: &p,
                    })
                    .unwrap()
            });
            out.extend(nested);
        }
        out
    }

    fn agent() -> Agent {
        let mut agent = tiny_agent(8);
        for (i, name) in ["planner", "executor"].iter().enumerate() {
            let lora = LoraConfig {
                r: 2,
                lora_alpha: 4.0,
                ..Default::default()
            };
            agent.model.add_adapter(name, &lora, 50 + i as u64).unwrap();
        }
        agent
    }

    #[test]
    fn a_wave_answers_every_participant_as_sampling_alone_would() {
        let agent = agent();
        let alone: Vec<_> = (0..5).map(|i| work(&agent, i)).collect();
        let (together, stats) = wave::run(&agent, 64, (0..5).collect(), |i| work(&agent, i));
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a.len(), b.len(), "item {i}");
            for (x, y) in a.iter().zip(b) {
                let tok = |v: &[Completion]| v.iter().map(|c| c.tokens.clone()).collect::<Vec<_>>();
                assert_eq!(tok(x), tok(y), "item {i}");
                for (cx, cy) in x.iter().zip(y) {
                    for (p, q) in cx.logprobs.iter().zip(&cy.logprobs) {
                        assert!((p - q).abs() < 1e-4, "item {i}: {p} vs {q}");
                    }
                }
            }
        }
        // Items sample 1, 2, 3, 1, 2 times, item 2 then three more at once; rows of several
        // requests decode in the same steps.
        let requests = 1 + 2 + 3 + 1 + 2 + 3;
        assert_eq!(stats.requests, requests);
        let tokens: usize = together
            .iter()
            .flatten()
            .flatten()
            .map(|c| c.tokens.len())
            .sum();
        assert_eq!(
            stats.row_steps, tokens,
            "one token per row per step: {stats:?}"
        );
        assert!(stats.max_rows > 3, "{stats:?}");
        assert!(
            stats.row_steps > 2 * stats.steps,
            "a mean batch above 2 rows: {stats:?}"
        );
        // A row cap keeps batches small, with the same answers.
        let (capped, cstats) = wave::run(&agent, 3, (0..5).collect(), |i| work(&agent, i));
        assert!(cstats.max_rows <= 3, "{cstats:?}");
        assert!(cstats.steps > stats.steps, "{cstats:?} vs {stats:?}");
        for (a, b) in together.iter().zip(&capped) {
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.len(), y.len());
                for (cx, cy) in x.iter().zip(y) {
                    assert_eq!(cx.tokens, cy.tokens);
                }
            }
        }
        // Off a wave, map runs in order on this thread.
        assert!(!wave::in_wave());
        assert_eq!(wave::map(vec![1, 2, 3], |x| x * 2), vec![2, 4, 6]);
    }

    #[test]
    fn a_request_that_cannot_be_decoded_fails_alone() {
        let agent = agent();
        let p = params(3);
        let (out, _) = wave::run(&agent, 64, (0..4).collect(), |i: usize| {
            // Participant 1 asks with an empty prompt, participant 2 for an unknown adapter.
            let prompt: Vec<u32> = if i == 1 {
                vec![]
            } else {
                vec![5, 6, 7 + i as u32]
            };
            agent.sample(&SampleRequest {
                adapter: Some(if i == 2 { "nope" } else { "executor" }),
                prefix: None,
                prompt: &prompt,
                g: 2,
                first_stream: 0,
                params: &p,
            })
        });
        assert!(out[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("empty prompt")));
        assert!(out[2].is_err());
        for i in [0usize, 3] {
            let prompt = vec![5, 6, 7 + i as u32];
            let alone = cahl_engine::sampling::sample_group(
                &agent.model,
                Some("executor"),
                &prompt,
                2,
                0,
                &p,
                &agent.tok,
            )
            .unwrap();
            let got = out[i].as_ref().unwrap();
            let toks = |v: &[Completion]| v.iter().map(|c| c.tokens.clone()).collect::<Vec<_>>();
            assert_eq!(toks(got), toks(&alone), "participant {i}");
        }
    }

    #[test]
    fn a_panicking_participant_ends_the_wave_instead_of_hanging_it() {
        let agent = agent();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wave::run(&agent, 64, (0..4).collect(), |i| {
                if i == 1 {
                    panic!("participant {i} fails");
                }
                work(&agent, i)
            })
        }));
        assert!(r.is_err());
    }

    #[test]
    fn batched_rollouts_give_the_unbatched_run() {
        // Tasks, plans and executions on their own threads, decoded in waves: the same
        // trajectories and rewards as one task at a time (log-prob based metrics agree to
        // rounding: batched products round differently).
        let mut cfg = small_config();
        cfg.tasks_per_step = 3;
        cfg.steps = 2;
        cfg.workers = 1;
        cfg.rollout.executions_per_plan = 2;
        // Batched, rows of several tasks' requests share decode steps; off, no wave runs.
        cfg.rollout.batch = BatchMode::On;
        let w = trainer(&cfg).step().unwrap().waves.expect("a batched step");
        assert!(w.max_rows > cfg.rollout.plans_per_task, "{w:?}");
        assert!(
            w.row_steps > 2 * w.steps,
            "a mean batch above 2 rows: {w:?}"
        );
        cfg.rollout.batch = BatchMode::Off;
        assert!(trainer(&cfg).step().unwrap().waves.is_none());
        let mut runs = Vec::new();
        for batch in [BatchMode::Off, BatchMode::On] {
            cfg.rollout.batch = batch;
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("s");
            let warnings = run_steps(trainer(&cfg), new_session(&dir, &cfg));
            assert!(warnings.is_empty(), "{warnings:?}");
            let traj = std::fs::read_to_string(dir.join("trajectories.jsonl")).unwrap();
            runs.push((traj, metrics_sans_timing(&dir)));
        }
        assert!(runs[0].0.lines().count() == 6, "3 tasks x 2 steps");
        assert_eq!(runs[0].0, runs[1].0, "batched trajectories differ");
        for (a, b) in runs[0].1.iter().zip(&runs[1].1) {
            for key in ["planner_reward", "executor_reward", "success_rate"] {
                assert_eq!(a[key], b[key], "{key}");
            }
            for policy in ["planner", "executor"] {
                for key in ["loss", "kl", "grad_norm"] {
                    let (x, y) = (&a[policy][key], &b[policy][key]);
                    if a["step"] == 0 {
                        continue; // the baseline record has no update
                    }
                    let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                    assert!(
                        (x - y).abs() <= 1e-3 * (1.0 + x.abs()),
                        "{policy}.{key}: {x} vs {y}"
                    );
                }
            }
        }
    }
}

#[test]
fn an_init_reference_is_the_starting_policy_and_survives_a_resume() {
    use cahl_engine::grpo::KlReference;
    let mut cfg = small_config();
    cfg.steps = 2;
    cfg.grpo.iterations = 1;
    // Base reference: the adapters (non-zero B) differ from the base model from the start.
    let mut base = trainer(&cfg);
    let kl_base = base.step().unwrap().metrics.planner.kl;
    assert!(kl_base > 1e-6, "{kl_base}");
    // Init reference: the first update compares the policy with itself.
    cfg.grpo.reference = KlReference::Init;
    let start = trainer(&cfg);
    let initial = snapshot(&start, "planner");
    assert_eq!(snapshot(&start, "planner-reference"), initial);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let (tx, rx) = mpsc::channel();
    let (_ctx, crx) = mpsc::channel();
    let mut first_kl = None;
    train::run(start, Some(new_session(&dir, &cfg)), tx, crx).unwrap();
    for e in rx.try_iter() {
        if let cahl_sessions::events::TrainEvent::Metrics(m) = e {
            if m.step == 1 {
                first_kl = Some(m.planner.kl);
            }
        }
    }
    let first_kl = first_kl.expect("step 1 metrics");
    assert!(
        first_kl.abs() < 1e-6,
        "policy = reference at step 1, KL {first_kl}"
    );
    assert!(dir
        .join("reference/planner/adapter_model.safetensors")
        .is_file());
    // Resume: the reference comes back from the session, not from the resumed adapters.
    let mut t = trainer(&cfg);
    map_adapter(&t, "planner-reference", |x| x.zeros_like().unwrap());
    train::resume_session(&mut t, &dir).unwrap();
    assert_eq!(snapshot(&t, "planner-reference"), initial);
    assert_ne!(
        snapshot(&t, "planner"),
        initial,
        "the checkpoint's adapters"
    );
    // Without the saved reference the resume names what is missing.
    std::fs::remove_dir_all(dir.join("reference")).unwrap();
    let mut t = trainer(&cfg);
    let err = match train::resume_session(&mut t, &dir) {
        Ok(_) => panic!("resumed without the saved reference"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("reference") && err.contains("grpo.reference"),
        "{err}"
    );
}

#[test]
fn a_resume_that_starts_over_keeps_the_saved_reference() {
    use cahl_engine::grpo::KlReference;
    let mut cfg = small_config();
    cfg.steps = 1;
    cfg.grpo.reference = KlReference::Init;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    run_steps(trainer(&cfg), new_session(&dir, &cfg));
    let saved = dir.join("reference/planner/adapter_model.safetensors");
    let before = std::fs::read(&saved).unwrap();
    // No usable checkpoint: the run starts over from step 0, with other starting adapters
    // (so the reference this process built differs from the saved one).
    std::fs::remove_dir_all(dir.join("checkpoints")).unwrap();
    let mut t = trainer(&cfg);
    map_adapter(&t, "planner-reference", |x| (x * 2.0).unwrap());
    let r = train::resume_session(&mut t, &dir).unwrap();
    assert_eq!(r.step, 0);
    run_steps(t, r.writer);
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        before,
        "the saved reference was replaced"
    );
}

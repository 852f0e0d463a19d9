//! Supervised pre-training / SFT: gold data in the rollout format, full-parameter gradients,
//! a loss that falls, the saved HF folder loading back, and the embedded model's size.
use cahl_engine::chat::ChatTemplate;
use cahl_engine::load::{embedded, load_model};
use cahl_engine::model::{KvCache, Model};
use cahl_engine::optim::AdamWConfig;
use cahl_engine::parse::{parse_executor, parse_planner};
use cahl_engine::rewards::{executor_step_reward_parsed, RewardConfig};
use cahl_engine::sft::{
    builtin_gold_texts, gold_texts, merge_some_plans, micro_batches, save_hf_folder, sft_loss,
    sft_run, tokenize_examples, train_tokenizer, PretrainConfig, Role, SftExample,
    TINY_CHAT_TEMPLATE,
};
use cahl_engine::tokenizer::Tokenizer;
use cahl_engine::worlds::builtin::{generate_tasks, BuiltinWorld};
use cahl_engine::worlds::{Split, World};
use candle_core::{DType, Device};

#[test]
fn gold_texts_parse_back_to_the_gold_plan_and_calls() {
    let tasks = generate_tasks(Split::Train, 40, 3).unwrap();
    let mut world = BuiltinWorld::new();
    let tools = world.tools();
    let rcfg = RewardConfig::default();
    for t in &tasks {
        let texts = gold_texts(t, &mut world).unwrap();
        let plans: Vec<_> = texts.iter().filter(|g| g.role == Role::Planner).collect();
        assert_eq!(plans.len(), 1);
        let p = parse_planner(&plans[0].completion);
        assert!(p.is_well_formed(), "{:?}", p.issues);
        assert_eq!(p.subtasks, t.gold_plan);
        let execs: Vec<_> = texts.iter().filter(|g| g.role == Role::Executor).collect();
        assert_eq!(execs.len(), t.gold_calls.len().min(t.gold_plan.len()));
        for (k, e) in execs.iter().enumerate() {
            let out = parse_executor(&e.completion);
            assert!(out.issues.is_empty(), "{:?}", out.issues);
            assert_eq!(out.calls(), vec![t.gold_calls[k].clone()]);
            // The gold answer out-scores the same call with its arguments dropped.
            let gold = &t.gold_calls[k..=k];
            let rb = executor_step_reward_parsed(&out, &tools, gold, &rcfg);
            let wrong = parse_executor(&format!(
                "<think>x</think>\n<tool_call>\n{{\"name\": \"{}\", \"parameters\": {{}}}}\n</tool_call>",
                t.gold_calls[k].name
            ));
            let rw = executor_step_reward_parsed(&wrong, &tools, gold, &rcfg);
            if !t.gold_calls[k].arguments.is_empty() {
                assert!(rb.total > rw.total, "{rb:?} vs {rw:?}");
            }
            assert!(rb.total > 0.0);
            // Later sub-tasks see earlier calls with the world's observations.
            if k > 0 {
                assert!(e.user.contains(&t.gold_calls[k - 1].to_toolrl_json()));
            }
        }
        // Flat: one turn per call and a final response.
        let flats: Vec<_> = texts.iter().filter(|g| g.role == Role::Flat).collect();
        assert_eq!(flats.len(), t.gold_calls.len() + 1);
        assert!(parse_executor(&flats.last().unwrap().completion)
            .calls()
            .is_empty());
    }
}

#[test]
fn merged_plans_join_the_last_two_subtasks_of_the_chosen_fraction() {
    let (tasks, gold) = builtin_gold_texts(200, 5).unwrap();
    let multi = tasks.iter().filter(|t| t.gold_plan.len() >= 2).count();
    assert!(multi > 50, "{multi}");
    let mut none = gold.clone();
    assert_eq!(merge_some_plans(&tasks, &mut none, 0.0, 5), 0);
    let mut all = gold.clone();
    assert_eq!(merge_some_plans(&tasks, &mut all, 1.0, 5), multi);
    let mut some = gold.clone();
    let n = merge_some_plans(&tasks, &mut some, 0.6, 5);
    assert!(
        (n as f64) > 0.45 * multi as f64 && (n as f64) < 0.75 * multi as f64,
        "{n} of {multi}"
    );
    // Same seed, same choice.
    let mut again = gold.clone();
    assert_eq!(merge_some_plans(&tasks, &mut again, 0.6, 5), n);
    let planners = |v: &[cahl_engine::sft::GoldText]| -> Vec<String> {
        v.iter()
            .filter(|g| g.role == Role::Planner)
            .map(|g| g.completion.clone())
            .collect()
    };
    assert_eq!(planners(&some), planners(&again));
    assert_eq!(planners(&none), planners(&gold));
    let mut changed = 0;
    for ((t, g), m) in tasks.iter().zip(planners(&gold)).zip(planners(&some)) {
        let p = parse_planner(&m);
        assert!(p.issues.is_empty(), "{m}");
        if g == m {
            assert_eq!(p.subtasks, t.gold_plan);
            continue;
        }
        changed += 1;
        // One sub-task fewer: the last two gold sub-tasks as one, values and all.
        let k = t.gold_plan.len();
        assert_eq!(p.subtasks.len(), k - 1);
        assert_eq!(p.subtasks[..k - 2], t.gold_plan[..k - 2]);
        assert_eq!(
            p.subtasks[k - 2],
            format!("{}, then {}", t.gold_plan[k - 2], t.gold_plan[k - 1])
        );
    }
    assert_eq!(changed, n);
    // Executor and flat conversations never change.
    let others = |v: &[cahl_engine::sft::GoldText]| -> Vec<String> {
        v.iter()
            .filter(|g| g.role != Role::Planner)
            .map(|g| g.user.clone() + &g.completion)
            .collect()
    };
    assert_eq!(others(&some), others(&gold));
}

fn tiny_setup() -> (Tokenizer, ChatTemplate, Vec<SftExample>, Model) {
    let (_, texts) = builtin_gold_texts(12, 1).unwrap();
    let corpus: Vec<String> = texts
        .iter()
        .map(|g| format!("{}\n{}\n{}", g.system, g.user, g.completion))
        .collect();
    let hf = train_tokenizer(&corpus, 600).unwrap();
    let tok = Tokenizer::from_hf(hf, None, Some("<|im_end|>".into()), &[]);
    let template = ChatTemplate::new(TINY_CHAT_TEMPLATE, None, Some("<|im_end|>")).unwrap();
    let examples = tokenize_examples(&texts, &tok, &template, "<|im_end|>").unwrap();
    let cfg = PretrainConfig {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        intermediate_size: 64,
        ..Default::default()
    };
    let mcfg = cfg.model_config(tok.vocab_size()).unwrap();
    let w = Model::random_weights(&mcfg, 2).unwrap();
    let model = Model::new(&mcfg, &w, DType::F32, &Device::Cpu).unwrap();
    (tok, template, examples, model)
}

#[test]
fn tokenizer_round_trips_and_keeps_special_tokens_whole() {
    let (tok, _, examples, _) = tiny_setup();
    let text = "<|im_start|>user\nBook table 12 for 2025-03-04<|im_end|>\n";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert!(ids.contains(&im_end));
    // Digits are single tokens, so numbers can be copied digit by digit.
    for d in "0123456789".chars() {
        assert_eq!(tok.encode(&d.to_string(), false).unwrap().len(), 1);
    }
    assert!(examples
        .iter()
        .all(|e| e.completion.last() == Some(&im_end)));
}

#[test]
fn full_parameter_training_reaches_every_weight_and_lowers_the_loss() {
    let (_, _, examples, mut model) = tiny_setup();
    let named = model.make_base_trainable().unwrap();
    let n_vars = named.len();
    // Every base weight gets a gradient from one batch.
    let batch: Vec<&SftExample> = examples
        .iter()
        .filter(|e| e.role == Role::Executor)
        .take(3)
        .collect();
    let (loss, n) = sft_loss(&model, None, &batch, true).unwrap();
    assert_eq!(
        n,
        batch.iter().map(|e| e.completion.len()).sum::<usize>(),
        "only completion tokens count"
    );
    let grads = loss.backward().unwrap();
    for (name, v) in &named {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let s = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(s > 0.0, "zero gradient for {name}");
    }
    // A short run on a handful of examples memorizes them.
    let few: Vec<SftExample> = examples
        .iter()
        .filter(|e| e.role == Role::Planner)
        .take(4)
        .cloned()
        .collect();
    let refs: Vec<&SftExample> = few.iter().collect();
    let before = sft_loss(&model, None, &refs, false)
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap();
    let opt = AdamWConfig {
        lr: 1e-2,
        ..Default::default()
    };
    let log = sft_run(&model, None, named, &few, opt, 40, 4, 3, 0.0, 0, |_, _| {
        Ok(None)
    })
    .unwrap();
    assert_eq!(log.len(), 40);
    let after = sft_loss(&model, None, &refs, false)
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        after < 0.5 * before,
        "loss {before} -> {after} after 40 steps on 4 examples ({n_vars} tensors)"
    );
}

#[test]
fn saved_folder_loads_back_with_the_same_logits() {
    let (tok, _, examples, model) = tiny_setup();
    let dir = tempfile::tempdir().unwrap();
    let tok_json = tok.inner().to_string(false).unwrap();
    save_hf_folder(dir.path(), &model, &tok_json, DType::F32).unwrap();
    let lm = load_model(dir.path()).unwrap();
    let back = Model::new(&lm.config, &lm.weights, DType::F32, &Device::Cpu).unwrap();
    let ids = &examples[0].prompt[..20];
    let x = model.ids_tensor(ids, 1).unwrap();
    let a = model
        .forward(&x, 0, &mut KvCache::new(2), None, false)
        .unwrap();
    let b = back
        .forward(&x, 0, &mut KvCache::new(2), None, false)
        .unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-5, "max logit difference {d}");
    let tok2 = lm.require_tokenizer().unwrap();
    assert_eq!(
        tok2.encode("Task: x", false).unwrap(),
        tok.encode("Task: x", false).unwrap()
    );
    assert!(tok2
        .eos_ids()
        .contains(&tok.token_to_id("<|im_end|>").unwrap()));
    assert!(lm.chat_template.is_some());
}

#[test]
fn embedded_model_is_small_and_loads_when_built_in() {
    if !embedded::available() {
        eprintln!("skipped: this build has no embedded model (assets/model/ absent)");
        assert!(embedded::load_spec("").is_err());
        return;
    }
    assert!(
        embedded::size_bytes() <= 10 * 1024 * 1024,
        "embedded model is {} bytes",
        embedded::size_bytes()
    );
    let lm = embedded::load_spec("embedded").unwrap();
    assert!(lm.tokenizer.is_some() && lm.chat_template.is_some());
}

#[test]
fn adapter_sft_trains_both_adapters_and_leaves_the_base_alone() {
    fn q_proj0(m: &Model) -> candle_core::Tensor {
        m.base_weights()
            .into_iter()
            .find(|(k, _)| k == "model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .1
    }
    use cahl_engine::model::LoraConfig;
    use cahl_engine::sft::{sft_adapters, AdapterSftConfig};
    use cahl_engine::train::{Agent, TrainConfig};
    let (tok, template, _, mut model) = tiny_setup();
    let lcfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    model.add_adapter("planner", &lcfg, 1).unwrap();
    model.add_adapter("executor", &lcfg, 2).unwrap();
    let base_before: Vec<f32> = q_proj0(&model).flatten_all().unwrap().to_vec1().unwrap();
    let snap = |m: &Model, name: &str| -> Vec<Vec<f32>> {
        m.adapter(name)
            .unwrap()
            .named_vars()
            .into_iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    };
    let (p0, e0) = (snap(&model, "planner"), snap(&model, "executor"));
    let agent = Agent {
        model,
        tok,
        template,
        model_name: "tiny".into(),
        remote: None,
    };
    let tasks = generate_tasks(Split::Train, 6, 4).unwrap();
    let held = generate_tasks(Split::Test, 2, 4).unwrap();
    let mut world = BuiltinWorld::new();
    let mut eval_cfg = TrainConfig::default();
    eval_cfg.rollout.planner.max_tokens = 8;
    eval_cfg.rollout.executor.max_tokens = 8;
    eval_cfg.rollout.max_subtasks = 1;
    let cfg = AdapterSftConfig {
        steps: 12,
        batch: 4,
        lr: 1e-2,
        warmup: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let report = sft_adapters(
        &agent,
        &tasks,
        &mut world,
        &held,
        &eval_cfg,
        &cfg,
        |name, p| seen.push((name.to_string(), p.step)),
    )
    .unwrap();
    assert_eq!(seen.len(), 24, "12 steps per adapter reported");
    assert_eq!(report.roles.len(), 2);
    for r in &report.roles {
        assert_eq!(r.steps_done, 12);
        assert!(r.examples > 0);
        assert!(
            r.final_loss < r.first_loss,
            "{}: loss {} -> {}",
            r.adapter,
            r.first_loss,
            r.final_loss
        );
    }
    assert_eq!(report.before.unwrap().tasks, 2);
    assert_eq!(report.after.unwrap().tasks, 2);
    // Both adapters moved; the base did not.
    assert_ne!(snap(&agent.model, "planner"), p0);
    assert_ne!(snap(&agent.model, "executor"), e0);
    let base_after: Vec<f32> = q_proj0(&agent.model)
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(base_before, base_after);
}

#[test]
fn role_weights_repeat_and_select_conversations() {
    use cahl_engine::sft::weight_roles;
    let (_, texts) = builtin_gold_texts(6, 2).unwrap();
    let count =
        |v: &[cahl_engine::sft::GoldText], r: Role| v.iter().filter(|g| g.role == r).count();
    let (p, e, f) = (
        count(&texts, Role::Planner),
        count(&texts, Role::Executor),
        count(&texts, Role::Flat),
    );
    assert!(p > 0 && e > 0 && f > 0);
    // empty: everything once
    assert_eq!(weight_roles(texts.clone(), &[]).len(), texts.len());
    let w = weight_roles(
        texts.clone(),
        &[Role::Planner, Role::Executor, Role::Planner, Role::Planner],
    );
    assert_eq!(count(&w, Role::Planner), 3 * p);
    assert_eq!(count(&w, Role::Executor), e);
    assert_eq!(count(&w, Role::Flat), 0, "unlisted roles are left out");
    assert_eq!(w.len(), 3 * p + e);
}

/// Micro-batches accumulate to the whole batch's token-mean loss and gradient.
#[test]
fn micro_batched_gradients_equal_the_whole_batch() {
    let (_, _, examples, mut model) = tiny_setup();
    let named = model.make_base_trainable().unwrap();
    let batch: Vec<&SftExample> = examples.iter().take(5).collect();
    let total: usize = batch.iter().map(|e| e.completion.len()).sum();
    let longest = batch
        .iter()
        .map(|e| e.prompt.len() + e.completion.len())
        .max()
        .unwrap();
    let chunks = micro_batches(&batch, 2 * longest + 1);
    assert!(chunks.len() > 1 && chunks.len() < 5, "{}", chunks.len());
    assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 5);
    // Each chunk is within the budget unless it is a single example.
    for c in &chunks {
        let len: usize = c.iter().map(|e| e.prompt.len() + e.completion.len()).sum();
        assert!(c.len() == 1 || len <= 2 * longest + 1);
    }
    let (whole, _) = sft_loss(&model, None, &batch, true).unwrap();
    let gw = whole.backward().unwrap();
    let mut sum = 0.0;
    let mut parts: Vec<candle_core::Tensor> = Vec::new();
    for c in chunks {
        let (l, n) = sft_loss(&model, None, c, true).unwrap();
        let share = n as f64 / total as f64;
        sum += l.to_scalar::<f32>().unwrap() as f64 * share;
        let g = (l * share).unwrap().backward().unwrap();
        let v = named[0].1.as_tensor();
        let gi = g.get(v).unwrap().clone();
        parts.push(gi);
    }
    let w = whole.to_scalar::<f32>().unwrap() as f64;
    assert!((w - sum).abs() < 1e-4 * w.abs().max(1.0), "{w} vs {sum}");
    let mut acc = parts[0].zeros_like().unwrap();
    for p in parts {
        acc = (acc + p).unwrap();
    }
    let want = gw.get(named[0].1.as_tensor()).unwrap();
    let diff = max_abs_diff(&acc, want);
    assert!(diff < 1e-4, "gradients differ by {diff}");
    assert_eq!(
        micro_batches(&batch, 0).len(),
        5,
        "every example is its own chunk"
    );
    assert_eq!(micro_batches(&batch, usize::MAX).len(), 1);
}

/// The sft loss scores completion tokens only, with the head run on those rows alone: the
/// same value and gradient as every position's log-prob masked to the completions.
#[test]
fn sft_loss_equals_the_masked_mean_of_all_position_logprobs() {
    use cahl_engine::grpo::completion_logprobs;
    let (_, _, examples, mut model) = tiny_setup();
    let named = model.make_base_trainable().unwrap();
    let batch: Vec<&SftExample> = examples.iter().skip(3).take(3).collect();
    let (loss, n) = sft_loss(&model, None, &batch, true).unwrap();
    assert_eq!(n, batch.iter().map(|e| e.completion.len()).sum::<usize>());
    // Reference: log-probs of every position after a one-token shared prefix.
    let full: Vec<Vec<u32>> = batch
        .iter()
        .map(|e| [e.prompt.as_slice(), e.completion.as_slice()].concat())
        .collect();
    let rests: Vec<&[u32]> = full.iter().map(|f| &f[1..]).collect();
    let (lp, mask) = completion_logprobs(&model, None, &full[0][..1], &rests, 1.0, true).unwrap();
    let (g, l) = lp.dims2().unwrap();
    let mut cm = vec![0f32; g * l];
    for (i, e) in batch.iter().enumerate() {
        for j in e.prompt.len() - 1..e.prompt.len() - 1 + e.completion.len() {
            cm[i * l + j] = 1.0;
        }
    }
    let cm = candle_core::Tensor::from_vec(cm, (g, l), &Device::Cpu).unwrap();
    let want = ((lp * (mask * cm).unwrap()).unwrap().sum_all().unwrap() / -(n as f64)).unwrap();
    let (a, b) = (
        loss.to_scalar::<f32>().unwrap(),
        want.to_scalar::<f32>().unwrap(),
    );
    assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    let (ga, gb) = (loss.backward().unwrap(), want.backward().unwrap());
    for (name, v) in named.iter().take(6) {
        let (x, y) = (
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        let d = max_abs_diff(x, y);
        assert!(d < 1e-5, "{name}: gradients differ by {d}");
    }
}

/// Largest absolute difference of two f32 tensors.
fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

//! Model-level tests on tiny random configs (no downloads).
use std::collections::HashMap;

use cahl_engine::backend::SampleRequest;
use cahl_engine::grpo::{
    completion_logprobs, group_advantages, grpo_loss, Advantages, GrpoBatch, GrpoConfig, LossAgg,
};
use cahl_engine::model::Prefix;
use cahl_engine::model::{LoraAdapter, LoraConfig, Model, ModelConfig};
use cahl_engine::optim::GradAccum;
use cahl_engine::sampling::{
    sample_group, sample_group_with, sample_many, Detok, RowDecoder, SamplingParams,
};
use candle_core::{DType, Device, Tensor, Var};

fn cfg_json(model_type: &str, tie: bool, extra: &str) -> ModelConfig {
    let text = format!(
        r#"{{"model_type": "{model_type}", "vocab_size": 61, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
        "tie_word_embeddings": {tie}{extra}}}"#
    );
    ModelConfig::from_json_str(&text, "test config").unwrap()
}

fn build(cfg: &ModelConfig, dtype: DType, seed: u64) -> Model {
    let w = Model::random_weights(cfg, seed).unwrap();
    Model::new(cfg, &w, dtype, &Device::Cpu).unwrap()
}

/// Give every LoRA B a deterministic non-zero value so gradients reach A as well.
fn randomize_b(ad: &LoraAdapter, seed: u64) {
    for (name, v) in ad.named_vars() {
        if name.ends_with("lora_B.weight") {
            let n = v.elem_count();
            let vals: Vec<f32> = (0..n)
                .map(|i| 0.3 * ((i as f32 + 1.0) * (seed as f32 + 0.37)).sin())
                .collect();
            let t = Tensor::from_vec(vals, v.dims(), &Device::Cpu)
                .unwrap()
                .to_dtype(v.dtype())
                .unwrap();
            v.set(&t).unwrap();
        }
    }
}

fn lora_all() -> LoraConfig {
    LoraConfig {
        r: 3,
        lora_alpha: 6.0,
        lora_dropout: 0.0,
        ..Default::default()
    }
}

const PROMPT: [u32; 5] = [3, 17, 42, 8, 11];

fn objective(model: &Model, comps: &[Vec<u32>]) -> Tensor {
    let refs: Vec<&[u32]> = comps.iter().map(|c| c.as_slice()).collect();
    let (lp, mask) =
        completion_logprobs(model, Some("planner"), &PROMPT, &refs, 0.9, true).unwrap();
    // A weighted sum of log-probs exercises every position.
    let (g, l) = lp.dims2().unwrap();
    let w: Vec<f64> = (0..g * l)
        .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.3 + 0.1)
        .collect();
    let w = Tensor::from_vec(w, (g, l), &Device::Cpu).unwrap();
    ((lp * mask).unwrap() * w).unwrap().sum_all().unwrap()
}

fn fd_check(cfg: &ModelConfig) {
    fd_check_with(cfg, usize::MAX);
}

/// [`fd_check`] with the blocked attention for sequences of at least `blocked_min_keys` keys.
fn fd_check_with(cfg: &ModelConfig, blocked_min_keys: usize) {
    let mut model = build(cfg, DType::F64, 1);
    model.set_blocked_attention_min_keys(blocked_min_keys);
    model.add_adapter("planner", &lora_all(), 7).unwrap();
    model.add_adapter("executor", &lora_all(), 8).unwrap();
    let ad = model.adapter("planner").unwrap();
    randomize_b(ad, 3);
    let comps = vec![vec![5u32, 9, 30, 2], vec![7u32, 1], vec![60u32, 4, 4]];
    let loss = objective(&model, &comps);
    let grads = loss.backward().unwrap();
    let named = ad.named_vars();
    assert_eq!(named.len(), cfg.num_hidden_layers * 7 * 2);
    let mut acc = GradAccum::new(named.iter().map(|(_, v)| (*v).clone()).collect());
    acc.add(&grads).unwrap();
    assert!(
        acc.missing().is_empty(),
        "trainable tensors without gradient: {:?}",
        acc.missing()
    );
    // The executor adapter is not active: it must get no gradient.
    for (_, v) in model.adapter("executor").unwrap().named_vars() {
        assert!(
            grads.get(v.as_tensor()).is_none(),
            "inactive adapter received a gradient"
        );
    }
    // Frozen base weights must not get gradients computed or stored.
    for t in model.base_tensors() {
        assert!(
            grads.get(t).is_none(),
            "a frozen base weight received a gradient"
        );
    }
    let eps = 1e-5;
    for (name, var) in &named {
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let norm_g: f64 = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm_g > 0.0, "{name}: zero gradient");
        let n = base.len();
        let picks: Vec<usize> = (0..4).map(|k| (k * 7919 + name.len() * 31) % n).collect();
        let (mut num_sq, mut diff_sq, mut an_sq) = (0.0, 0.0, 0.0);
        for &i in &picks {
            let mut plus = base.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = objective(&model, &comps).to_scalar::<f64>().unwrap();
            let mut minus = base.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            let lm = objective(&model, &comps).to_scalar::<f64>().unwrap();
            var.set(&Tensor::from_vec(base.clone(), var.dims(), &Device::Cpu).unwrap())
                .unwrap();
            let numeric = (lp - lm) / (2.0 * eps);
            num_sq += numeric * numeric;
            an_sq += g[i] * g[i];
            diff_sq += (numeric - g[i]).powi(2);
        }
        let rel = diff_sq.sqrt() / num_sq.sqrt().max(an_sq.sqrt()).max(1e-12);
        assert!(
            rel < 1e-5,
            "{name}: finite-difference relative error {rel:e}"
        );
    }
}

#[test]
fn lora_gradients_match_finite_differences_llama() {
    fd_check(&cfg_json("llama", true, ""));
}

#[test]
fn lora_gradients_match_finite_differences_qwen2_untied() {
    fd_check(&cfg_json("qwen2", false, ""));
}

#[test]
fn lora_gradients_match_finite_differences_interleaved_rope_with_bias() {
    fd_check(&cfg_json(
        "llama",
        true,
        r#", "attention_bias": true, "rope_interleaved": true"#,
    ));
}

#[test]
fn lora_gradients_match_finite_differences_with_blocked_attention() {
    fd_check_with(&cfg_json("qwen2", false, ""), 0);
}

/// The blocked attention and the matrix path give the same log-probs and LoRA gradients
/// through the whole model, also after a cached prefix (new positions at an offset).
#[test]
fn blocked_and_matrix_attention_give_the_same_logprobs_and_gradients() {
    use cahl_engine::grpo::completion_logprobs_with;
    use cahl_engine::model::prefix::{add_leaf_grads, Prefix};
    let cfg = cfg_json("llama", true, r#", "rope_interleaved": true"#);
    let prompt: Vec<u32> = (0..23).map(|i| (i * 11 + 5) % 61).collect();
    let comps = [vec![1u32, 2, 3, 9, 9, 4], vec![4u32, 5]];
    let refs: Vec<&[u32]> = comps.iter().map(|c| c.as_slice()).collect();
    let run = |min_keys: usize, prefix: bool| -> (Vec<f64>, Vec<Tensor>) {
        let mut model = build(&cfg, DType::F64, 3);
        model.set_blocked_attention_min_keys(min_keys);
        model.add_adapter("planner", &lora_all(), 9).unwrap();
        randomize_b(model.adapter("planner").unwrap(), 5);
        let vars = model.adapter("planner").unwrap().vars();
        let mut acc = GradAccum::new(vars);
        let (lp, mask, graph) = if prefix {
            let graph = Prefix::build(&model, Some("planner"), &prompt[..20], true).unwrap();
            let leaves = graph.detached().unwrap();
            let (lp, mask) = completion_logprobs_with(
                &model,
                Some("planner"),
                Some(&leaves),
                &prompt,
                &refs,
                1.0,
                true,
            )
            .unwrap();
            (lp, mask, Some((graph, leaves)))
        } else {
            let (lp, mask) =
                completion_logprobs(&model, Some("planner"), &prompt, &refs, 1.0, true).unwrap();
            (lp, mask, None)
        };
        let values = (&lp * &mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let g = (lp * mask).unwrap().sum_all().unwrap().backward().unwrap();
        acc.add(&g).unwrap();
        if let Some((graph, leaves)) = graph {
            let mut leaf_grads = Vec::new();
            add_leaf_grads(&mut leaf_grads, leaves.leaf_grads(&g)).unwrap();
            acc.add(&graph.backward_into(&leaf_grads).unwrap().unwrap())
                .unwrap();
        }
        let grads = acc.grads().iter().map(|g| g.clone().unwrap()).collect();
        (values, grads)
    };
    for prefix in [false, true] {
        let (v0, g0) = run(usize::MAX, prefix);
        let (v1, g1) = run(0, prefix);
        for (a, b) in v0.iter().zip(&v1) {
            assert!(
                (a - b).abs() < 1e-10,
                "log-prob {a} against {b} (prefix {prefix})"
            );
        }
        assert_eq!(g0.len(), g1.len());
        for (a, b) in g0.iter().zip(&g1) {
            let d = max_diff(a, b);
            assert!(d < 1e-10, "gradient differs by {d} (prefix {prefix})");
        }
    }
}

#[test]
fn kv_cache_decode_equals_full_forward() {
    let cfg = cfg_json("qwen2", false, "");
    let mut model = build(&cfg, DType::F32, 2);
    model.add_adapter("executor", &lora_all(), 1).unwrap();
    randomize_b(model.adapter("executor").unwrap(), 1);
    let ids: Vec<u32> = vec![1, 5, 9, 13, 2, 40, 33, 7];
    for adapter in [None, Some("executor")] {
        let full = model
            .forward(
                &model.ids_tensor(&ids, 1).unwrap(),
                0,
                &mut model.new_cache(),
                adapter,
                false,
            )
            .unwrap();
        let mut cache = model.new_cache();
        // Prefill 3, then one token at a time.
        let mut parts = vec![model
            .forward(
                &model.ids_tensor(&ids[..3], 1).unwrap(),
                0,
                &mut cache,
                adapter,
                false,
            )
            .unwrap()];
        for (p, &tok) in ids.iter().enumerate().skip(3) {
            parts.push(
                model
                    .forward(
                        &model.ids_tensor(&[tok], 1).unwrap(),
                        p,
                        &mut cache,
                        adapter,
                        false,
                    )
                    .unwrap(),
            );
        }
        let inc = Tensor::cat(&parts, 1).unwrap();
        let diff = max_diff(&full, &inc);
        assert!(
            diff < 1e-4,
            "cached decode differs from full forward by {diff}"
        );
        // The training path agrees with the inference path.
        let tr = model
            .forward(
                &model.ids_tensor(&ids, 1).unwrap(),
                0,
                &mut model.new_cache(),
                adapter,
                true,
            )
            .unwrap();
        let cached = Tensor::cat(&parts, 1).unwrap();
        let d2 = max_diff(&tr, &cached);
        assert!(
            d2 < 1e-4,
            "training path differs from inference path by {d2}"
        );
    }
}

#[test]
fn f16_stored_base_weights_compute_like_f32_on_the_rounded_weights() {
    let cfg = cfg_json("qwen2", false, "");
    let w = Model::random_weights(&cfg, 4).unwrap();
    // The matrices rounded to f16 and back; norms and biases untouched.
    let rounded: HashMap<String, Tensor> = w
        .iter()
        .map(|(k, v)| {
            let matrix = k.ends_with("proj.weight")
                || k.ends_with("embed_tokens.weight")
                || k == "lm_head.weight";
            let v = if matrix {
                v.to_dtype(DType::F16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let mut want = Model::new(&cfg, &rounded, DType::F32, &Device::Cpu).unwrap();
    let mut got = Model::new(&cfg, &w, DType::F32, &Device::Cpu).unwrap();
    got.store_base_weights(DType::F16).unwrap();
    assert_eq!(got.base_weight_dtype(), DType::F16);
    assert_eq!(got.dtype(), DType::F32);
    for m in [&mut want, &mut got] {
        m.add_adapter("executor", &lora_all(), 1).unwrap();
        randomize_b(m.adapter("executor").unwrap(), 1);
    }
    let ids: Vec<u32> = vec![1, 5, 9, 13, 2, 40, 33, 7];
    for adapter in [None, Some("executor")] {
        for train in [false, true] {
            let run = |m: &Model| {
                m.forward(
                    &m.ids_tensor(&ids, 1).unwrap(),
                    0,
                    &mut m.new_cache(),
                    adapter,
                    train,
                )
                .unwrap()
            };
            let d = max_diff(&run(&want), &run(&got));
            assert!(d < 1e-4, "full forward (train {train}) differs by {d}");
        }
        // Token by token: the small-m kernel reads the f16 weights directly.
        let step = |m: &Model| {
            let mut cache = m.new_cache();
            let parts: Vec<Tensor> = ids
                .iter()
                .enumerate()
                .map(|(p, &t)| {
                    m.forward(
                        &m.ids_tensor(&[t], 1).unwrap(),
                        p,
                        &mut cache,
                        adapter,
                        false,
                    )
                    .unwrap()
                })
                .collect();
            Tensor::cat(&parts, 1).unwrap()
        };
        let d = max_diff(&step(&want), &step(&got));
        assert!(d < 1e-4, "decode differs by {d}");
    }
}

struct ToyDetok;
impl Detok for ToyDetok {
    fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    }
    fn is_eos(&self, id: u32) -> bool {
        id == 0
    }
}

#[test]
fn batched_group_sampling_equals_one_by_one() {
    let cfg = cfg_json("llama", true, "");
    let mut model = build(&cfg, DType::F32, 3);
    model.add_adapter("planner", &lora_all(), 1).unwrap();
    randomize_b(model.adapter("planner").unwrap(), 2);
    let params = SamplingParams {
        temperature: 1.3,
        top_p: 0.95,
        top_k: 40,
        max_tokens: 12,
        stop: vec!["q".into()],
        seed: 99,
        ..Default::default()
    };
    let group = sample_group(&model, Some("planner"), &PROMPT, 5, 0, &params, &ToyDetok).unwrap();
    assert_eq!(group.len(), 5);
    for (i, c) in group.iter().enumerate() {
        let one = sample_group(
            &model,
            Some("planner"),
            &PROMPT,
            1,
            i as u64,
            &params,
            &ToyDetok,
        )
        .unwrap();
        assert_eq!(
            one[0].tokens, c.tokens,
            "row {i} differs between batched and single sampling"
        );
        assert_eq!(one[0].text, c.text);
        for (a, b) in one[0].logprobs.iter().zip(&c.logprobs) {
            assert!((a - b).abs() < 1e-4);
        }
    }
    // Replays exactly.
    let again = sample_group(&model, Some("planner"), &PROMPT, 5, 0, &params, &ToyDetok).unwrap();
    assert_eq!(again, group);
    // Different rows differ (the streams are independent).
    assert!(group.iter().any(|c| c.tokens != group[0].tokens));
    // Sampling log-probs equal teacher-forced log-probs at the same temperature.
    let refs: Vec<&[u32]> = group.iter().map(|c| c.tokens.as_slice()).collect();
    let (lp, mask) =
        completion_logprobs(&model, Some("planner"), &PROMPT, &refs, 1.3, false).unwrap();
    let lp = lp.to_vec2::<f32>().unwrap();
    let mask = mask.to_vec2::<f32>().unwrap();
    for (g, c) in group.iter().enumerate() {
        for (j, &x) in c.logprobs.iter().enumerate() {
            assert_eq!(mask[g][j], 1.0);
            assert!(
                (lp[g][j] - x).abs() < 1e-3,
                "logprob mismatch {} vs {}",
                lp[g][j],
                x
            );
        }
    }
}

#[test]
fn groups_of_different_prompt_lengths_decoded_together_equal_each_alone() {
    // f64, so batched and single products round alike and sampled tokens must agree exactly.
    for (ty, extra) in [("llama", ""), ("qwen2", r#", "rope_interleaved": true"#)] {
        let cfg = cfg_json(ty, true, extra);
        let mut model = build(&cfg, DType::F64, 5);
        model.add_adapter("executor", &lora_all(), 1).unwrap();
        randomize_b(model.adapter("executor").unwrap(), 4);
        model.add_adapter("planner", &lora_all(), 2).unwrap();
        randomize_b(model.adapter("planner").unwrap(), 6);
        let shared: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 61).collect();
        let prefix = Prefix::build(&model, Some("executor"), &shared, false).unwrap();
        let long: Vec<u32> = shared
            .iter()
            .copied()
            .chain([9, 30, 12, 5, 44, 2])
            .collect();
        let mid: Vec<u32> = shared.iter().copied().chain([8]).collect();
        let short: Vec<u32> = vec![3, 17, 42];
        let p = |seed: u64, t: f64, max: usize, stop: &[&str]| SamplingParams {
            temperature: t,
            top_p: 0.9,
            max_tokens: max,
            stop: stop.iter().map(|s| s.to_string()).collect(),
            seed,
            ..Default::default()
        };
        let params = [
            p(1, 1.2, 14, &[]),
            p(2, 0.8, 9, &["k"]),
            p(3, 1.0, 20, &[]),
            p(4, 1.5, 6, &[]),
            SamplingParams {
                greedy: true,
                max_tokens: 11,
                ..Default::default()
            },
        ];
        let reqs = [
            (
                Some("executor"),
                Some(&prefix),
                long.as_slice(),
                3,
                0,
                &params[0],
            ),
            (Some("executor"), None, short.as_slice(), 2, 5, &params[1]),
            (Some("planner"), None, mid.as_slice(), 2, 0, &params[2]),
            (
                Some("executor"),
                Some(&prefix),
                mid.as_slice(),
                4,
                1,
                &params[3],
            ),
            (None, None, long.as_slice(), 1, 0, &params[4]),
            (Some("executor"), None, short.as_slice(), 0, 0, &params[0]),
        ];
        let batch: Vec<SampleRequest> = reqs
            .iter()
            .map(
                |&(adapter, prefix, prompt, g, first_stream, params)| SampleRequest {
                    adapter,
                    prefix,
                    prompt,
                    g,
                    first_stream,
                    params,
                },
            )
            .collect();
        let together = sample_many(&model, &batch, &ToyDetok).unwrap();
        assert_eq!(together.len(), reqs.len());
        let mut lengths = std::collections::BTreeSet::new();
        for (j, &(adapter, prefix, prompt, g, first_stream, params)) in reqs.iter().enumerate() {
            let alone = sample_group_with(
                &model,
                adapter,
                prefix,
                prompt,
                g,
                first_stream,
                params,
                &ToyDetok,
            )
            .unwrap();
            assert_eq!(together[j].len(), g, "{ty}: request {j}");
            for (i, (a, b)) in alone.iter().zip(&together[j]).enumerate() {
                assert_eq!(a.tokens, b.tokens, "{ty}: request {j} row {i}");
                assert_eq!(a.text, b.text);
                assert_eq!(a.finish, b.finish, "{ty}: request {j} row {i}");
                for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                    assert!(
                        (x - y).abs() < 1e-6,
                        "{ty}: request {j} row {i}: {x} vs {y}"
                    );
                }
                lengths.insert(b.tokens.len());
            }
        }
        // Rows stopped at different lengths (the batch shrank as they finished).
        assert!(lengths.len() > 2, "{ty}: lengths {lengths:?}");
    }
}

#[test]
fn requests_joining_a_running_decode_equal_each_alone() {
    // Continuous batching: a short prompt starts, a longer one joins after 3 steps (the
    // running rows get more padding), a short one after 6, and one of zero tokens; each
    // request comes back when its rows stop, with what sampling it alone gives (f64).
    let cfg = cfg_json("llama", true, "");
    let mut model = build(&cfg, DType::F64, 9);
    model.add_adapter("executor", &lora_all(), 3).unwrap();
    randomize_b(model.adapter("executor").unwrap(), 5);
    let prompts: Vec<Vec<u32>> = vec![
        vec![4, 9, 21],
        (0..30).map(|i| (i * 5 + 2) % 61).collect(),
        vec![7, 7, 8, 30, 2],
        vec![1, 2],
    ];
    let params: Vec<SamplingParams> = (0..4)
        .map(|i| SamplingParams {
            temperature: 1.2,
            max_tokens: if i == 3 { 0 } else { 10 + 3 * i },
            seed: 40 + i as u64,
            ..Default::default()
        })
        .collect();
    let req = |i: usize| SampleRequest {
        adapter: Some("executor"),
        prefix: None,
        prompt: &prompts[i],
        g: 2,
        first_stream: i as u64,
        params: &params[i],
    };
    let reqs: Vec<SampleRequest> = (0..4).map(req).collect();
    let mut dec = RowDecoder::new(&model, Some("executor"), &ToyDetok);
    let mut got: std::collections::BTreeMap<u64, (usize, Vec<_>)> = Default::default();
    let mut step = 0;
    dec.admit(&[(0, &reqs[0])]).unwrap();
    while !dec.is_idle() || step < 7 {
        if step == 3 {
            dec.admit(&[(1, &reqs[1])]).unwrap();
        }
        if step == 6 {
            dec.admit(&[(2, &reqs[2]), (3, &reqs[3])]).unwrap();
        }
        if !dec.is_idle() {
            for (id, comps) in dec.step().unwrap() {
                got.insert(id, (step, comps));
            }
        }
        step += 1;
    }
    assert_eq!(got.len(), 4);
    assert_eq!(got[&3].0, 6, "a request of no tokens comes back at once");
    assert!(
        got[&0].0 < got[&1].0,
        "the first request comes back before the longer one"
    );
    for (id, (_, comps)) in &got {
        let i = *id as usize;
        let alone = sample_group_with(
            &model,
            Some("executor"),
            None,
            &prompts[i],
            2,
            i as u64,
            &params[i],
            &ToyDetok,
        )
        .unwrap();
        assert_eq!(alone.len(), comps.len(), "request {i}");
        for (a, b) in alone.iter().zip(comps) {
            assert_eq!(
                (&a.tokens, &a.text, a.finish),
                (&b.tokens, &b.text, b.finish),
                "request {i}"
            );
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() < 1e-6, "request {i}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn greedy_sampling_is_argmax_and_stops() {
    let cfg = cfg_json("llama", true, "");
    let model = build(&cfg, DType::F32, 4);
    let p = SamplingParams {
        greedy: true,
        max_tokens: 6,
        ..Default::default()
    };
    let out = sample_group(&model, None, &PROMPT, 2, 0, &p, &ToyDetok).unwrap();
    assert_eq!(out[0].tokens, out[1].tokens, "greedy rows must agree");
    assert!(out[0].tokens.len() <= 6);
    // First token is the argmax of the prompt's last logits.
    let logits = model
        .forward_last(
            &model.ids_tensor(&PROMPT, 1).unwrap(),
            0,
            &mut model.new_cache(),
            None,
        )
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let argmax = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32;
    assert_eq!(out[0].tokens[0], argmax);
}

/// Largest absolute difference between two tensors of the same shape.
/// Largest absolute difference, in f64 whatever the tensors' dtype.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Our model's last-position logits for `ids` with the given weights, and the ids as a (1, t) tensor.
fn our_last_logits(
    cfg: &ModelConfig,
    w: &HashMap<String, Tensor>,
    ids: &[u32],
) -> (Tensor, Tensor) {
    let ours = Model::new(cfg, w, DType::F32, &Device::Cpu).unwrap();
    let mine = ours
        .forward_last(
            &ours.ids_tensor(ids, 1).unwrap(),
            0,
            &mut ours.new_cache(),
            None,
        )
        .unwrap();
    (
        mine,
        Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    )
}

fn parity_weights(cfg: &ModelConfig) -> HashMap<String, Tensor> {
    Model::random_weights(cfg, 11).unwrap()
}

#[test]
fn logits_match_candle_transformers_llama() {
    let cfg = cfg_json("llama", false, "");
    let w = parity_weights(&cfg);
    let (mine, ids_t) = our_last_logits(&cfg, &w, &[4, 8, 15, 16, 23, 42]);
    let lc: candle_transformers::models::llama::LlamaConfig =
        serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
    let tc = lc.into_config(false);
    let vb = candle_nn::VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
    let theirs_model = candle_transformers::models::llama::Llama::load(vb, &tc).unwrap();
    let mut cache =
        candle_transformers::models::llama::Cache::new(true, DType::F32, &tc, &Device::Cpu)
            .unwrap();
    let theirs = theirs_model.forward(&ids_t, 0, &mut cache).unwrap();
    let d = max_diff(&mine, &theirs);
    assert!(
        d < 1e-4,
        "llama logits differ from candle-transformers by {d}"
    );
}

#[test]
fn logits_match_candle_transformers_qwen2() {
    let cfg = cfg_json("qwen2", true, "");
    let w = parity_weights(&cfg);
    let (mine, ids_t) = our_last_logits(&cfg, &w, &[4, 8, 15, 16, 23, 42]);
    let mut j = serde_json::to_value(&cfg).unwrap();
    j["sliding_window"] = 4096.into();
    j["max_window_layers"] = 2.into();
    j["use_sliding_window"] = false.into();
    let qc: candle_transformers::models::qwen2::Config = serde_json::from_value(j).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(w, DType::F32, &Device::Cpu);
    let mut theirs_model =
        candle_transformers::models::qwen2::ModelForCausalLM::new(&qc, vb).unwrap();
    let theirs = theirs_model.forward(&ids_t, 0).unwrap().squeeze(1).unwrap();
    let d = max_diff(&mine, &theirs);
    assert!(
        d < 1e-4,
        "qwen2 logits differ from candle-transformers by {d}"
    );
}

#[test]
fn advantages_match_hand_computed() {
    // rewards 1, 2, 3, 6: mean 3, sample std sqrt((4+1+0+9)/3) = 2.1602469
    let a = group_advantages(&[1.0, 2.0, 3.0, 6.0], true);
    let s = (14.0f64 / 3.0).sqrt() + 1e-4;
    let want = [-2.0 / s, -1.0 / s, 0.0, 3.0 / s];
    for (x, y) in a.iter().zip(want) {
        assert!((x - y).abs() < 1e-12);
    }
    assert_eq!(
        group_advantages(&[1.0, 2.0, 3.0, 6.0], false),
        vec![-2.0, -1.0, 0.0, 3.0]
    );
    assert_eq!(group_advantages(&[5.0, 5.0], true), vec![0.0, 0.0]);
    assert_eq!(group_advantages(&[4.0], true), vec![0.0]);
}

#[test]
fn grpo_loss_matches_hand_computed() {
    let dev = Device::Cpu;
    // Two sequences, 3 positions, second has 2 real tokens.
    let new = [[-1.0f64, -0.5, -2.0], [-0.2, -1.5, -9.0]];
    let old = [[-1.0f64, -0.9, -1.0], [-0.1, -1.5, 0.0]];
    let rf = [[-1.2f64, -0.5, -2.5], [-0.2, -1.0, 0.0]];
    let mask = [[1.0f64, 1.0, 1.0], [1.0, 1.0, 0.0]];
    let adv = [1.5f64, -0.5];
    let t = |x: &[[f64; 3]; 2]| Tensor::new(x, &dev).unwrap();
    let var = Var::from_tensor(&t(&new)).unwrap();
    let cfg = GrpoConfig {
        beta: 0.1,
        epsilon_low: 0.2,
        epsilon_high: 0.3,
        ..Default::default()
    };
    let (o, r, m) = (t(&old), t(&rf), t(&mask));
    // Hand computation.
    let mut per = vec![vec![0.0; 3]; 2];
    let mut kl_sum = 0.0;
    let mut clipped = 0.0;
    for i in 0..2 {
        for j in 0..3 {
            if mask[i][j] == 0.0 {
                continue;
            }
            let ratio = (new[i][j] - old[i][j]).exp();
            let c = ratio.clamp(0.8, 1.3);
            let (s1, s2) = (ratio * adv[i], c * adv[i]);
            if s2 < s1 {
                clipped += 1.0;
            }
            let d = rf[i][j] - new[i][j];
            let kl = d.exp() - d - 1.0;
            kl_sum += kl;
            per[i][j] = -s1.min(s2) + 0.1 * kl;
        }
    }
    let token_mean = per.iter().flatten().sum::<f64>() / 5.0;
    let seq_mean = (per[0].iter().sum::<f64>() / 3.0 + per[1].iter().sum::<f64>() / 2.0) / 2.0;
    for (agg, want, norm) in [
        (LossAgg::TokenMean, token_mean, 5.0),
        (LossAgg::SequenceMean, seq_mean, 2.0),
    ] {
        let cfg = GrpoConfig {
            loss_agg: agg,
            ..cfg.clone()
        };
        let b = GrpoBatch {
            logprobs: var.as_tensor(),
            old_logprobs: &o,
            ref_logprobs: Some(&r),
            advantages: Advantages::PerSequence(&adv),
            mask: &m,
        };
        let out = grpo_loss(&cfg, &b, norm).unwrap();
        let got = out.loss.to_scalar::<f64>().unwrap();
        assert!((got - want).abs() < 1e-12, "{agg:?}: {got} vs {want}");
        assert!((out.kl_sum - kl_sum).abs() < 1e-12);
        assert_eq!(out.clipped_tokens, clipped);
        assert_eq!(out.tokens, 5.0);
        // Clipped tokens get no policy gradient; padding gets none at all.
        let g = out.loss.backward().unwrap();
        let gv = g.get(var.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(gv[1][2], 0.0);
    }
    assert!(clipped >= 1.0, "the case must exercise clipping");
}

/// Per-token advantages: a `(G, L)` tensor whose rows are constant gives exactly the loss of
/// per-sequence advantages, and a token's gradient follows its own advantage (a token with a
/// negative advantage in a sequence whose others are positive is pushed down).
#[test]
fn per_token_advantages_reduce_to_per_sequence_and_act_per_token() {
    let dev = Device::Cpu;
    let new = [[-1.0f64, -0.5, -2.0], [-0.2, -1.5, -9.0]];
    let old = [[-1.0f64, -0.5, -2.0], [-0.2, -1.5, -9.0]];
    let mask = [[1.0f64, 1.0, 1.0], [1.0, 1.0, 0.0]];
    let t = |x: &[[f64; 3]; 2]| Tensor::new(x, &dev).unwrap();
    let cfg = GrpoConfig {
        beta: 0.0,
        ..Default::default()
    };
    let (o, m) = (t(&old), t(&mask));
    let loss = |adv: Advantages| {
        let var = Var::from_tensor(&t(&new)).unwrap();
        let b = GrpoBatch {
            logprobs: var.as_tensor(),
            old_logprobs: &o,
            ref_logprobs: None,
            advantages: adv,
            mask: &m,
        };
        let out = grpo_loss(&cfg, &b, 5.0).unwrap();
        let g = out.loss.backward().unwrap();
        let gv = g.get(var.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        (out.loss.to_scalar::<f64>().unwrap(), gv)
    };
    let seq = [1.5f64, -0.5];
    let rows = t(&[[1.5, 1.5, 1.5], [-0.5, -0.5, -0.5]]);
    let (l1, g1) = loss(Advantages::PerSequence(&seq));
    let (l2, g2) = loss(Advantages::PerToken(&rows));
    assert!((l1 - l2).abs() < 1e-12, "{l1} vs {l2}");
    assert_eq!(g1, g2);
    // At ratio 1 the token-mean loss is -sum(A * ratio) / 5, so d loss / d logp = -A / 5 on
    // real tokens and 0 on padding.
    let mixed = t(&[[2.0, -1.0, 0.0], [0.5, -3.0, 7.0]]);
    let (l3, g3) = loss(Advantages::PerToken(&mixed));
    assert!(
        (l3 - (-(2.0 - 1.0 + 0.0 + 0.5 - 3.0) / 5.0)).abs() < 1e-12,
        "{l3}"
    );
    let want = [[-0.4, 0.2, 0.0], [-0.1, 0.6, 0.0]];
    for i in 0..2 {
        for j in 0..3 {
            assert!((g3[i][j] - want[i][j]).abs() < 1e-12, "{g3:?}");
        }
    }
    // A shape that does not match the batch is refused.
    let wrong = Tensor::new(&[[1.0f64, 2.0]], &dev).unwrap();
    let var = Var::from_tensor(&t(&new)).unwrap();
    let b = GrpoBatch {
        logprobs: var.as_tensor(),
        old_logprobs: &o,
        ref_logprobs: None,
        advantages: Advantages::PerToken(&wrong),
        mask: &m,
    };
    assert!(grpo_loss(&cfg, &b, 5.0).is_err());
}

/// An adapter holding a NaN is refused, naming the tensor, and nothing is written.
#[test]
fn a_non_finite_adapter_is_never_saved() {
    let cfg = cfg_json("qwen2", true, "");
    let mut model = build(&cfg, DType::F32, 5);
    model.add_adapter("planner", &lora_all(), 1).unwrap();
    let ad = model.adapter("planner").unwrap();
    let (name, var) = ad.named_vars().into_iter().next().unwrap();
    let mut vals = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    vals[0] = f32::NAN;
    var.set(&Tensor::from_vec(vals, var.dims(), &Device::Cpu).unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = ad.save_peft(dir.path(), "tiny").unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("non-finite"), "{err}");
    assert!(!dir.path().join("adapter_model.safetensors").exists());
    assert!(!dir.path().join("adapter_config.json").exists());
}

#[test]
fn peft_save_load_round_trip() {
    let cfg = cfg_json("qwen2", true, "");
    let mut model = build(&cfg, DType::F32, 5);
    let lc = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.05,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    };
    model.add_adapter("planner", &lc, 1).unwrap();
    randomize_b(model.adapter("planner").unwrap(), 9);
    let dir = tempfile::tempdir().unwrap();
    model
        .adapter("planner")
        .unwrap()
        .save_peft(dir.path(), "tiny")
        .unwrap();
    let cfgj: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfgj["peft_type"], "LORA");
    assert_eq!(cfgj["r"], 4);
    let st =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(st.contains_key("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    assert!(st.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    assert_eq!(st.len(), 2 * 3 * 2);
    let loaded =
        LoraAdapter::load_peft("copy", dir.path(), &cfg, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, lc);
    let ids = model.ids_tensor(&PROMPT, 1).unwrap();
    let a = model
        .forward(&ids, 0, &mut model.new_cache(), Some("planner"), false)
        .unwrap();
    model.insert_adapter(loaded);
    let b = model
        .forward(&ids, 0, &mut model.new_cache(), Some("copy"), false)
        .unwrap();
    let base = model
        .forward(&ids, 0, &mut model.new_cache(), None, false)
        .unwrap();
    let d = max_diff(&a.clone(), &b);
    assert_eq!(d, 0.0);
    let d0 = max_diff(&a, &base);
    assert!(d0 > 1e-4, "adapter must change the output");
    // Wrong base model: clear error naming the file.
    let other = cfg_json("qwen2", true, "").clone();
    let mut bigger = other.clone();
    bigger.hidden_size = 64;
    let err = LoraAdapter::load_peft("x", dir.path(), &bigger, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("adapter_model.safetensors") && err.contains("shape"),
        "{err}"
    );
}

/// The whole policy-gradient loop learns: sampling with the adapter, group advantages, the
/// clipped GRPO loss with KL, backward and AdamW on the adapter raise a verifiable reward (here:
/// the fraction of generated tokens from a fixed set of 8 of the 61 ids) well above its start.
/// A sign error anywhere (advantages, ratio, old log-probs, optimizer) makes it fall instead.
#[test]
fn grpo_loop_raises_a_verifiable_reward() {
    struct NoText;
    impl Detok for NoText {
        fn decode(&self, _: &[u32]) -> String {
            String::new()
        }
        fn is_eos(&self, _: u32) -> bool {
            false
        }
    }
    let cfg = cfg_json("llama", true, "");
    // Random init gives near-uniform logits that no hidden state can move far (the tied head's
    // rows are tiny); scale the embeddings so the policy has room to change.
    let mut w = Model::random_weights(&cfg, 3).unwrap();
    let e = w.get("model.embed_tokens.weight").unwrap().clone();
    w.insert("model.embed_tokens.weight".into(), (e * 6.0).unwrap());
    let mut model = Model::new(&cfg, &w, DType::F32, &Device::Cpu).unwrap();
    let lcfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    model.add_adapter("policy", &lcfg, 5).unwrap();
    let named: Vec<(String, Var)> = model
        .adapter("policy")
        .unwrap()
        .named_vars()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let mut opt = cahl_engine::optim::AdamW::new(
        named,
        cahl_engine::optim::AdamWConfig {
            lr: 5e-3,
            ..Default::default()
        },
    )
    .unwrap();
    let gcfg = GrpoConfig::default();
    let reward =
        |toks: &[u32]| toks.iter().filter(|&&t| t >= 40).count() as f64 / toks.len() as f64;
    let prompt = [1u32, 5, 9, 2];
    let mut means = Vec::new();
    for step in 0..40u64 {
        let params = SamplingParams {
            max_tokens: 6,
            seed: 1000 + step,
            ..Default::default()
        };
        let group = sample_group(&model, Some("policy"), &prompt, 8, 0, &params, &NoText).unwrap();
        let rewards: Vec<f64> = group.iter().map(|c| reward(&c.tokens)).collect();
        means.push(rewards.iter().sum::<f64>() / rewards.len() as f64);
        let adv = group_advantages(&rewards, true);
        let comps: Vec<&[u32]> = group.iter().map(|c| c.tokens.as_slice()).collect();
        let old: Vec<f32> = group.iter().flat_map(|c| c.logprobs.clone()).collect();
        let (lp, mask) =
            completion_logprobs(&model, Some("policy"), &prompt, &comps, 1.0, true).unwrap();
        let old = Tensor::from_vec(old, (8, 6), &Device::Cpu).unwrap();
        let (reference, _) =
            completion_logprobs(&model, None, &prompt, &comps, 1.0, false).unwrap();
        let batch = GrpoBatch {
            logprobs: &lp,
            old_logprobs: &old,
            ref_logprobs: Some(&reference),
            advantages: Advantages::PerSequence(&adv),
            mask: &mask,
        };
        let out = grpo_loss(&gcfg, &batch, 48.0).unwrap();
        let grads = out.loss.backward().unwrap();
        let mut acc = GradAccum::new(vars.clone());
        acc.add(&grads).unwrap();
        opt.step(acc.grads()).unwrap();
    }
    let first: f64 = means[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = means[35..].iter().sum::<f64>() / 5.0;
    assert!(
        last > first + 0.3 && last > 0.6,
        "mean reward {first:.3} (first 5 steps) -> {last:.3} (last 5): {means:?}"
    );
}

/// The update's shared-prefix path (prefix once with a graph, micro-batches stop at detached
/// leaves, one backward through the prefix seeded with the summed leaf gradients) gives the
/// same adapter gradient as recomputing the whole prompt for every micro-batch.
#[test]
fn shared_prefix_gradients_equal_full_recomputation() {
    use cahl_engine::grpo::completion_logprobs_with;
    use cahl_engine::model::prefix::{add_leaf_grads, Prefix, MIN_PREFIX};
    let cfg = cfg_json("llama", true, "");
    let mut model = build(&cfg, DType::F64, 2);
    model.add_adapter("planner", &lora_all(), 9).unwrap();
    randomize_b(model.adapter("planner").unwrap(), 4);
    let vars = model.adapter("planner").unwrap().vars();
    // Two groups whose prompts share 20 tokens, then differ (and one shares only part).
    let shared: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 61).collect();
    let mut p1 = shared.clone();
    p1.extend([5, 9, 13]);
    let mut p2 = shared[..18].to_vec();
    p2.extend([40, 41, 42, 43]);
    let groups: Vec<(Vec<u32>, Vec<Vec<u32>>)> = vec![
        (p1, vec![vec![1, 2, 3], vec![4, 5]]),
        (p2, vec![vec![6, 7, 8, 9]]),
    ];
    let loss_of = |lp: Tensor, mask: Tensor| -> Tensor {
        let (g, l) = lp.dims2().unwrap();
        let w: Vec<f64> = (0..g * l).map(|i| 0.2 + (i % 3) as f64 * 0.35).collect();
        let w = Tensor::from_vec(w, (g, l), &Device::Cpu).unwrap();
        ((lp * mask).unwrap() * w).unwrap().sum_all().unwrap()
    };
    // Reference: every group recomputes its whole prompt.
    let mut full = GradAccum::new(vars.clone());
    for (p, comps) in &groups {
        let refs: Vec<&[u32]> = comps.iter().map(|c| c.as_slice()).collect();
        let (lp, mask) = completion_logprobs(&model, Some("planner"), p, &refs, 1.0, true).unwrap();
        full.add(&loss_of(lp, mask).backward().unwrap()).unwrap();
    }
    // Shared prefix.
    assert!(shared.len() >= MIN_PREFIX);
    let graph = Prefix::build(&model, Some("planner"), &shared, true).unwrap();
    let leaves = graph.detached().unwrap();
    let mut acc = GradAccum::new(vars.clone());
    let mut leaf_grads = Vec::new();
    for (p, comps) in &groups {
        assert!(leaves.reusable_len(p).is_some());
        let refs: Vec<&[u32]> = comps.iter().map(|c| c.as_slice()).collect();
        let (lp, mask) =
            completion_logprobs_with(&model, Some("planner"), Some(&leaves), p, &refs, 1.0, true)
                .unwrap();
        let g = loss_of(lp, mask).backward().unwrap();
        acc.add(&g).unwrap();
        add_leaf_grads(&mut leaf_grads, leaves.leaf_grads(&g)).unwrap();
    }
    let through = graph
        .backward_into(&leaf_grads)
        .unwrap()
        .expect("prefix has a graph");
    acc.add(&through).unwrap();
    let mut checked = 0;
    for (a, b) in full.grads().iter().zip(acc.grads()) {
        let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
        let scale = a
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(scale > 0.0);
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            d <= 1e-9 * scale.max(1.0),
            "gradient differs by {d} (scale {scale})"
        );
        checked += 1;
    }
    assert_eq!(checked, vars.len());
}

/// Sampling with a cached prefix reproduces sampling from the full prompt.
#[test]
fn prefix_cached_sampling_equals_full_prefill() {
    use cahl_engine::model::prefix::Prefix;
    use cahl_engine::sampling::sample_group_with;
    let cfg = cfg_json("qwen2", false, "");
    let mut model = build(&cfg, DType::F32, 3);
    model.add_adapter("planner", &lora_all(), 5).unwrap();
    randomize_b(model.adapter("planner").unwrap(), 2);
    let prefix_ids: Vec<u32> = (0..24).map(|i| (i * 5 + 1) % 61).collect();
    let mut prompt = prefix_ids[..22].to_vec();
    prompt.extend([7, 8, 9]);
    let prefix = Prefix::build(&model, Some("planner"), &prefix_ids, false).unwrap();
    assert_eq!(prefix.reusable_len(&prompt), Some(22));
    let params = SamplingParams {
        max_tokens: 12,
        seed: 11,
        ..Default::default()
    };
    let full = sample_group(&model, Some("planner"), &prompt, 3, 0, &params, &ToyDetok).unwrap();
    let with_prefix = || {
        sample_group_with(
            &model,
            Some("planner"),
            Some(&prefix),
            &prompt,
            3,
            0,
            &params,
            &ToyDetok,
        )
        .unwrap()
    };
    let cached = with_prefix();
    for (a, b) in full.iter().zip(&cached) {
        assert_eq!(a.tokens, b.tokens);
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
    // The prefix itself is untouched by the sampling that reused it.
    assert_eq!(cached, with_prefix());
}

//! Builders for tiny model files used by the `load_*` tests (no downloads).
#![allow(dead_code)]
use std::collections::HashMap;
use std::path::Path;

use cahl_engine::load::gguf::permute_qk_llama_cpp;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

/// GPT-2's byte -> printable char table.
pub fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut out = vec!['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        if printable.contains(&b) {
            out[b as usize] = char::from_u32(b).unwrap();
        } else {
            out[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    out
}

pub const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const MERGES: [&str; 9] = [
    "h e", "Ġ t", "Ġt he", "l l", "e ll", "o r", "Ġ w", "Ġw or", "l d",
];

/// Tiny byte-level BPE vocabulary: 3 specials, 256 bytes, one token per merge.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>) {
    let mut toks: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3; SPECIALS.len()];
    for c in byte_chars() {
        toks.push(c.to_string());
        types.push(1);
    }
    for m in MERGES {
        toks.push(m.replace(' ', ""));
        types.push(1);
    }
    (toks, types)
}

pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub struct Tiny {
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
}

pub fn tiny() -> Tiny {
    Tiny {
        hidden: 256,
        inter: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: tiny_vocab().0.len(),
    }
}

pub fn rand_tensor(rng: &mut rand_chacha::ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Metadata, GGUF tensors and the HF-layout f32 originals of a tiny model.
pub struct GgufParts {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<(String, QTensor)>,
    /// HF name -> original f32 tensor (HF layout) and the GGUF type it was stored as.
    pub originals: HashMap<String, (Tensor, GgmlDType)>,
}

impl GgufParts {
    pub fn write(&self, path: &Path) {
        let mut f = std::fs::File::create(path).unwrap();
        let md: Vec<(&str, &Value)> = self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = self.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut f, &md, &ts).unwrap();
    }
    pub fn set_md(&mut self, key: &str, v: Value) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), v));
    }
    pub fn remove_tensor(&mut self, name: &str) {
        self.tensors.retain(|(k, _)| k != name);
    }
}

/// A tiny llama (untied, Q/K permuted the llama.cpp way, mixed quant types) or qwen2 (tied,
/// q/k/v biases, not permuted) GGUF.
pub fn tiny_gguf(arch: &str) -> GgufParts {
    let t = tiny();
    let llama = arch == "llama";
    let hd = t.hidden / t.heads;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (toks, types) = tiny_vocab();
    let a = |k: &str| format!("{arch}.{k}");
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (a("block_count"), Value::U32(t.layers as u32)),
        (a("embedding_length"), Value::U32(t.hidden as u32)),
        (a("feed_forward_length"), Value::U32(t.inter as u32)),
        (a("attention.head_count"), Value::U32(t.heads as u32)),
        (a("attention.head_count_kv"), Value::U32(t.kv_heads as u32)),
        (a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (a("rope.freq_base"), Value::F32(100_000.0)),
        (a("context_length"), Value::U32(2048)),
        (a("rope.dimension_count"), Value::U32(hd as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(toks.iter().map(|s| Value::String(s.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|&x| Value::I32(x)).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(
                MERGES
                    .iter()
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML.into()),
        ),
    ];
    use GgmlDType::*;
    // (gguf name, hf name, shape, type per layer)
    let mut specs: Vec<(String, String, Vec<usize>, GgmlDType)> = vec![(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![t.vocab, t.hidden],
        Q8_0,
    )];
    let layer_types = [
        [F32, F32, Q4_0, Q4_1, Q4K, Q6K, F16],
        [Q4K, Q6K, Q8_0, F16, Q4_0, Q4_1, Q8_0],
    ];
    for l in 0..t.layers {
        let ty = layer_types[l % 2];
        let p = format!("model.layers.{l}");
        let g = format!("blk.{l}");
        let q = t.heads * hd;
        let kv = t.kv_heads * hd;
        specs.push((
            format!("{g}.attn_q.weight"),
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, t.hidden],
            ty[0],
        ));
        specs.push((
            format!("{g}.attn_k.weight"),
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, t.hidden],
            ty[1],
        ));
        specs.push((
            format!("{g}.attn_v.weight"),
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, t.hidden],
            ty[2],
        ));
        specs.push((
            format!("{g}.attn_output.weight"),
            format!("{p}.self_attn.o_proj.weight"),
            vec![t.hidden, q],
            ty[3],
        ));
        specs.push((
            format!("{g}.ffn_gate.weight"),
            format!("{p}.mlp.gate_proj.weight"),
            vec![t.inter, t.hidden],
            ty[4],
        ));
        specs.push((
            format!("{g}.ffn_up.weight"),
            format!("{p}.mlp.up_proj.weight"),
            vec![t.inter, t.hidden],
            ty[5],
        ));
        specs.push((
            format!("{g}.ffn_down.weight"),
            format!("{p}.mlp.down_proj.weight"),
            vec![t.hidden, t.inter],
            ty[6],
        ));
        specs.push((
            format!("{g}.attn_norm.weight"),
            format!("{p}.input_layernorm.weight"),
            vec![t.hidden],
            F32,
        ));
        specs.push((
            format!("{g}.ffn_norm.weight"),
            format!("{p}.post_attention_layernorm.weight"),
            vec![t.hidden],
            F32,
        ));
        if !llama {
            specs.push((
                format!("{g}.attn_q.bias"),
                format!("{p}.self_attn.q_proj.bias"),
                vec![q],
                F32,
            ));
            specs.push((
                format!("{g}.attn_k.bias"),
                format!("{p}.self_attn.k_proj.bias"),
                vec![kv],
                F32,
            ));
            specs.push((
                format!("{g}.attn_v.bias"),
                format!("{p}.self_attn.v_proj.bias"),
                vec![kv],
                F32,
            ));
        }
    }
    specs.push((
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![t.hidden],
        F32,
    ));
    if llama {
        specs.push((
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![t.vocab, t.hidden],
            Q6K,
        ));
    }
    let mut tensors = Vec::new();
    let mut originals = HashMap::new();
    for (gname, hname, shape, ty) in specs {
        let orig = rand_tensor(&mut rng, &shape);
        let stored = if llama && hname.contains(".q_proj.") {
            permute_qk_llama_cpp(&orig, t.heads).unwrap()
        } else if llama && hname.contains(".k_proj.") {
            permute_qk_llama_cpp(&orig, t.kv_heads).unwrap()
        } else {
            orig.clone()
        };
        tensors.push((gname, QTensor::quantize(&stored, ty).unwrap()));
        originals.insert(hname, (orig, ty));
    }
    GgufParts {
        metadata: metadata.into_iter().collect(),
        tensors,
        originals,
    }
}

/// Max |a - b| and max |b|.
pub fn max_err(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let a = a
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut e = 0f32;
    let mut m = 0f32;
    for (x, y) in a.iter().zip(&b) {
        e = e.max((x - y).abs());
        m = m.max(y.abs());
    }
    (e, m)
}

/// Attention scores `[1, n_head, T, T]` of the Q/K projections `q_w` `[n_head*hd, in]` and
/// `k_w` `[n_kv*hd, in]` on `x` `[T, in]`, after rotary embedding: interleaved (GPT-J, what
/// llama.cpp uses with its permuted GGUF rows) or rotate-half (HF). Scores do not depend on
/// the order of dimensions inside a head, so permuted+interleaved must equal HF+rotate-half.
pub fn rope_scores(
    x: &Tensor,
    q_w: &Tensor,
    k_w: &Tensor,
    n_head: usize,
    n_kv: usize,
    theta: f64,
    interleaved: bool,
) -> Tensor {
    let t = x.dim(0).unwrap();
    let hd = q_w.dim(0).unwrap() / n_head;
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / hd as f64)) as f32)
        .collect();
    let mut ang = Vec::with_capacity(t * hd / 2);
    for p in 0..t {
        for f in &inv {
            ang.push(p as f32 * f);
        }
    }
    let ang = Tensor::from_vec(ang, (t, hd / 2), &Device::Cpu).unwrap();
    let (cos, sin) = (ang.cos().unwrap(), ang.sin().unwrap());
    let heads = |w: &Tensor, n: usize| {
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let y = y
            .reshape((1, t, n, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        if interleaved {
            candle_nn::rotary_emb::rope_i(&y, &cos, &sin).unwrap()
        } else {
            candle_nn::rotary_emb::rope(&y, &cos, &sin).unwrap()
        }
    };
    let q = heads(q_w, n_head);
    let k = heads(k_w, n_kv);
    let group = n_head / n_kv;
    let k = Tensor::cat(
        &(0..n_head)
            .map(|h| k.narrow(1, h / group, 1).unwrap())
            .collect::<Vec<_>>(),
        1,
    )
    .unwrap();
    q.matmul(&k.transpose(2, 3).unwrap().contiguous().unwrap())
        .unwrap()
}

//! Real-file check on SmolLM2-135M-Instruct (Q4_1 GGUF). Not a download: set
//! `CAHL_SMOLLM2_GGUF=/path/SmolLM2-135M-Instruct.Q4_1.gguf` to run it, otherwise it is skipped.
//! Reference token ids come from `tests/data/smollm2_reference.py` (Python `tokenizers` with the
//! HF SmolLM2 pre-tokenizer: Digits(individual) + ByteLevel).
mod load_support;

use std::path::PathBuf;
use std::time::Instant;

use cahl_engine::chat::Message;
use cahl_engine::load::{inspect, load_model};

fn gguf_path() -> Option<PathBuf> {
    match std::env::var_os("CAHL_SMOLLM2_GGUF") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped: set CAHL_SMOLLM2_GGUF to the SmolLM2-135M-Instruct.Q4_1.gguf path to run"
            );
            None
        }
    }
}

#[test]
fn smollm2_gguf_real_file() {
    let Some(path) = gguf_path() else { return };
    let t0 = Instant::now();
    let r = inspect(&path).unwrap();
    eprintln!("inspect in {:?}:\n{r}", t0.elapsed());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    let t0 = Instant::now();
    let m = load_model(&path).unwrap();
    eprintln!(
        "load_model in {:?}; dtypes {:?}",
        t0.elapsed(),
        m.tensor_dtypes
    );
    let c = &m.config;
    assert_eq!(c.model_type, "llama");
    assert_eq!(c.num_hidden_layers, 30);
    assert_eq!(c.hidden_size, 576);
    assert_eq!(c.intermediate_size, 1536);
    assert_eq!(c.num_attention_heads, 9);
    assert_eq!(c.num_kv_heads(), 3);
    assert_eq!(c.head_dim(), 64);
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(c.rope_theta, 100_000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(m.weights.len(), 272);
    assert_eq!(m.param_count(), r.param_count);
    assert_eq!(r.param_count, 134_515_008);

    let tok = m.require_tokenizer().unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/smollm2_tokens.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let texts = reference["texts"].as_array().unwrap();
    let ids = reference["ids"].as_array().unwrap();
    for (text, want) in texts.iter().zip(ids) {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, want, "token ids differ for {text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text);
    }

    // Streaming detokenization of every reference text gives the text back, piece by piece.
    for text in texts {
        let text = text.as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        let mut dec = tok.incremental_decoder(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(p) = dec.push(tok, id).unwrap() {
                assert!(!p.contains('\u{FFFD}'));
                out.push_str(&p);
            }
        }
        out.push_str(&dec.flush(tok).unwrap().unwrap_or_default());
        assert_eq!(out, text);
    }
    // Throughput of encode / streaming decode on a long text.
    let long: String = texts
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
        .repeat(50);
    let t0 = Instant::now();
    let ids = tok.encode(&long, false).unwrap();
    let enc = t0.elapsed();
    let t0 = Instant::now();
    let mut dec = tok.incremental_decoder(false);
    for &id in &ids {
        dec.push(tok, id).unwrap();
    }
    eprintln!(
        "encode: {} chars -> {} tokens in {enc:?}; streaming decode {:?} ({:.1} us/token)",
        long.chars().count(),
        ids.len(),
        t0.elapsed(),
        t0.elapsed().as_secs_f64() * 1e6 / ids.len() as f64
    );

    let tmpl = m.chat_template.as_ref().unwrap();
    let msgs = [
        Message::user("What is the capital of France?"),
        Message::assistant("Paris."),
        Message::user("And of Japan? Answer in 3 words: 日本 🇯🇵"),
    ];
    let chat = tmpl.render(&msgs, None, true).unwrap();
    assert_eq!(chat, reference["chat"].as_str().unwrap());
    eprintln!("{chat}");

    // Q/K un-permutation: HF layout + rotate-half rope gives the same attention scores as the
    // raw GGUF rows + llama.cpp's interleaved rope (checked on two layers).
    let mut f = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let x = {
        let v: Vec<f32> = (0..7 * 576)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        candle_core::Tensor::from_vec(v, (7, 576), &candle_core::Device::Cpu).unwrap()
    };
    for layer in [0usize, 17] {
        let mut raw = |n: &str| {
            content
                .tensor(&mut f, n, &candle_core::Device::Cpu)
                .unwrap()
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
        };
        let gq = raw(&format!("blk.{layer}.attn_q.weight"));
        let gk = raw(&format!("blk.{layer}.attn_k.weight"));
        let p = format!("model.layers.{layer}.self_attn");
        let hq = &m.weights[&format!("{p}.q_proj.weight")];
        let hk = &m.weights[&format!("{p}.k_proj.weight")];
        let a = load_support::rope_scores(&x, &gq, &gk, 9, 3, 100_000.0, true);
        let b = load_support::rope_scores(&x, hq, hk, 9, 3, 100_000.0, false);
        let (err, max) = load_support::max_err(&b, &a);
        eprintln!("layer {layer}: attention-score max abs diff {err:e} (max |score| {max})");
        assert!(err <= 1e-4 * max.max(1.0));
    }
}

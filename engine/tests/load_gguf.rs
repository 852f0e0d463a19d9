//! GGUF loading on tiny files written by the test: config, shapes, dequantization error,
//! Q/K un-permutation, tokenizer and template from metadata, clear errors on bad input.
mod load_support;

use cahl_engine::chat::Message;
use cahl_engine::load::gguf::{gguf_to_hf_name, permute_qk_llama_cpp, unpermute_qk};
use cahl_engine::load::{inspect, load_model};
use cahl_engine::EngineError;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use load_support::*;

fn write_tiny(dir: &std::path::Path, arch: &str) -> (std::path::PathBuf, GgufParts) {
    let parts = tiny_gguf(arch);
    let path = dir.join(format!("tiny-{arch}.gguf"));
    parts.write(&path);
    (path, parts)
}

/// Worst-case absolute error per element for weights in [-1, 1].
fn bound(ty: GgmlDType) -> f32 {
    match ty {
        GgmlDType::F32 => 0.0,
        GgmlDType::F16 => 1e-3,
        GgmlDType::Q8_0 => 0.01,
        GgmlDType::Q6K => 0.04,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K => 0.15,
        _ => 1.0,
    }
}

#[test]
fn llama_gguf_config_shapes_and_dequantization() {
    let dir = tempfile::tempdir().unwrap();
    let (path, parts) = write_tiny(dir.path(), "llama");
    let m = load_model(&path).unwrap();
    let c = &m.config;
    let t = tiny();
    assert_eq!(c.model_type, "llama");
    assert_eq!(c.num_hidden_layers, t.layers);
    assert_eq!(c.hidden_size, t.hidden);
    assert_eq!(c.intermediate_size, t.inter);
    assert_eq!(c.num_attention_heads, t.heads);
    assert_eq!(c.num_kv_heads(), t.kv_heads);
    assert_eq!(c.vocab_size, t.vocab);
    assert_eq!(c.max_position_embeddings, 2048);
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-9);
    assert_eq!(c.rope_theta, 100_000.0);
    assert!(!c.tie_word_embeddings);
    assert!(!c.qkv_bias());
    assert!(!c.rope_interleaved);
    assert_eq!(m.weights.len(), parts.originals.len());
    // Every type we wrote is counted.
    for ty in ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"] {
        assert!(
            m.tensor_dtypes.contains_key(ty),
            "{ty} missing from {:?}",
            m.tensor_dtypes
        );
    }
    let total: usize = m.tensor_dtypes.values().sum();
    assert_eq!(total, parts.tensors.len());
    for (name, (orig, ty)) in &parts.originals {
        let got = m
            .weights
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(got.dims(), orig.dims(), "{name}");
        assert_eq!(got.dtype(), candle_core::DType::F32);
        let (err, _) = max_err(got, orig);
        assert!(
            err <= bound(*ty),
            "{name} ({ty:?}): max error {err} > {}",
            bound(*ty)
        );
        eprintln!("{name:45} {ty:?}: max abs err {err:.5}");
    }
}

#[test]
fn llama_qk_unpermutation_is_exact() {
    // Hand-checked permutation: one head of size 6 interleaves its halves.
    let rows: Vec<f32> = (0..6).map(|x| x as f32).collect();
    let w = Tensor::from_vec(rows, (6, 1), &Device::Cpu).unwrap();
    let p = permute_qk_llama_cpp(&w, 1).unwrap();
    assert_eq!(
        p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![0., 3., 1., 4., 2., 5.]
    );
    assert_eq!(
        unpermute_qk(&p, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        vec![0., 1., 2., 3., 4., 5.]
    );
    // Two heads of 4, two columns: head-local interleaving.
    let w = Tensor::arange(0f32, 16., &Device::Cpu)
        .unwrap()
        .reshape((8, 2))
        .unwrap();
    let p = permute_qk_llama_cpp(&w, 2).unwrap();
    let rows_of = |t: &Tensor| -> Vec<f32> {
        t.narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(rows_of(&p), vec![0., 4., 2., 6., 8., 12., 10., 14.]);
    // Biases (1-D) too.
    let b = Tensor::arange(0f32, 8., &Device::Cpu).unwrap();
    let pb = permute_qk_llama_cpp(&b, 2).unwrap();
    assert_eq!(
        unpermute_qk(&pb, 2).unwrap().to_vec1::<f32>().unwrap(),
        b.to_vec1::<f32>().unwrap()
    );

    // Through a file: layer 0 Q and K are stored as F32, so the load is exact.
    let dir = tempfile::tempdir().unwrap();
    let (path, parts) = write_tiny(dir.path(), "llama");
    let m = load_model(&path).unwrap();
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
    ] {
        let (orig, ty) = &parts.originals[name];
        assert_eq!(*ty, GgmlDType::F32);
        let (err, _) = max_err(&m.weights[name], orig);
        assert_eq!(err, 0.0, "{name} not restored exactly");
    }
}

#[test]
fn qwen2_gguf_tied_with_biases_not_permuted() {
    let dir = tempfile::tempdir().unwrap();
    let (path, parts) = write_tiny(dir.path(), "qwen2");
    let m = load_model(&path).unwrap();
    assert_eq!(m.config.model_type, "qwen2");
    assert!(m.config.tie_word_embeddings);
    assert!(m.config.qkv_bias());
    assert!(!m.weights.contains_key("lm_head.weight"));
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (err, _) = max_err(&m.weights[name], &parts.originals[name].0);
    assert_eq!(err, 0.0, "qwen2 Q must not be un-permuted");
    let b = "model.layers.1.self_attn.k_proj.bias";
    assert_eq!(m.weights[b].dims(), &[tiny().kv_heads * 64]);
}

#[test]
fn gguf_tokenizer_and_chat_template_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_tiny(dir.path(), "llama");
    let m = load_model(&path).unwrap();
    let tok = m.require_tokenizer().unwrap();
    let (toks, _) = tiny_vocab();
    let id = |s: &str| toks.iter().position(|t| t == s).unwrap() as u32;
    assert_eq!(tok.vocab_size(), toks.len());
    assert_eq!(tok.bos_id(), Some(1));
    // eos from metadata (0) plus <|im_end|> because the template uses it.
    assert_eq!(tok.eos_ids(), &[0, 2]);
    assert_eq!(
        tok.encode("the world", false).unwrap(),
        vec![id("t"), id("he"), id("Ġwor"), id("ld")]
    );
    // smollm pre-tokenizer isolates digits.
    assert_eq!(
        tok.encode("a12", false).unwrap(),
        vec![id("a"), id("1"), id("2")]
    );
    let text = "<|im_start|>user\nthe héllo 日本 world 42<|im_end|>";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        "user\nthe héllo 日本 world 42"
    );
    let tmpl = m.chat_template.as_ref().unwrap();
    let s = tmpl.render(&[Message::user("hi")], None, true).unwrap();
    assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn gguf_inspect_reads_metadata_only() {
    let dir = tempfile::tempdir().unwrap();
    let (path, parts) = write_tiny(dir.path(), "llama");
    let r = inspect(&path).unwrap();
    let t = tiny();
    assert_eq!(r.architecture, "llama");
    assert_eq!(
        (
            r.num_layers,
            r.hidden_size,
            r.num_heads,
            r.num_kv_heads,
            r.vocab_size
        ),
        (t.layers, t.hidden, t.heads, t.kv_heads, t.vocab)
    );
    let params: u64 = parts
        .originals
        .values()
        .map(|(o, _)| o.elem_count() as u64)
        .sum();
    assert_eq!(r.param_count, params);
    assert_eq!(r.tensor_count, parts.tensors.len());
    assert!(r.tokenizer.is_some() && r.chat_template);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let text = r.to_string();
    assert!(text.contains("layers:        2"), "{text}");
    assert!(text.contains("Q6_K"), "{text}");
}

fn load_err(path: &std::path::Path) -> String {
    match load_model(path) {
        Ok(_) => panic!("expected an error for {}", path.display()),
        Err(e @ EngineError::Load { .. }) => {
            let s = e.to_string();
            assert!(
                s.contains(&path.display().to_string()),
                "error does not name the file: {s}"
            );
            s
        }
        Err(e) => panic!("expected EngineError::Load, got {e:?}"),
    }
}

#[test]
fn truncated_and_garbage_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_tiny(dir.path(), "llama");
    let bytes = std::fs::read(&path).unwrap();
    // Truncated at many points: in the header, the metadata, the tensor directory, the data.
    for cut in [
        0usize,
        3,
        10,
        24,
        100,
        1000,
        5000,
        bytes.len() / 2,
        bytes.len() - 64,
    ] {
        let p = dir.path().join(format!("cut-{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_err(&p);
        eprintln!("cut {cut}: {e}");
        assert!(!e.contains('\n'), "one-line message expected: {e}");
    }
    let p = dir.path().join("garbage.gguf");
    std::fs::write(&p, b"this is not a model file at all, just some text").unwrap();
    let e = load_err(&p);
    assert!(e.contains("not a valid GGUF"), "{e}");
    // Bad magic but right length.
    let mut bad = bytes.clone();
    bad[0] = b'X';
    let p = dir.path().join("badmagic.gguf");
    std::fs::write(&p, &bad).unwrap();
    let e = load_err(&p);
    assert!(e.contains("magic"), "{e}");
    // Random bytes after a valid magic.
    let mut rnd = b"GGUF\x03\x00\x00\x00".to_vec();
    rnd.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let p = dir.path().join("random.gguf");
    std::fs::write(&p, &rnd).unwrap();
    load_err(&p);
}

#[test]
fn unsupported_or_inconsistent_content_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, parts: &GgufParts| {
        let p = dir.path().join(name);
        parts.write(&p);
        p
    };
    // Unknown architecture.
    let mut parts = tiny_gguf("llama");
    parts.set_md("general.architecture", Value::String("gptneox".into()));
    let e = load_err(&write("arch.gguf", &parts));
    assert!(
        e.contains("unsupported architecture") && e.contains("gptneox"),
        "{e}"
    );
    // Missing tensor.
    let mut parts = tiny_gguf("llama");
    parts.remove_tensor("blk.1.ffn_up.weight");
    let e = load_err(&write("missing.gguf", &parts));
    assert!(
        e.contains("missing tensors") && e.contains("model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );
    // Shape mismatch against the config.
    let mut parts = tiny_gguf("llama");
    parts.set_md("llama.feed_forward_length", Value::U32(1024));
    let e = load_err(&write("shape.gguf", &parts));
    assert!(e.contains("shape"), "{e}");
    // Missing required metadata.
    let mut parts = tiny_gguf("llama");
    parts.metadata.retain(|(k, _)| k != "llama.block_count");
    let e = load_err(&write("nometa.gguf", &parts));
    assert!(e.contains("llama.block_count"), "{e}");
    // Unsupported storage type.
    let mut parts = tiny_gguf("llama");
    let src = Tensor::zeros((tiny().hidden,), candle_core::DType::F32, &Device::Cpu).unwrap();
    match QTensor::quantize(&src, GgmlDType::Q8_1) {
        Ok(q) => {
            parts.tensors.retain(|(k, _)| k != "output_norm.weight");
            parts.tensors.push(("output_norm.weight".into(), q));
            let e = load_err(&write("dtype.gguf", &parts));
            assert!(e.contains("unsupported type Q8_1"), "{e}");
        }
        Err(e) => eprintln!("Q8_1 case not run: candle cannot write Q8_1: {e}"),
    }
    // A zero alignment would divide by zero inside the reader: still an error, not a panic.
    let mut parts = tiny_gguf("llama");
    parts.set_md("general.alignment", Value::U32(0));
    load_err(&write("align.gguf", &parts));
    // Llama 3 rope scaling factors: a specific error rather than silently wrong rope.
    let mut parts = tiny_gguf("llama");
    let freqs = Tensor::ones((32,), candle_core::DType::F32, &Device::Cpu).unwrap();
    parts.tensors.push((
        "rope_freqs.weight".into(),
        QTensor::quantize(&freqs, GgmlDType::F32).unwrap(),
    ));
    let e = load_err(&write("ropefreqs.gguf", &parts));
    assert!(e.contains("rope_freqs"), "{e}");
    // Unknown tensor name.
    let mut parts = tiny_gguf("llama");
    parts.tensors.push((
        "blk.0.mystery.weight".into(),
        QTensor::quantize(&src, GgmlDType::F32).unwrap(),
    ));
    let e = load_err(&write("unknown.gguf", &parts));
    assert!(e.contains("unknown tensor blk.0.mystery.weight"), "{e}");
    // Unsupported tokenizer kind.
    let mut parts = tiny_gguf("llama");
    parts.set_md("tokenizer.ggml.model", Value::String("bert".into()));
    let e = load_err(&write("tok.gguf", &parts));
    assert!(e.contains("tokenizer"), "{e}");
    // No tokenizer at all: loads, and asking for it names the problem.
    let mut parts = tiny_gguf("llama");
    parts.metadata.retain(|(k, _)| !k.starts_with("tokenizer."));
    let p = write("notok.gguf", &parts);
    let m = load_model(&p).unwrap();
    let e = m.require_tokenizer().unwrap_err().to_string();
    assert!(
        e.contains("missing tokenizer") && e.contains("notok.gguf"),
        "{e}"
    );
    assert!(m.chat_template.is_none());
    assert!(m.chat_template_or_fallback().unwrap().is_fallback());
}

#[test]
fn gguf_name_mapping() {
    let cases = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        (
            "blk.12.attn_q.weight",
            "model.layers.12.self_attn.q_proj.weight",
        ),
        ("blk.0.attn_k.bias", "model.layers.0.self_attn.k_proj.bias"),
        (
            "blk.3.attn_v.weight",
            "model.layers.3.self_attn.v_proj.weight",
        ),
        (
            "blk.3.attn_output.weight",
            "model.layers.3.self_attn.o_proj.weight",
        ),
        (
            "blk.1.ffn_gate.weight",
            "model.layers.1.mlp.gate_proj.weight",
        ),
        ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
        (
            "blk.1.ffn_down.weight",
            "model.layers.1.mlp.down_proj.weight",
        ),
        (
            "blk.2.attn_norm.weight",
            "model.layers.2.input_layernorm.weight",
        ),
        (
            "blk.2.ffn_norm.weight",
            "model.layers.2.post_attention_layernorm.weight",
        ),
    ];
    for (g, h) in cases {
        assert_eq!(gguf_to_hf_name(g).as_deref(), Some(h), "{g}");
    }
    for bad in [
        "blk.x.attn_q.weight",
        "blk.1.attn_q",
        "foo.weight",
        "blk.1.ffn_gate_exps.weight",
    ] {
        assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
    }
}

#[test]
fn unpermuted_qk_with_rotate_half_rope_matches_llama_cpp_interleaved_rope() {
    let dir = tempfile::tempdir().unwrap();
    let (path, parts) = write_tiny(dir.path(), "llama");
    let m = load_model(&path).unwrap();
    let t = tiny();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
    let x = rand_tensor(&mut rng, &[6, t.hidden]);
    for layer in 0..t.layers {
        let raw = |g: &str| {
            let q = &parts.tensors.iter().find(|(n, _)| n == g).unwrap().1;
            q.dequantize(&Device::Cpu).unwrap()
        };
        let gq = raw(&format!("blk.{layer}.attn_q.weight"));
        let gk = raw(&format!("blk.{layer}.attn_k.weight"));
        let p = format!("model.layers.{layer}.self_attn");
        let hq = &m.weights[&format!("{p}.q_proj.weight")];
        let hk = &m.weights[&format!("{p}.k_proj.weight")];
        let llama_cpp = rope_scores(&x, &gq, &gk, t.heads, t.kv_heads, 1e4, true);
        let hf = rope_scores(&x, hq, hk, t.heads, t.kv_heads, 1e4, false);
        let (err, max) = max_err(&hf, &llama_cpp);
        assert!(
            err <= 1e-4 * max.max(1.0),
            "layer {layer}: {err} (max {max})"
        );
        // Without the un-permutation the scores would differ.
        let wrong = rope_scores(&x, &gq, &gk, t.heads, t.kv_heads, 1e4, false);
        assert!(max_err(&wrong, &llama_cpp).0 > 1e-2 * max);
    }
}

/// Corrupt bytes anywhere in the header must give `Ok` or an error, never a panic.
#[test]
fn corrupted_headers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_tiny(dir.path(), "llama");
    let bytes = std::fs::read(&path).unwrap();
    // The header (metadata + tensor directory) ends where tensor data starts.
    let header_len = {
        let mut f = std::fs::File::open(&path).unwrap();
        candle_core::quantized::gguf_file::Content::read(&mut f)
            .unwrap()
            .tensor_data_offset as usize
    };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let p = dir.path().join("fuzz.gguf");
    let (mut ok, mut err) = (0, 0);
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let pos = (next() as usize) % header_len;
            b[pos] = match next() % 3 {
                0 => 0xFF,
                1 => 0,
                _ => next() as u8,
            };
        }
        std::fs::write(&p, &b).unwrap();
        let res = std::panic::catch_unwind(|| (load_model(&p).is_ok(), inspect(&p).is_ok()));
        match res {
            Ok((true, _)) => ok += 1,
            Ok((false, _)) => err += 1,
            Err(_) => panic!("panic on corrupted header, bytes saved at {}", p.display()),
        }
    }
    eprintln!("corrupted headers: {ok} loaded, {err} rejected");
}

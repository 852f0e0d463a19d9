//! HF folder loading on a tiny sharded checkpoint written by the test.
mod load_support;

use std::collections::HashMap;
use std::path::Path;

use cahl_engine::chat::Message;
use cahl_engine::load::{expected_tensors, inspect, load_model, ModelFormat};
use cahl_engine::model::ModelConfig;
use cahl_engine::tokenizer::Tokenizer;
use candle_core::{DType, Tensor};
use load_support::*;
use rand::SeedableRng;

const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 268,
  "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0, "max_position_embeddings": 512, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "bfloat16",
  "some_unknown_key": {"x": 1}
}"#;

/// Write a two-shard folder; returns the tensors written (after dtype conversion).
fn write_folder(dir: &Path, with_tokenizer: bool) -> HashMap<String, Tensor> {
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let cfg = ModelConfig::from_json_str(CONFIG, "config.json").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut shards: [HashMap<String, Tensor>; 2] = [HashMap::new(), HashMap::new()];
    let mut all = HashMap::new();
    for (i, (name, shape)) in expected_tensors(&cfg).into_iter().enumerate() {
        let t = rand_tensor(&mut rng, &shape);
        // Mixed dtypes: norms f32, projections bf16, the rest f16.
        let t = if name.contains("norm") {
            t
        } else if name.contains("proj") {
            t.to_dtype(DType::BF16).unwrap()
        } else {
            t.to_dtype(DType::F16).unwrap()
        };
        shards[i % 2].insert(name.clone(), t.clone());
        all.insert(name, t);
    }
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        candle_core::safetensors::save(shard, dir.join(&file)).unwrap();
        for k in shard.keys() {
            weight_map.insert(k.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    if with_tokenizer {
        // Reuse the GGUF-built byte-level BPE and save it as tokenizer.json.
        let parts = tiny_gguf("llama");
        let md: HashMap<String, _> = parts.metadata.into_iter().collect();
        let tok = Tokenizer::from_gguf_metadata(&md, Path::new("tiny"))
            .unwrap()
            .unwrap();
        tok.inner().save(dir.join("tokenizer.json"), false).unwrap();
        let tc = serde_json::json!({
            "bos_token": {"content": "<|im_start|>", "lstrip": false},
            "eos_token": "<|endoftext|>",
            "chat_template": [
                {"name": "tool_use", "template": "TOOLS"},
                {"name": "default", "template": CHATML}
            ]
        });
        std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    }
    all
}

#[test]
fn sharded_hf_folder_loads_with_dtypes_tokenizer_and_template() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_folder(dir.path(), true);
    let m = load_model(dir.path()).unwrap();
    assert_eq!(m.config.hidden_size, 64);
    assert_eq!(m.weights.len(), written.len());
    for (name, t) in &written {
        let got = &m.weights[name];
        assert_eq!(got.dtype(), t.dtype(), "{name}");
        assert_eq!(got.dims(), t.dims(), "{name}");
        let (err, _) = max_err(got, t);
        assert_eq!(err, 0.0, "{name}");
    }
    assert_eq!(m.tensor_dtypes.get("BF16"), Some(&(2 * 7)));
    assert_eq!(m.tensor_dtypes.get("F32"), Some(&(2 * 2 + 1)));
    assert_eq!(m.tensor_dtypes.get("F16"), Some(&2));
    let tok = m.require_tokenizer().unwrap();
    assert_eq!(tok.bos_id(), Some(1));
    // tokenizer_config eos (0), config.json eos (2; also <|im_end|> from the template).
    assert_eq!(tok.eos_ids(), &[0, 2]);
    assert_eq!(
        tok.decode(&tok.encode("the world", false).unwrap(), false)
            .unwrap(),
        "the world"
    );
    let tmpl = m.chat_template.as_ref().unwrap();
    assert_eq!(tmpl.bos_token(), "<|im_start|>");
    assert_eq!(
        tmpl.render(&[Message::user("hi")], None, false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n"
    );
    // Pointing at config.json works too.
    let m2 = load_model(&dir.path().join("config.json")).unwrap();
    assert_eq!(m2.weights.len(), written.len());

    let r = inspect(dir.path()).unwrap();
    assert_eq!(r.format, ModelFormat::HfFolder);
    assert_eq!(r.num_layers, 2);
    assert_eq!(
        r.param_count,
        written.values().map(|t| t.elem_count() as u64).sum::<u64>()
    );
    assert!(
        r.tokenizer.is_some() && r.chat_template && r.warnings.is_empty(),
        "{r}"
    );
}

fn err_of(path: &Path) -> String {
    let e = load_model(path).unwrap_err();
    assert!(
        matches!(
            e,
            cahl_engine::EngineError::Load { .. } | cahl_engine::EngineError::Io { .. }
        ),
        "{e:?}"
    );
    e.to_string()
}

#[test]
fn hf_folder_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), false);
    // No tokenizer: loads, tokenizer is None with a reason.
    let m = load_model(dir.path()).unwrap();
    assert!(m.tokenizer.is_none());
    assert!(m
        .require_tokenizer()
        .unwrap_err()
        .to_string()
        .contains("tokenizer.json"));

    // Missing shard.
    let shard2 = dir.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard2).unwrap();
    std::fs::remove_file(&shard2).unwrap();
    let e = err_of(dir.path());
    assert!(
        e.contains("shard model-00002-of-00002.safetensors is missing"),
        "{e}"
    );
    // Truncated shard.
    std::fs::write(&shard2, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(dir.path());
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("invalid safetensors"),
        "{e}"
    );
    std::fs::write(&shard2, &bytes).unwrap();

    // Shape mismatch against the config.
    let cfg = CONFIG.replace("\"intermediate_size\": 128", "\"intermediate_size\": 96");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("shape") && e.contains("mlp"), "{e}");
    // Unknown architecture.
    let cfg = CONFIG.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("config.json") && e.contains("gpt2"), "{e}");
    // Bad JSON.
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let e = err_of(dir.path());
    assert!(e.contains("config.json"), "{e}");
    // Not a model at all.
    let empty = tempfile::tempdir().unwrap();
    let e = err_of(empty.path());
    assert!(e.contains("config.json"), "{e}");
}

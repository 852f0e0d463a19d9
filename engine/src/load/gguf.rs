//! GGUF files (llama and qwen2 architectures): config from metadata, tensors dequantized to f32
//! and renamed to HF names, llama's Q/K rows un-permuted to HF's rotate-half layout, tokenizer
//! and chat template from `tokenizer.*` metadata.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::{candle_msg, check_shapes, sanity_check, InspectReport, LoadedModel, ModelFormat};
use crate::chat::ChatTemplate;
use crate::error::{EngineError, Result};
use crate::model::{ModelConfig, TokenIds};
use crate::tokenizer::{gguf_int, Tokenizer};

/// Read the GGUF header, metadata and tensor directory (no tensor data).
pub fn read_content(path: &Path) -> Result<(Content, BufReader<File>)> {
    let file = File::open(path).map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut reader = BufReader::new(file);
    // candle's reader validates lengths against the file size; the unwind guard covers anything
    // it does not (e.g. a zero `general.alignment`), so a corrupt file never panics the caller.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut reader)));
    let content = match res {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Err(EngineError::load(
                path,
                format!("not a valid GGUF file: {}", candle_msg(&e)),
            ));
        }
        Err(_) => {
            return Err(EngineError::load(
                path,
                "not a valid GGUF file (reader failed)",
            ))
        }
    };
    Ok((content, reader))
}

/// The name llama.cpp / GGUF files use for a quantization type.
pub fn ggml_dtype_name(dt: GgmlDType) -> &'static str {
    match dt {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// Storage types we dequantize. Q8_1 / Q8_K are activation-only types that model files do not
/// use; they are rejected. Types candle cannot parse at all (IQ*, TQ*) fail at header reading.
fn dtype_supported(dt: GgmlDType) -> bool {
    !matches!(dt, GgmlDType::Q8_1 | GgmlDType::Q8K)
}

/// Map a GGUF tensor name to its HF name; `None` for names we do not know.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    let (base, suffix) = if let Some(b) = name.strip_suffix(".weight") {
        (b, "weight")
    } else if let Some(b) = name.strip_suffix(".bias") {
        (b, "bias")
    } else {
        return None;
    };
    let top = match base {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(format!("{t}.{suffix}"));
    }
    let rest = base.strip_prefix("blk.")?;
    let (idx, part) = rest.split_once('.')?;
    let layer: usize = idx.parse().ok()?;
    let hf = match part {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// GGUF tensors that carry no weights we need (none so far; `rope_freqs.weight`, Llama 3.x rope
/// scaling factors, is rejected with its own message because ignoring it would change results).
fn is_ignored(_name: &str) -> bool {
    false
}

/// A specific message for GGUF tensors we know but do not support.
fn unsupported_tensor(name: &str) -> Option<&'static str> {
    match name {
        "rope_freqs.weight" => {
            Some("rope_freqs.weight (Llama 3.x rope scaling factors) is not supported yet")
        }
        _ => None,
    }
}

/// llama.cpp's converter permutes the rows of Q and K (weights `[n_head*head_dim, in]` or
/// biases `[n_head*head_dim]`) for interleaved rope: per head, rows `[0..hd/2]` and `[hd/2..hd]`
/// are interleaved (`w.reshape(n_head, 2, hd/2, ..).swap(1, 2)`). This is that permutation.
pub fn permute_qk_llama_cpp(w: &Tensor, n_head: usize) -> Result<Tensor> {
    reorder_rows(w, n_head, true)
}

/// Undo [`permute_qk_llama_cpp`], giving HF's rotate-half layout.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> Result<Tensor> {
    reorder_rows(w, n_head, false)
}

fn reorder_rows(w: &Tensor, n_head: usize, forward: bool) -> Result<Tensor> {
    let dims = w.dims().to_vec();
    let (rows, rest) = match dims.split_first() {
        Some((r, rest)) => (*r, rest.to_vec()),
        None => return Err(EngineError::Invalid("cannot permute a scalar".into())),
    };
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(EngineError::Invalid(format!(
            "cannot permute {rows} rows into {n_head} heads of even size"
        )));
    }
    let half = rows / n_head / 2;
    let inner: usize = rest.iter().product();
    let (a, b) = if forward { (2, half) } else { (half, 2) };
    let out = w
        .reshape((n_head, a, b, inner))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(out)
}

fn md_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    match md.get(key) {
        Some(Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

fn md_usize(path: &Path, md: &HashMap<String, Value>, key: &str) -> Result<Option<usize>> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => match gguf_int(v).and_then(|i| usize::try_from(i).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(EngineError::load(
                path,
                format!("metadata {key} is not a non-negative integer"),
            )),
        },
    }
}

fn md_f64(path: &Path, md: &HashMap<String, Value>, key: &str) -> Result<Option<f64>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(*x as f64)),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(v) => match gguf_int(v) {
            Some(i) => Ok(Some(i as f64)),
            None => Err(EngineError::load(
                path,
                format!("metadata {key} is not a number"),
            )),
        },
    }
}

/// The `general.architecture` of a supported model.
fn architecture(path: &Path, md: &HashMap<String, Value>) -> Result<String> {
    let Some(arch) = md_str(md, "general.architecture") else {
        return Err(EngineError::load(
            path,
            "metadata general.architecture is missing",
        ));
    };
    match arch {
        "llama" | "qwen2" => Ok(arch.to_string()),
        other => Err(EngineError::load(
            path,
            format!("unsupported architecture {other:?} (supported: llama, qwen2)"),
        )),
    }
}

/// Build a [`ModelConfig`] from GGUF metadata and the tensor directory.
pub fn config_from_gguf(path: &Path, content: &Content) -> Result<ModelConfig> {
    let md = &content.metadata;
    let arch = architecture(path, md)?;
    let key = |k: &str| format!("{arch}.{k}");
    let req = |k: &str| -> Result<usize> {
        md_usize(path, md, &key(k))?
            .ok_or_else(|| EngineError::load(path, format!("metadata {} is missing", key(k))))
    };
    let hidden = req("embedding_length")?;
    let layers = req("block_count")?;
    let inter = req("feed_forward_length")?;
    let heads = req("attention.head_count")?;
    let kv_heads = md_usize(path, md, &key("attention.head_count_kv"))?.unwrap_or(heads);
    let eps = md_f64(path, md, &key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6);
    let theta = md_f64(path, md, &key("rope.freq_base"))?.unwrap_or(10_000.0);
    let ctx = md_usize(path, md, &key("context_length"))?.unwrap_or(4096);
    let vocab = match md.get("tokenizer.ggml.tokens") {
        Some(Value::Array(toks)) => toks.len(),
        _ => match md_usize(path, md, &key("vocab_size"))? {
            Some(v) => v,
            None => match content.tensor_infos.get("token_embd.weight") {
                Some(info) => info.shape.dims().first().copied().unwrap_or(0),
                None => {
                    return Err(EngineError::load(
                        path,
                        "cannot determine the vocabulary size",
                    ))
                }
            },
        },
    };
    let head_dim = match (md_usize(path, md, &key("attention.key_length"))?, heads) {
        (Some(k), h) if h > 0 && k * h != hidden => Some(k),
        _ => None,
    };
    if let Some(rot) = md_usize(path, md, &key("rope.dimension_count"))? {
        let hd = head_dim.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        if rot != hd {
            return Err(EngineError::load(
                path,
                format!("partial rotary embedding (rope.dimension_count {rot} != head_dim {hd}) is not supported"),
            ));
        }
    }
    if let Some(kind) = md_str(md, &key("rope.scaling.type")) {
        if kind != "none" {
            return Err(EngineError::load(
                path,
                format!("unsupported rope scaling {kind:?}"),
            ));
        }
    }
    let tok_id = |k: &str| -> Option<TokenIds> {
        md.get(k)
            .and_then(gguf_int)
            .and_then(|i| u32::try_from(i).ok())
            .map(TokenIds::One)
    };
    let tied = !content.tensor_infos.contains_key("output.weight");
    let attention_bias = if arch == "llama" {
        Some(content.tensor_infos.contains_key("blk.0.attn_q.bias"))
    } else {
        None
    };
    let cfg = ModelConfig {
        architectures: vec![match arch.as_str() {
            "qwen2" => "Qwen2ForCausalLM".to_string(),
            _ => "LlamaForCausalLM".to_string(),
        }],
        model_type: arch.clone(),
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim,
        rms_norm_eps: eps,
        rope_theta: theta,
        max_position_embeddings: ctx,
        tie_word_embeddings: tied,
        attention_bias,
        hidden_act: "silu".to_string(),
        bos_token_id: tok_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: tok_id("tokenizer.ggml.eos_token_id"),
        rope_scaling: None,
        torch_dtype: None,
        rope_interleaved: false,
    };
    sanity_check(path, &cfg)?;
    Ok(cfg)
}

/// Load a GGUF file (weights are checked against the config by the caller).
pub(crate) fn load_gguf(path: &Path) -> Result<LoadedModel> {
    let (content, mut reader) = read_content(path)?;
    let config = config_from_gguf(path, &content)?;
    let llama = config.model_type == "llama";
    let (n_head, n_kv) = (config.num_attention_heads, config.num_kv_heads());
    let mut weights = HashMap::new();
    let mut dtypes = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    // Check names and shapes against the config before reading any data: a corrupt directory
    // (absurd dimensions) is rejected here, and nothing is read for a mismatched file.
    let mut shapes = HashMap::new();
    for name in &names {
        if is_ignored(name) {
            continue;
        }
        if let Some(msg) = unsupported_tensor(name) {
            return Err(EngineError::load(path, msg));
        }
        let Some(hf) = gguf_to_hf_name(name) else {
            return Err(EngineError::load(path, format!("unknown tensor {name}")));
        };
        shapes.insert(hf, content.tensor_infos[*name].shape.dims().to_vec());
    }
    let shape_refs: HashMap<&str, Vec<usize>> = shapes
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    check_shapes(path, &config, &shape_refs)?;
    // Read sequentially (one file handle), then dequantize in parallel.
    let mut raw = Vec::with_capacity(names.len());
    for name in names {
        let info = &content.tensor_infos[name];
        if is_ignored(name) {
            continue;
        }
        if let Some(msg) = unsupported_tensor(name) {
            return Err(EngineError::load(path, msg));
        }
        let Some(hf) = gguf_to_hf_name(name) else {
            return Err(EngineError::load(path, format!("unknown tensor {name}")));
        };
        if !dtype_supported(info.ggml_dtype) {
            return Err(EngineError::load(
                path,
                format!(
                    "tensor {name} has unsupported type {}",
                    ggml_dtype_name(info.ggml_dtype)
                ),
            ));
        }
        let q = info
            .read(&mut reader, content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| EngineError::load(path, format!("tensor {name}: {}", candle_msg(&e))))?;
        *dtypes
            .entry(ggml_dtype_name(info.ggml_dtype).to_string())
            .or_default() += 1;
        raw.push((name.as_str(), hf, q));
    }
    let converted: Vec<Result<(String, Tensor)>> = raw
        .into_par_iter()
        .map(|(name, hf, q)| {
            let err = |e: String| EngineError::load(path, format!("tensor {name}: {e}"));
            let mut t = q
                .dequantize(&Device::Cpu)
                .map_err(|e| err(candle_msg(&e)))?;
            drop(q);
            let heads = if !llama {
                None
            } else if hf.contains(".q_proj.") {
                Some(n_head)
            } else if hf.contains(".k_proj.") {
                Some(n_kv)
            } else {
                None
            };
            if let Some(h) = heads {
                t = unpermute_qk(&t, h).map_err(|e| err(e.to_string()))?;
            }
            Ok((hf, t))
        })
        .collect();
    for item in converted {
        let (hf, t) = item?;
        weights.insert(hf, t);
    }
    let (tokenizer, note) = match Tokenizer::from_gguf_metadata(&content.metadata, path)? {
        Some(t) => (Some(t), None),
        None => (
            None,
            Some("missing tokenizer: no tokenizer.ggml.* metadata in the GGUF file".to_string()),
        ),
    };
    let chat_template = match md_str(&content.metadata, "tokenizer.chat_template") {
        Some(src) => {
            let tok = tokenizer.as_ref();
            Some(
                ChatTemplate::new(
                    src.to_string(),
                    tok.and_then(|t| t.bos_token()),
                    tok.and_then(|t| t.eos_token()),
                )
                .map_err(|e| EngineError::load(path, e.to_string()))?,
            )
        }
        None => None,
    };
    Ok(LoadedModel {
        config,
        weights,
        tokenizer,
        chat_template,
        source: path.to_path_buf(),
        tensor_dtypes: dtypes,
        tokenizer_note: note,
    })
}

/// Describe a GGUF file from its header (no tensor data is read).
pub(crate) fn inspect_gguf(path: &Path) -> Result<InspectReport> {
    let (content, _) = read_content(path)?;
    let config = config_from_gguf(path, &content)?;
    let mut report = InspectReport::new(path, ModelFormat::Gguf, config.clone());
    let mut shapes = HashMap::new();
    let mut hf_names = Vec::new();
    for (name, info) in &content.tensor_infos {
        if is_ignored(name) {
            continue;
        }
        report.tensor_count += 1;
        report.param_count = report
            .param_count
            .saturating_add(elem_count(info.shape.dims()));
        *report
            .dtypes
            .entry(ggml_dtype_name(info.ggml_dtype).to_string())
            .or_default() += 1;
        match gguf_to_hf_name(name) {
            Some(hf) => hf_names.push((hf, info.shape.dims().to_vec())),
            None => report.warnings.push(
                unsupported_tensor(name)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("unknown tensor {name}")),
            ),
        }
        if !dtype_supported(info.ggml_dtype) {
            report.warnings.push(format!(
                "tensor {name} has unsupported type {}",
                ggml_dtype_name(info.ggml_dtype)
            ));
        }
    }
    for (n, s) in &hf_names {
        shapes.insert(n.as_str(), s.clone());
    }
    if let Err(e) = check_shapes(path, &config, &shapes) {
        report.warnings.push(e.to_string());
    }
    let md = &content.metadata;
    report.tokenizer = md_str(md, "tokenizer.ggml.model").map(|m| {
        let pre = md_str(md, "tokenizer.ggml.pre").unwrap_or("default");
        format!(
            "GGUF {m} (pre-tokenizer {pre}), {} tokens",
            config.vocab_size
        )
    });
    if let Err(e) = Tokenizer::from_gguf_metadata(md, path) {
        report.warnings.push(e.to_string());
    }
    report.chat_template = md_str(md, "tokenizer.chat_template").is_some();
    Ok(report)
}

/// Element count of a shape, saturating (a corrupt header may declare absurd dimensions).
fn elem_count(dims: &[usize]) -> u64 {
    dims.iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
}

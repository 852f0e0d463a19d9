//! Hugging Face folder: `config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`
//! (`chat_template`, `bos_token`, `eos_token`), optional `chat_template.jinja` and
//! `generation_config.json` (extra EOS ids).
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype as StDtype, SafeTensors};

use super::{candle_msg, check_shapes, sanity_check, InspectReport, LoadedModel, ModelFormat};
use crate::chat::ChatTemplate;
use crate::error::{EngineError, Result};
use crate::model::{ModelConfig, TokenIds};
use crate::tokenizer::Tokenizer;

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| EngineError::load(path, format!("invalid JSON: {e}")))
}

/// Parse `config.json`; errors name the file.
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(EngineError::load(dir, "no config.json in the model folder"));
    }
    let text = read_text(&path)?;
    let cfg = ModelConfig::from_json_str(&text, &path.display().to_string())
        .map_err(|e| EngineError::load(&path, e.to_string()))?;
    sanity_check(&path, &cfg)?;
    Ok(cfg)
}

/// The safetensors files of a folder: the shards named by `model.safetensors.index.json`, or
/// `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json = read_json(&index)?;
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            return Err(EngineError::load(&index, "no \"weight_map\" object"));
        };
        let mut files = BTreeSet::new();
        for (name, file) in map {
            let Some(file) = file.as_str() else {
                return Err(EngineError::load(
                    &index,
                    format!("weight_map[{name:?}] is not a string"),
                ));
            };
            // Shards must be plain file names inside the folder.
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(EngineError::load(
                    &index,
                    format!("bad shard file name {file:?}"),
                ));
            }
            files.insert(file.to_string());
        }
        let mut out = Vec::new();
        for f in files {
            let p = dir.join(&f);
            if !p.is_file() {
                return Err(EngineError::load(&index, format!("shard {f} is missing")));
            }
            out.push(p);
        }
        if out.is_empty() {
            return Err(EngineError::load(&index, "weight_map is empty"));
        }
        return Ok(out);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(EngineError::load(
        dir,
        "no model.safetensors or model.safetensors.index.json",
    ))
}

/// Memory-map a file read-only.
fn mmap(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // SAFETY: the map is read-only and lives only while we copy tensors out of it; as with every
    // mmap-based loader, another process truncating the file meanwhile is not guarded against.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn st_dtype(path: &Path, name: &str, dt: StDtype) -> Result<DType> {
    match dt {
        StDtype::F32 => Ok(DType::F32),
        StDtype::F16 => Ok(DType::F16),
        StDtype::BF16 => Ok(DType::BF16),
        other => Err(EngineError::load(
            path,
            format!("tensor {name} has unsupported dtype {other:?} (supported: F32, F16, BF16)"),
        )),
    }
}

/// Read every tensor of one safetensors file into `out` (CPU, stored dtype).
fn read_safetensors(
    path: &Path,
    out: &mut HashMap<String, Tensor>,
    dtypes: &mut BTreeMap<String, usize>,
) -> Result<()> {
    let map = mmap(path)?;
    let st = SafeTensors::deserialize(&map)
        .map_err(|e| EngineError::load(path, format!("invalid safetensors file: {e}")))?;
    for (name, view) in st.tensors() {
        if is_ignored(&name) {
            continue;
        }
        let dtype = st_dtype(path, &name, view.dtype())?;
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| EngineError::load(path, format!("tensor {name}: {}", candle_msg(&e))))?;
        *dtypes.entry(format!("{:?}", view.dtype())).or_default() += 1;
        if out.insert(name.clone(), t).is_some() {
            return Err(EngineError::load(
                path,
                format!("tensor {name} appears in two shards"),
            ));
        }
    }
    Ok(())
}

/// Buffers some checkpoints carry that are not weights.
fn is_ignored(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

/// What `tokenizer_config.json` says (all optional).
#[derive(Debug, Default)]
pub struct TokenizerConfig {
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// A special token in `tokenizer_config.json`: a string or an AddedToken dict `{content: ..}`.
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string or a list of `{name, template}` (the `default` one is used,
/// else the first).
fn template_string(path: &Path, v: Option<&serde_json::Value>) -> Result<Option<String>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(items)) => {
            let named: Vec<(Option<&str>, Option<&str>)> = items
                .iter()
                .map(|it| {
                    (
                        it.get("name").and_then(|n| n.as_str()),
                        it.get("template").and_then(|n| n.as_str()),
                    )
                })
                .collect();
            let pick = named
                .iter()
                .find(|(n, _)| *n == Some("default"))
                .or_else(|| named.first())
                .and_then(|(_, t)| *t);
            match pick {
                Some(t) => Ok(Some(t.to_string())),
                None if items.is_empty() => Ok(None),
                None => Err(EngineError::load(
                    path,
                    "chat_template list has no usable template",
                )),
            }
        }
        Some(_) => Err(EngineError::load(
            path,
            "chat_template is neither a string nor a list",
        )),
    }
}

/// Read `tokenizer_config.json` (if present) and `chat_template.jinja` (used when the config
/// has no template).
pub fn read_tokenizer_config(dir: &Path) -> Result<TokenizerConfig> {
    let path = dir.join("tokenizer_config.json");
    let mut tc = TokenizerConfig::default();
    if path.is_file() {
        let json = read_json(&path)?;
        tc.chat_template = template_string(&path, json.get("chat_template"))?;
        tc.bos_token = token_string(json.get("bos_token"));
        tc.eos_token = token_string(json.get("eos_token"));
    }
    let jinja = dir.join("chat_template.jinja");
    if tc.chat_template.is_none() && jinja.is_file() {
        tc.chat_template = Some(read_text(&jinja)?);
    }
    Ok(tc)
}

/// EOS ids from `generation_config.json`, if any.
fn generation_eos(dir: &Path) -> Vec<u32> {
    let path = dir.join("generation_config.json");
    let Ok(json) = read_json(&path) else {
        return Vec::new();
    };
    json.get("eos_token_id")
        .and_then(|v| serde_json::from_value::<TokenIds>(v.clone()).ok())
        .map(|t| t.to_vec())
        .unwrap_or_default()
}

/// Load an HF folder (weights are checked against the config by the caller).
pub(crate) fn load_hf(dir: &Path) -> Result<LoadedModel> {
    let config = read_config(dir)?;
    let mut weights = HashMap::new();
    let mut dtypes = BTreeMap::new();
    for f in weight_files(dir)? {
        read_safetensors(&f, &mut weights, &mut dtypes)?;
    }
    let tc = read_tokenizer_config(dir)?;
    let tok_path = dir.join("tokenizer.json");
    let (tokenizer, note) = if tok_path.is_file() {
        let mut extra = config.eos_ids();
        extra.extend(generation_eos(dir));
        let t = Tokenizer::from_hf_file(
            &tok_path,
            tc.bos_token.clone(),
            tc.eos_token.clone(),
            &extra,
        )?;
        (Some(t), None)
    } else {
        (
            None,
            Some(format!(
                "missing tokenizer: no tokenizer.json in {}",
                dir.display()
            )),
        )
    };
    let chat_template = match &tc.chat_template {
        Some(src) => Some(
            ChatTemplate::new(
                src.clone(),
                tc.bos_token.as_deref(),
                tc.eos_token.as_deref(),
            )
            .map_err(|e| EngineError::load(dir.join("tokenizer_config.json"), e.to_string()))?,
        ),
        None => None,
    };
    Ok(LoadedModel {
        config,
        weights,
        tokenizer,
        chat_template,
        source: dir.to_path_buf(),
        tensor_dtypes: dtypes,
        tokenizer_note: note,
    })
}

/// Describe an HF folder from `config.json` and the safetensors headers.
pub(crate) fn inspect_hf(dir: &Path) -> Result<InspectReport> {
    let config = read_config(dir)?;
    let mut report = InspectReport::new(dir, ModelFormat::HfFolder, config.clone());
    let mut shapes_owned: Vec<(String, Vec<usize>)> = Vec::new();
    for f in weight_files(dir)? {
        let map = mmap(&f)?;
        let (_, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| EngineError::load(&f, format!("invalid safetensors header: {e}")))?;
        for (name, info) in meta.tensors() {
            if is_ignored(&name) {
                continue;
            }
            let n: u64 = info
                .shape
                .iter()
                .fold(1u64, |a, &d| a.saturating_mul(d as u64));
            report.param_count = report.param_count.saturating_add(n);
            report.tensor_count += 1;
            *report
                .dtypes
                .entry(format!("{:?}", info.dtype))
                .or_default() += 1;
            shapes_owned.push((name, info.shape.clone()));
        }
    }
    let shapes: HashMap<&str, Vec<usize>> = shapes_owned
        .iter()
        .map(|(n, s)| (n.as_str(), s.clone()))
        .collect();
    if let Err(e) = check_shapes(dir, &config, &shapes) {
        report.warnings.push(e.to_string());
    }
    let tc = read_tokenizer_config(dir)?;
    if dir.join("tokenizer.json").is_file() {
        report.tokenizer = Some("tokenizer.json".to_string());
    }
    report.chat_template = tc.chat_template.is_some();
    Ok(report)
}

//! Model-file loading: a Hugging Face folder (`config.json`, safetensors, `tokenizer.json`,
//! `tokenizer_config.json`) or a single GGUF file, converted to the engine's convention
//! (HF tensor names, HF rotate-half Q/K layout, CPU tensors; quantized weights dequantized to
//! f32, safetensors f16/bf16 kept as stored). Also [`inspect`], which reads metadata only.
pub mod embedded;
pub mod gguf;
pub mod hf;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::chat::ChatTemplate;
use crate::error::{EngineError, Result};
use crate::model::ModelConfig;
use crate::tokenizer::Tokenizer;

/// A model read from disk.
#[derive(Debug)]
pub struct LoadedModel {
    pub config: ModelConfig,
    /// HF tensor names -> CPU tensors (f32 after dequantization; f16/bf16 safetensors as stored).
    pub weights: HashMap<String, Tensor>,
    pub tokenizer: Option<Tokenizer>,
    /// The model's own chat template; `None` when it ships none (see
    /// [`LoadedModel::chat_template_or_fallback`]).
    pub chat_template: Option<ChatTemplate>,
    pub source: PathBuf,
    /// Number of tensors per stored dtype / quantization type (`"F32"`, `"BF16"`, `"Q4_1"`...).
    pub tensor_dtypes: BTreeMap<String, usize>,
    /// Why `tokenizer` is `None`, when it is.
    pub tokenizer_note: Option<String>,
}

impl LoadedModel {
    /// The tokenizer, or a load error naming the file and why there is none.
    pub fn require_tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            EngineError::load(
                &self.source,
                self.tokenizer_note
                    .clone()
                    .unwrap_or_else(|| "no tokenizer".into()),
            )
        })
    }

    /// The model's chat template, or the ChatML fallback ([`crate::chat::CHATML_FALLBACK`])
    /// rendered with the tokenizer's BOS/EOS strings.
    pub fn chat_template_or_fallback(&self) -> Result<ChatTemplate> {
        match &self.chat_template {
            Some(t) => Ok(t.clone()),
            None => {
                let tok = self.tokenizer.as_ref();
                ChatTemplate::chatml_fallback(
                    tok.and_then(|t| t.bos_token()),
                    tok.and_then(|t| t.eos_token()),
                )
            }
        }
    }

    /// Total number of stored weight elements.
    pub fn param_count(&self) -> u64 {
        self.weights.values().map(|t| t.elem_count() as u64).sum()
    }
}

/// On-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    HfFolder,
    Gguf,
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelFormat::HfFolder => "Hugging Face folder",
            ModelFormat::Gguf => "GGUF",
        })
    }
}

/// Decide the format: a directory (or a file inside one named `config.json` / `*.safetensors`)
/// is an HF folder; a `.gguf` file or a file starting with the GGUF magic is GGUF.
/// Returns the format and the path to load (the folder for HF).
pub fn detect_format(path: &Path) -> Result<(ModelFormat, PathBuf)> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.is_dir() {
        return Ok((ModelFormat::HfFolder, path.to_path_buf()));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "gguf" || has_gguf_magic(path) {
        return Ok((ModelFormat::Gguf, path.to_path_buf()));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "config.json" || ext == "safetensors" || name.ends_with(".safetensors.index.json") {
        if let Some(parent) = path.parent() {
            let dir = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            return Ok((ModelFormat::HfFolder, dir.to_path_buf()));
        }
    }
    Err(EngineError::load(
        path,
        "not a model: expected a Hugging Face folder (config.json + safetensors) or a .gguf file",
    ))
}

fn has_gguf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|_| &buf == b"GGUF")
        .unwrap_or(false)
}

/// Load a model from an HF folder or a GGUF file, check every tensor against the config, and
/// attach tokenizer and chat template when present.
pub fn load_model(path: &Path) -> Result<LoadedModel> {
    let (format, path) = detect_format(path)?;
    let mut m = match format {
        ModelFormat::HfFolder => hf::load_hf(&path)?,
        ModelFormat::Gguf => gguf::load_gguf(&path)?,
    };
    check_weights(&m.source, &m.config, &m.weights)?;
    if let Some(tok) = &m.tokenizer {
        // Configs may pad the embedding beyond the tokenizer, never the other way round.
        if tok.vocab_size() > m.config.vocab_size {
            return Err(EngineError::load(
                &m.source,
                format!(
                    "tokenizer has {} tokens but the embedding has only {} rows",
                    tok.vocab_size(),
                    m.config.vocab_size
                ),
            ));
        }
    }
    if let (Some(tok), Some(tmpl)) = (m.tokenizer.as_mut(), m.chat_template.as_ref()) {
        add_template_eos(tok, tmpl);
    }
    Ok(m)
}

/// A chat template that ends turns with `<|im_end|>` (ChatML) makes that token an EOS.
pub fn add_template_eos(tok: &mut Tokenizer, tmpl: &ChatTemplate) {
    for marker in ["<|im_end|>", "<|eot_id|>", "<|end|>"] {
        if tmpl.source().contains(marker) {
            if let Some(id) = tok.token_to_id(marker) {
                tok.add_eos_id(id);
            }
        }
    }
}

/// Upper bounds on config numbers, so a corrupt header cannot make us allocate absurd lists.
pub(crate) fn sanity_check(path: &Path, cfg: &ModelConfig) -> Result<()> {
    let big = [
        ("num_hidden_layers", cfg.num_hidden_layers, 4096),
        ("hidden_size", cfg.hidden_size, 1 << 20),
        ("intermediate_size", cfg.intermediate_size, 1 << 22),
        ("num_attention_heads", cfg.num_attention_heads, 1 << 14),
        ("num_key_value_heads", cfg.num_kv_heads(), 1 << 14),
        ("head_dim", cfg.head_dim(), 1 << 14),
        ("vocab_size", cfg.vocab_size, 1 << 24),
    ];
    for (name, v, max) in big {
        if v > max {
            return Err(EngineError::load(
                path,
                format!("{name} = {v} is implausibly large"),
            ));
        }
    }
    cfg.validate()
        .map_err(|e| EngineError::load(path, e.to_string()))
}

/// Every tensor the config implies, with its shape (candle order: `[out, in]`).
/// `lm_head.weight` is included only when embeddings are not tied.
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let hd = cfg.head_dim();
    let q = cfg.num_attention_heads * hd;
    let kv = cfg.num_kv_heads() * hd;
    let i = cfg.intermediate_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        if cfg.qkv_bias() {
            out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
            out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
            out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
        }
        if cfg.o_bias() {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

/// Check that every expected tensor is present with the expected shape, and that there are no
/// unexpected ones (a tied `lm_head.weight` is allowed if its shape is right).
pub fn check_weights(
    path: &Path,
    cfg: &ModelConfig,
    weights: &HashMap<String, Tensor>,
) -> Result<()> {
    let shapes: HashMap<&str, Vec<usize>> = weights
        .iter()
        .map(|(k, t)| (k.as_str(), t.dims().to_vec()))
        .collect();
    check_shapes(path, cfg, &shapes)
}

/// [`check_weights`] on names and shapes only (used by `inspect` too).
pub(crate) fn check_shapes(
    path: &Path,
    cfg: &ModelConfig,
    shapes: &HashMap<&str, Vec<usize>>,
) -> Result<()> {
    let expected = expected_tensors(cfg);
    let mut missing = Vec::new();
    for (name, shape) in &expected {
        match shapes.get(name.as_str()) {
            None => missing.push(name.clone()),
            Some(got) if got != shape => {
                return Err(EngineError::load(
                    path,
                    format!("tensor {name} has shape {got:?}, config implies {shape:?}"),
                ))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(EngineError::load(
            path,
            format!("missing tensors: {}", list_some(&missing)),
        ));
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut extra = Vec::new();
    for (name, got) in shapes {
        if known.contains(name) {
            continue;
        }
        if *name == "lm_head.weight" && cfg.tie_word_embeddings {
            let want = vec![cfg.vocab_size, cfg.hidden_size];
            if *got != want {
                return Err(EngineError::load(
                    path,
                    format!("tensor lm_head.weight has shape {got:?}, config implies {want:?}"),
                ));
            }
            continue;
        }
        extra.push(name.to_string());
    }
    if !extra.is_empty() {
        extra.sort();
        return Err(EngineError::load(
            path,
            format!("tensors not implied by the config: {}", list_some(&extra)),
        ));
    }
    Ok(())
}

/// A candle error as a one-line message: no backtrace, no path (our errors name the file), and
/// a plain word for a short read.
pub(crate) fn candle_msg(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } | E::WithPath { inner, .. } => candle_msg(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_msg(inner)),
        E::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "unexpected end of file (truncated?)".to_string()
        }
        other => other.to_string(),
    }
}

fn list_some(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" (and {} more)", names.len() - 5));
    }
    s
}

/// What `inspect` reports; built from headers and metadata only.
#[derive(Debug, Clone)]
pub struct InspectReport {
    pub source: PathBuf,
    pub format: ModelFormat,
    pub architecture: String,
    pub config: ModelConfig,
    pub num_layers: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub tied_embeddings: bool,
    pub param_count: u64,
    pub tensor_count: usize,
    /// Tensors per stored dtype / quantization type.
    pub dtypes: BTreeMap<String, usize>,
    /// A short description of the tokenizer, `None` when there is none.
    pub tokenizer: Option<String>,
    pub chat_template: bool,
    /// Problems found without failing (e.g. shape mismatches, an unsupported tokenizer).
    pub warnings: Vec<String>,
}

impl InspectReport {
    pub(crate) fn new(source: &Path, format: ModelFormat, config: ModelConfig) -> Self {
        InspectReport {
            source: source.to_path_buf(),
            format,
            architecture: config.model_type.clone(),
            num_layers: config.num_hidden_layers,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            num_heads: config.num_attention_heads,
            num_kv_heads: config.num_kv_heads(),
            head_dim: config.head_dim(),
            vocab_size: config.vocab_size,
            context_length: config.max_position_embeddings,
            tied_embeddings: config.tie_word_embeddings,
            config,
            param_count: 0,
            tensor_count: 0,
            dtypes: BTreeMap::new(),
            tokenizer: None,
            chat_template: false,
            warnings: Vec::new(),
        }
    }
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "source:        {} ({})",
            self.source.display(),
            self.format
        )?;
        writeln!(f, "architecture:  {}", self.architecture)?;
        writeln!(f, "layers:        {}", self.num_layers)?;
        writeln!(
            f,
            "hidden:        {} (mlp {})",
            self.hidden_size, self.intermediate_size
        )?;
        writeln!(
            f,
            "heads:         {} (kv {}, head_dim {})",
            self.num_heads, self.num_kv_heads, self.head_dim
        )?;
        writeln!(f, "vocab:         {}", self.vocab_size)?;
        writeln!(f, "context:       {}", self.context_length)?;
        writeln!(f, "rope theta:    {}", self.config.rope_theta)?;
        writeln!(
            f,
            "tied embed:    {}",
            if self.tied_embeddings { "yes" } else { "no" }
        )?;
        writeln!(
            f,
            "parameters:    {} ({})",
            self.param_count,
            human_count(self.param_count)
        )?;
        let dt: Vec<String> = self
            .dtypes
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        writeln!(
            f,
            "tensors:       {} [{}]",
            self.tensor_count,
            dt.join(", ")
        )?;
        writeln!(
            f,
            "tokenizer:     {}",
            self.tokenizer.as_deref().unwrap_or("none")
        )?;
        write!(
            f,
            "chat template: {}",
            if self.chat_template { "yes" } else { "no" }
        )?;
        for w in &self.warnings {
            write!(f, "\nwarning:       {w}")?;
        }
        Ok(())
    }
}

/// Describe a model without loading its weights: GGUF headers / safetensors headers and
/// metadata only.
pub fn inspect(path: &Path) -> Result<InspectReport> {
    let (format, path) = detect_format(path)?;
    match format {
        ModelFormat::HfFolder => hf::inspect_hf(&path),
        ModelFormat::Gguf => gguf::inspect_gguf(&path),
    }
}

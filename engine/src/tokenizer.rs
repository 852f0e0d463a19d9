//! Tokenizer wrapper over the `tokenizers` crate: loaded from a Hugging Face `tokenizer.json` or
//! built from GGUF metadata (byte-level BPE), with the model's BOS/EOS ids and an incremental
//! detokenizer for streaming text.
use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value as GgufValue;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{EngineError, Result};

/// GPT-2's split regex (also used after digit isolation by SmolLM / StarCoder).
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Isolates every digit (SmolLM2, StarCoder): applied before [`RE_GPT2`].
const RE_DIGIT: &str = r"\p{N}";
/// Llama 3 ("llama-bpe"): case-insensitive contractions, numbers in groups of up to 3.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2: like Llama 3 but single digits.
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regexes (applied in order, each on the pieces of the previous one) for a GGUF
/// `tokenizer.ggml.pre` value, and whether BPE should look whole words up before merging.
fn pre_tokenizer_regexes(pre: &str) -> Option<(Vec<&'static str>, bool)> {
    match pre {
        "gpt2" | "default" | "mpt" | "olmo" | "jais" => Some((vec![RE_GPT2], false)),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            Some((vec![RE_DIGIT, RE_GPT2], false))
        }
        "llama-bpe" | "llama3" | "llama-v3" => Some((vec![RE_LLAMA3], true)),
        "qwen2" | "stablelm2" | "hunyuan" => Some((vec![RE_QWEN2], false)),
        _ => None,
    }
}

/// A tokenizer with the model's special-token ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    pad_id: Option<u32>,
    /// Prepend BOS on `encode(.., true)` ourselves (GGUF `tokenizer.ggml.add_bos_token`);
    /// HF tokenizers do this through their own post-processor instead.
    add_bos: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    /// Number of ids (largest id + 1), cached: `tokenizers` rebuilds its vocabulary map to
    /// count it.
    vocab_size: usize,
}

/// Largest id + 1 over the model vocabulary and added tokens.
fn count_ids(inner: &tokenizers::Tokenizer) -> usize {
    inner
        .get_vocab(true)
        .values()
        .max()
        .map_or(0, |&m| m as usize + 1)
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Wrap an HF tokenizer; `bos_token` / `eos_token` are token strings (from
    /// `tokenizer_config.json`), `extra_eos` ids from `config.json` / `generation_config.json`.
    pub fn from_hf(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        extra_eos: &[u32],
    ) -> Self {
        let bos_id = bos_token.as_deref().and_then(|t| inner.token_to_id(t));
        let mut tok = Tokenizer {
            inner,
            bos_id,
            eos_ids: Vec::new(),
            pad_id: None,
            add_bos: false,
            bos_token,
            eos_token,
            vocab_size: 0,
        };
        tok.vocab_size = count_ids(&tok.inner);
        if let Some(id) = tok
            .eos_token
            .as_deref()
            .and_then(|t| tok.inner.token_to_id(t))
        {
            tok.add_eos_id(id);
        }
        for &id in extra_eos {
            tok.add_eos_id(id);
        }
        tok
    }

    /// Load `tokenizer.json`; the path is named in errors.
    pub fn from_hf_file(
        path: &Path,
        bos_token: Option<String>,
        eos_token: Option<String>,
        extra_eos: &[u32],
    ) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EngineError::load(path, format!("cannot parse tokenizer: {e}")))?;
        Ok(Self::from_hf(inner, bos_token, eos_token, extra_eos))
    }

    /// Build from GGUF `tokenizer.ggml.*` metadata. Returns `Ok(None)` when the file carries no
    /// tokenizer, and an error (naming `origin`) when it carries one we cannot build.
    pub fn from_gguf_metadata(
        md: &HashMap<String, GgufValue>,
        origin: &Path,
    ) -> Result<Option<Self>> {
        let err = |m: String| EngineError::load(origin, m);
        let Some(model) = md.get("tokenizer.ggml.model") else {
            return Ok(None);
        };
        let model = model
            .to_string()
            .map_err(|e| err(format!("tokenizer.ggml.model: {e}")))?;
        if model != "gpt2" {
            return Err(err(format!(
                "unsupported GGUF tokenizer model {model:?} (supported: \"gpt2\" byte-level BPE; \
                 sentencepiece \"llama\" vocabularies are not supported yet)"
            )));
        }
        let tokens =
            gguf_string_array(md, "tokenizer.ggml.tokens").map_err(|e| err(e.to_string()))?;
        let Some(tokens) = tokens else {
            return Err(err("tokenizer.ggml.tokens is missing".into()));
        };
        let merges = gguf_string_array(md, "tokenizer.ggml.merges")
            .map_err(|e| err(e.to_string()))?
            .unwrap_or_default();
        let types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(vs)) => vs.iter().map(|v| gguf_int(v).unwrap_or(1)).collect(),
            Some(_) => return Err(err("tokenizer.ggml.token_type is not an array".into())),
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(err(format!(
                "tokenizer.ggml.token_type has {} entries but there are {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let pre = match md.get("tokenizer.ggml.pre") {
            Some(v) => v
                .to_string()
                .map_err(|e| err(format!("tokenizer.ggml.pre: {e}")))?
                .clone(),
            None => "default".to_string(),
        };
        let Some((regexes, ignore_merges)) = pre_tokenizer_regexes(&pre) else {
            return Err(err(format!(
                "unsupported GGUF pre-tokenizer {pre:?} (supported: gpt2, default, smollm, \
                 starcoder, llama-bpe, qwen2, ...)"
            )));
        };

        let mut vocab = Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| err("vocabulary too large".into()))?;
            // Duplicate token strings occur in some vocabularies; the first id wins.
            vocab.entry(t.clone()).or_insert(id);
        }
        let mut merge_pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return Err(err(format!(
                    "tokenizer.ggml.merges[{i}] = {m:?} has no space"
                )));
            };
            merge_pairs.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merge_pairs)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| err(format!("cannot build BPE from GGUF vocabulary: {e}")))?;

        let mut pre_tokenizers: Vec<PreTokenizerWrapper> = Vec::new();
        for re in &regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("bad split regex: {e}")))?;
            pre_tokenizers.push(split.into());
        }
        pre_tokenizers.push(ByteLevel::new(false, false, false).into());

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.with_normalizer(None::<NormalizerWrapper>);

        // Control (3) tokens are special; user-defined (4) tokens are matched whole but decoded.
        let mut specials = Vec::new();
        let mut added = Vec::new();
        for (t, ty) in tokens.iter().zip(&types) {
            match ty {
                3 => specials.push(AddedToken::from(t.clone(), true)),
                4 => added.push(AddedToken::from(t.clone(), false)),
                _ => {}
            }
        }
        inner.add_special_tokens(&specials);
        inner.add_tokens(&added);

        let id_of = |key: &str| -> Result<Option<u32>> {
            match md.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = gguf_int(v).ok_or_else(|| err(format!("{key} is not an integer")))?;
                    // Some converters write -1 / u32::MAX for "none".
                    match u32::try_from(id) {
                        Ok(id) if (id as usize) < tokens.len() => Ok(Some(id)),
                        _ => Ok(None),
                    }
                }
            }
        };
        let bos_id = id_of("tokenizer.ggml.bos_token_id")?;
        let eos_id = id_of("tokenizer.ggml.eos_token_id")?;
        let eot_id = id_of("tokenizer.ggml.eot_token_id")?;
        let pad_id = id_of("tokenizer.ggml.padding_token_id")?;
        let add_bos = match md.get("tokenizer.ggml.add_bos_token") {
            Some(GgufValue::Bool(b)) => *b,
            _ => false,
        };
        let name = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize).cloned());
        let mut tok = Tokenizer {
            inner,
            bos_id,
            eos_ids: Vec::new(),
            pad_id,
            add_bos,
            bos_token: name(bos_id),
            eos_token: name(eos_id),
            vocab_size: 0,
        };
        tok.vocab_size = count_ids(&tok.inner);
        for id in [eos_id, eot_id].into_iter().flatten() {
            tok.add_eos_id(id);
        }
        Ok(Some(tok))
    }

    /// Token ids of `text`. Special-token strings in the text are matched as special tokens.
    /// `add_special` applies the tokenizer's post-processing (e.g. a BOS token).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special).map_err(tok_err)?;
        let ids = enc.get_ids();
        if add_special && self.add_bos {
            if let Some(bos) = self.bos_id {
                if ids.first() != Some(&bos) {
                    let mut out = Vec::with_capacity(ids.len() + 1);
                    out.push(bos);
                    out.extend_from_slice(ids);
                    return Ok(out);
                }
            }
        }
        Ok(ids.to_vec())
    }

    /// Text of `ids`; `skip_special` drops special tokens. Unknown ids are an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let n = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(EngineError::Tokenizer(format!(
                "token id {bad} out of range (vocabulary size {n})"
            )));
        }
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }
    /// All ids that end generation (deduplicated, in discovery order).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }
    /// BOS token string as passed to chat templates.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }
    /// EOS token string as passed to chat templates.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
    /// Add an id that ends generation (no-op when already present).
    pub fn add_eos_id(&mut self, id: u32) {
        if !self.eos_ids.contains(&id) {
            self.eos_ids.push(id);
        }
    }
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
    /// Number of ids (largest id + 1), added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_vocabulary()
            .simple_id_to_token(id)
            .is_some_and(|t| self.inner.get_added_vocabulary().is_special_token(&t))
    }
    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
    /// A streaming detokenizer; feed it ids one by one.
    pub fn incremental_decoder(&self, skip_special: bool) -> IncrementalDecoder {
        IncrementalDecoder {
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }
}

/// Streaming detokenizer: turns ids into text pieces as soon as they form complete UTF-8
/// characters, so a multi-byte character split over byte-level tokens is emitted once whole.
///
/// It keeps a short window of ids: the text already emitted for the window's prefix is
/// subtracted from the decoding of the whole window (decoders such as sentencepiece's depend on
/// neighbouring tokens, so ids are not decoded one at a time).
#[derive(Debug, Clone)]
pub struct IncrementalDecoder {
    skip_special: bool,
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl IncrementalDecoder {
    /// Feed one id; returns new text, or `None` while a character is still incomplete.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = tok.decode(&self.ids, self.skip_special)?;
        if text.len() > self.prefix.len() && !text.ends_with('\u{FFFD}') {
            let new = match text.get(self.prefix.len()..) {
                Some(s) if text.starts_with(&self.prefix) => s.to_string(),
                // The decoding of the window changed what was already emitted (should not
                // happen for byte-level BPE); emit the whole new decoding difference as is.
                _ => text.chars().skip(self.prefix.chars().count()).collect(),
            };
            // Restart the window at the ids that produced the prefix of the next step.
            let keep_from = self.prefix_index;
            self.ids.drain(..keep_from);
            self.prefix = tok.decode(&self.ids, self.skip_special)?;
            self.prefix_index = self.ids.len();
            Ok(Some(new))
        } else {
            Ok(None)
        }
    }

    /// Emit whatever is pending (an incomplete character comes out as U+FFFD) and reset.
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        let text = tok.decode(&self.ids, self.skip_special)?;
        let out = if text.len() > self.prefix.len() {
            text.get(self.prefix.len()..).map(|s| s.to_string())
        } else {
            None
        };
        self.ids.clear();
        self.prefix.clear();
        self.prefix_index = 0;
        Ok(out)
    }
}

/// An integer metadata value of any width.
pub(crate) fn gguf_int(v: &GgufValue) -> Option<i64> {
    Some(match v {
        GgufValue::U8(x) => *x as i64,
        GgufValue::I8(x) => *x as i64,
        GgufValue::U16(x) => *x as i64,
        GgufValue::I16(x) => *x as i64,
        GgufValue::U32(x) => *x as i64,
        GgufValue::I32(x) => *x as i64,
        GgufValue::U64(x) => i64::try_from(*x).ok()?,
        GgufValue::I64(x) => *x,
        _ => return None,
    })
}

/// A GGUF metadata value of the wrong type.
#[derive(Debug, thiserror::Error)]
enum MetadataError {
    #[error("{key}[{index}] is not a string")]
    NotString { key: String, index: usize },
    #[error("{key} is not an array")]
    NotArray { key: String },
}

/// A string-array metadata value; `Ok(None)` when absent.
fn gguf_string_array(
    md: &HashMap<String, GgufValue>,
    key: &str,
) -> std::result::Result<Option<Vec<String>>, MetadataError> {
    match md.get(key) {
        None => Ok(None),
        Some(GgufValue::Array(vs)) => vs
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                GgufValue::String(s) => Ok(s.clone()),
                _ => Err(MetadataError::NotString {
                    key: key.to_string(),
                    index: i,
                }),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(MetadataError::NotArray {
            key: key.to_string(),
        }),
    }
}

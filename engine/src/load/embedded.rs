//! The embedded default model: a small HF folder (`assets/model/`) compiled into the binary, so
//! `cahl-tui train` works on a fresh clone with no download. It is produced by
//! `cahl-tui pretrain` (see the README); when the folder is absent at build time the binary
//! builds without it and [`embedded_default`] says how to make it.
//!
//! Loading writes the files once into a content-addressed folder under the system temp dir
//! (`cahl-tui-embedded-<hash>/`) and loads that folder like any other HF model.
use std::path::{Path, PathBuf};

use super::{load_model, LoadedModel};
use crate::error::{EngineError, Result};
use cahl_sessions::fsutil::atomic_write;

/// The `--model` / `[model].path` value that names the embedded model (as does an empty path).
pub const EMBEDDED: &str = "embedded";

#[cfg(embedded_model)]
macro_rules! asset {
    ($f:literal) => {
        (
            $f,
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/model/", $f)).as_slice(),
        )
    };
}

#[cfg(embedded_model)]
const FILES: &[(&str, &[u8])] = &[
    asset!("config.json"),
    asset!("model.safetensors"),
    asset!("tokenizer.json"),
    asset!("tokenizer_config.json"),
];
#[cfg(not(embedded_model))]
const FILES: &[(&str, &[u8])] = &[];

/// Whether this build carries the embedded model.
pub fn available() -> bool {
    !FILES.is_empty()
}

/// True when `spec` names the embedded model (`""` or `"embedded"`).
pub fn is_embedded(spec: &str) -> bool {
    spec.is_empty() || spec == EMBEDDED
}

/// Total bytes of the embedded files (0 without them).
pub fn size_bytes() -> usize {
    FILES.iter().map(|(_, b)| b.len()).sum()
}

fn fnv64(parts: &[(&str, &[u8])]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (name, bytes) in parts {
        for b in name.as_bytes().iter().chain(bytes.iter()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Write the embedded files to their content-addressed folder (once) and return it.
pub fn materialize() -> Result<PathBuf> {
    if !available() {
        return Err(EngineError::load(
            EMBEDDED,
            "this build has no embedded default model (assets/model/ was missing at build time); \
             make one with `cahl-tui pretrain` and rebuild, or pass --model PATH",
        ));
    }
    let dir = std::env::temp_dir().join(format!("cahl-tui-embedded-{:016x}", fnv64(FILES)));
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::Io {
        path: dir.clone(),
        source: e,
    })?;
    for (name, bytes) in FILES {
        let p = dir.join(name);
        let fresh = std::fs::metadata(&p)
            .map(|m| m.len() == bytes.len() as u64)
            .unwrap_or(false);
        if !fresh {
            atomic_write(&p, bytes)?;
        }
    }
    Ok(dir)
}

/// Load the embedded default model.
pub fn embedded_default() -> Result<LoadedModel> {
    let dir = materialize()?;
    let mut m = load_model(&dir)?;
    m.source = PathBuf::from(EMBEDDED);
    Ok(m)
}

/// Load `spec`: the embedded model for `""`/`"embedded"`, else the HF folder or GGUF file.
pub fn load_spec(spec: &str) -> Result<LoadedModel> {
    if is_embedded(spec) {
        embedded_default()
    } else {
        load_model(Path::new(spec))
    }
}

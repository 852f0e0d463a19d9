//! Small file-system helpers for crash-safe writes.
use std::io::Write;
use std::path::Path;

use crate::error::{EngineError, Result};

fn io(path: &Path) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// fsync `tmp`, rename it over `dst`, then fsync the directory.
pub fn fsync_rename(tmp: &Path, dst: &Path) -> Result<()> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(tmp))?;
    std::fs::rename(tmp, dst).map_err(io(dst))?;
    if let Some(parent) = dst.parent() {
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Write `bytes` to `path` via a temp file + fsync + rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
    }
    fsync_rename(&tmp, path)
}

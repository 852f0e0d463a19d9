//! Crash-safe file-system helpers: the one atomic-write helper of the workspace ([`atomic_write`]).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result};

/// Name of the temporary file used while atomically replacing `path`: `.<name>.tmp` in the same
/// directory (same file system, so the rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Atomically replaces `path` with `bytes`: write a temp file, fsync it, rename over `path`,
/// fsync the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |tmp| {
        let mut f = File::create(tmp).map_err(io_err(tmp))?;
        f.write_all(bytes).map_err(io_err(tmp))
    })
}

/// Atomically replaces `path` with what `write` writes to the temp path it is given (for
/// writers that want a path, like a safetensors save): then fsync, rename over `path`, fsync
/// the directory. A failed `write` leaves `path` untouched.
pub fn atomic_write_with<E: From<crate::SessionError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let tmp = temp_sibling(path);
    write(&tmp)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(sync_dir(parent_of(path))?)
}

/// The parent directory of `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory so that renames and creations inside it are durable. A no-op on
/// platforms where directories cannot be opened as files.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = File::open(dir).map_err(io_err(dir))?;
        f.sync_all().map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
    }
    Ok(())
}

/// Fsyncs every file and directory under `dir` (depth first), then `dir` itself.
pub fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            sync_tree(&path)?;
        } else if ft.is_file() {
            let f = File::open(&path).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
    }
    sync_dir(dir)
}

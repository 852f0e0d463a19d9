//! JSON Lines primitives: torn-tail repair, step truncation and an incremental line scanner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{io_err, Result};
use crate::fsutil::{parent_of, sync_dir, temp_sibling};

const CHUNK: u64 = 64 * 1024;

/// What [`repair_tail`] cut from the end of a JSONL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailRepair {
    /// The repaired file.
    pub file: PathBuf,
    /// Bytes removed from the end.
    pub bytes_cut: u64,
    /// Lines (complete or partial) removed from the end.
    pub lines_cut: usize,
}

/// True if `line` (without its newline) is one syntactically valid JSON object.
pub(crate) fn is_json_object(line: &[u8]) -> bool {
    starts_with_brace(line) && serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok()
}

/// True if the first non-whitespace byte of `line` is `{`.
pub(crate) fn starts_with_brace(line: &[u8]) -> bool {
    line.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// Position of the last `\n` strictly before byte `end`, scanning backwards in chunks.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    let mut hi = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let n = (hi - lo) as usize;
        file.seek(SeekFrom::Start(lo))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Cuts a torn tail from a JSONL file written by a process that may have been killed.
///
/// Repeatedly removes, from the end: bytes after the last newline (an incomplete line), and a
/// last complete line that is not a valid JSON object (e.g. a garbled or zero-filled block).
/// Stops at the first valid last line. Only reads the end of the file, so it is cheap on large
/// files. Fsyncs the file if anything was cut. A missing file is not an error (nothing cut).
pub fn repair_tail(path: &Path) -> Result<TailRepair> {
    let mut report = TailRepair {
        file: path.to_path_buf(),
        bytes_cut: 0,
        lines_cut: 0,
    };
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(io_err(path)(e)),
    };
    let orig_len = file.metadata().map_err(io_err(path))?.len();
    let mut len = orig_len;
    let mut last = [0u8; 1];
    while len > 0 {
        file.seek(SeekFrom::Start(len - 1)).map_err(io_err(path))?;
        file.read_exact(&mut last).map_err(io_err(path))?;
        if last[0] != b'\n' {
            // Incomplete line: cut everything after the previous newline.
            let cut_to = rfind_newline(&mut file, len)
                .map_err(io_err(path))?
                .map_or(0, |p| p + 1);
            len = cut_to;
            report.lines_cut += 1;
            continue;
        }
        let start = rfind_newline(&mut file, len - 1)
            .map_err(io_err(path))?
            .map_or(0, |p| p + 1);
        let mut line = vec![0u8; (len - 1 - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
        file.read_exact(&mut line).map_err(io_err(path))?;
        if is_json_object(&line) {
            break;
        }
        len = start;
        report.lines_cut += 1;
    }
    if len != orig_len {
        file.set_len(len).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        report.bytes_cut = orig_len - len;
    }
    Ok(report)
}

#[derive(Deserialize)]
struct StepOnly {
    #[serde(default)]
    step: Option<u64>,
}

/// Removes every line whose `step` is greater than `step` from a JSONL file; returns how many
/// lines were removed.
///
/// Lines without a readable `step` are kept. An incomplete last line (no newline) is removed. If
/// the removed lines form a suffix of the file (the normal case: steps only grow), the file is
/// truncated in place; otherwise it is rewritten atomically (temp + fsync + rename). Either way
/// the result is fsynced. A missing file is not an error.
pub fn truncate_after_step(path: &Path, step: u64) -> Result<usize> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut first_drop: Option<u64> = None;
    let mut kept_after_drop = false;
    let mut dropped = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        let drop = !complete || line_step(&buf).is_some_and(|s| s > step);
        if drop {
            dropped += 1;
            first_drop.get_or_insert(offset);
        } else if first_drop.is_some() {
            kept_after_drop = true;
        }
        offset += n as u64;
    }
    let Some(cut) = first_drop else {
        return Ok(0);
    };
    if !kept_after_drop {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        f.set_len(cut).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
        return Ok(dropped);
    }
    rewrite_filtered(path, step)?;
    Ok(dropped)
}

fn line_step(line: &[u8]) -> Option<u64> {
    serde_json::from_slice::<StepOnly>(line)
        .ok()
        .and_then(|s| s.step)
}

fn rewrite_filtered(path: &Path, step: u64) -> Result<()> {
    let tmp = temp_sibling(path);
    {
        let src = File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::with_capacity(256 * 1024, src);
        let out = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut writer = io::BufWriter::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            let complete = buf.last() == Some(&b'\n');
            if complete && line_step(&buf).is_none_or(|s| s <= step) {
                writer.write_all(&buf).map_err(io_err(&tmp))?;
            }
        }
        let out = writer
            .into_inner()
            .map_err(|e| io_err(&tmp)(e.into_error()))?;
        out.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(parent_of(path))
}

/// One complete line found by [`LineScanner::scan`].
pub(crate) struct Line<'a> {
    /// 1-based line number.
    pub number: usize,
    /// Byte offset of the line's first byte.
    pub offset: u64,
    /// The line without its trailing newline.
    pub bytes: &'a [u8],
}

/// Result of a [`LineScanner::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanOutcome {
    /// The file does not exist (yet).
    Missing,
    /// Scanned; `reset` is true if the file was truncated or replaced since the last scan and
    /// was re-read from the beginning.
    Scanned {
        /// See above.
        reset: bool,
    },
}

/// Incremental reader of complete lines: each scan continues where the previous one stopped and
/// never consumes an incomplete last line.
#[derive(Debug, Clone)]
pub(crate) struct LineScanner {
    /// Offset just after the last complete line consumed.
    pub offset: u64,
    /// Number of the next line (1-based).
    pub next_line: usize,
    /// Bytes after the last newline at the end of the last scan (an incomplete line).
    pub pending: u64,
    identity: Option<(u64, u64)>,
}

#[cfg(unix)]
fn file_identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(_meta: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

impl Default for LineScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl LineScanner {
    /// A scanner at the start of a file.
    pub fn new() -> Self {
        LineScanner {
            offset: 0,
            next_line: 1,
            pending: 0,
            identity: None,
        }
    }

    fn restart(&mut self) {
        self.offset = 0;
        self.next_line = 1;
        self.pending = 0;
    }

    /// Reads the complete lines appended since the last scan and passes them to `on_line`.
    ///
    /// Detects a truncated or replaced file (shorter than the consumed offset, different inode,
    /// or the byte before the consumed offset is no longer a newline) and then starts over from
    /// the beginning, reporting `reset: true`.
    pub fn scan(
        &mut self,
        path: &Path,
        mut on_line: impl FnMut(Line<'_>),
    ) -> io::Result<ScanOutcome> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ScanOutcome::Missing),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let identity = file_identity(&meta);
        let mut reset = false;
        if self.offset > 0 {
            let mut replaced = meta.len() < self.offset
                || (identity.is_some() && self.identity.is_some() && identity != self.identity);
            if !replaced {
                let mut b = [0u8; 1];
                file.seek(SeekFrom::Start(self.offset - 1))?;
                file.read_exact(&mut b)?;
                replaced = b[0] != b'\n';
            }
            if replaced {
                self.restart();
                reset = true;
            }
        }
        self.identity = identity;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut buf = Vec::new();
        self.pending = 0;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            if buf.last() != Some(&b'\n') {
                self.pending = n as u64;
                break;
            }
            on_line(Line {
                number: self.next_line,
                offset: self.offset,
                bytes: &buf[..n - 1],
            });
            self.offset += n as u64;
            self.next_line += 1;
        }
        Ok(ScanOutcome::Scanned { reset })
    }
}

//! JSON Lines primitives: repair of damaged files, step truncation and an incremental line
//! scanner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{io_err, Result, SessionError};
use crate::fsutil::{parent_of, sync_dir, temp_sibling};

/// True if the first non-whitespace byte of `line` is `{`.
pub(crate) fn starts_with_brace(line: &[u8]) -> bool {
    line.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// What kind of damage [`repair`] removed from a JSONL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairKind {
    /// The lines after the last record: an incomplete last line (no `\n`) and complete lines
    /// that are not JSON objects (e.g. a zero-filled block after a power loss). A write cut
    /// short by a crash; the lines are cut.
    TornTail,
    /// Lines that are not JSON objects between records. They are removed.
    GarbageLines,
    /// No line of the file is a JSON object. A copy of the file is kept
    /// ([`JsonlRepair::backup`]), then the file is emptied.
    Unreadable,
}

/// One repair made by [`repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlRepair {
    /// The repaired file.
    pub file: PathBuf,
    /// What was wrong.
    pub kind: RepairKind,
    /// The removed lines, as inclusive ranges of 1-based line numbers in the file as it was
    /// before the repair (an incomplete last line counts as a line).
    pub lines: Vec<(usize, usize)>,
    /// Bytes removed.
    pub bytes_cut: u64,
    /// For [`RepairKind::Unreadable`]: the copy of the file as it was (`<file>.corrupt-<n>`).
    pub backup: Option<PathBuf>,
}

impl JsonlRepair {
    /// How many lines were removed.
    pub fn line_count(&self) -> usize {
        self.lines.iter().map(|(a, b)| b - a + 1).sum()
    }
}

/// `5`, `5-7`, `5-7, 9`: line or step numbers given as inclusive ranges.
pub(crate) fn format_ranges(ranges: &[(usize, usize)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for JsonlRepair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.line_count();
        let s = if n == 1 { "" } else { "s" };
        let lines = format_ranges(&self.lines);
        let (file, bytes) = (self.file.display(), self.bytes_cut);
        match self.kind {
            RepairKind::TornTail => write!(
                f,
                "{file}: cut a torn last write (line{s} {lines}, {bytes} bytes)"
            ),
            RepairKind::GarbageLines => write!(
                f,
                "{file}: removed {n} unreadable line{s} between records (line{s} {lines}, \
                 {bytes} bytes)"
            ),
            RepairKind::Unreadable => {
                write!(
                    f,
                    "{file}: no readable record in {n} line{s} ({bytes} bytes); emptied it"
                )?;
                if let Some(b) = &self.backup {
                    write!(f, " after keeping a copy in {}", b.display())?;
                }
                Ok(())
            }
        }
    }
}

/// What [`repair`] did to one file, and what remains in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonlCheck {
    /// The repairs made (empty if the file was intact or missing).
    pub repairs: Vec<JsonlRepair>,
    /// The distinct `step` values of the records left in the file, ascending.
    pub steps: Vec<u64>,
}

/// A run of consecutive bad lines: lines `first_line..=last_line`, bytes `start..end`.
#[derive(Debug, Clone, Copy)]
struct BadSpan {
    first_line: usize,
    last_line: usize,
    start: u64,
    end: u64,
}

#[derive(Deserialize)]
struct StepProbe {
    #[serde(default)]
    step: Option<serde_json::Value>,
}

/// Checks every line of a JSONL file written by a process that may have been killed, and
/// repairs it so that every line is a JSON object. A line is good when it is complete (ends in
/// `\n`) and is one JSON object; everything else is removed, and each removal is reported:
///
/// - bad lines after the last good one are a [`RepairKind::TornTail`]: the file is cut after
///   the last good line;
/// - bad lines between good ones are [`RepairKind::GarbageLines`]: the file is rewritten
///   atomically without them (temp file, fsync, rename);
/// - a file with complete lines but no good one is [`RepairKind::Unreadable`]: it is copied to
///   `<file>.corrupt-<n>` (the first free `n` from 1), then emptied. (A file holding only an
///   incomplete line is a torn tail: the first write was cut short.)
///
/// Reads the whole file once (twice when lines in the middle are removed). Fsyncs what it
/// changes. A missing file is not an error (nothing to repair, no steps).
pub fn repair(path: &Path) -> Result<JsonlCheck> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(JsonlCheck::default()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0usize;
    let mut steps = std::collections::BTreeSet::new();
    let mut bad: Vec<BadSpan> = Vec::new();
    let mut good_lines = 0usize;
    let mut complete_lines = 0usize;
    // Line number and end offset of the last good line.
    let mut last_good = (0usize, 0u64);
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let end = offset + n as u64;
        let complete = buf.last() == Some(&b'\n');
        complete_lines += usize::from(complete);
        let probe = if complete && starts_with_brace(&buf) {
            serde_json::from_slice::<StepProbe>(&buf).ok()
        } else {
            None
        };
        match probe {
            Some(p) => {
                good_lines += 1;
                last_good = (line_no, end);
                if let Some(s) = p.step.as_ref().and_then(serde_json::Value::as_u64) {
                    steps.insert(s);
                }
            }
            None => match bad.last_mut() {
                Some(span) if span.last_line + 1 == line_no => {
                    span.last_line = line_no;
                    span.end = end;
                }
                _ => bad.push(BadSpan {
                    first_line: line_no,
                    last_line: line_no,
                    start: offset,
                    end,
                }),
            },
        }
        offset = end;
    }
    let steps: Vec<u64> = steps.into_iter().collect();
    if bad.is_empty() {
        return Ok(JsonlCheck {
            repairs: Vec::new(),
            steps,
        });
    }
    let repair = |kind, spans: &[BadSpan], backup| JsonlRepair {
        file: path.to_path_buf(),
        kind,
        lines: spans.iter().map(|s| (s.first_line, s.last_line)).collect(),
        bytes_cut: spans.iter().map(|s| s.end - s.start).sum(),
        backup,
    };
    if good_lines == 0 && complete_lines > 0 {
        let backup = backup_copy(path)?;
        cut_to(path, 0)?;
        // Every line is bad: `bad` is the single span of lines 1..=line_no.
        return Ok(JsonlCheck {
            repairs: vec![repair(RepairKind::Unreadable, &bad, Some(backup))],
            steps,
        });
    }
    // Bad lines after the last good one form at most one span (they are consecutive).
    let split = bad
        .iter()
        .position(|s| s.first_line > last_good.0)
        .unwrap_or(bad.len());
    let (middle, tail) = bad.split_at(split);
    let mut repairs = Vec::new();
    if !middle.is_empty() {
        rewrite_without(path, middle, last_good.1)?;
        repairs.push(repair(RepairKind::GarbageLines, middle, None));
    } else {
        cut_to(path, last_good.1)?;
    }
    if !tail.is_empty() {
        repairs.push(repair(RepairKind::TornTail, tail, None));
    }
    Ok(JsonlCheck { repairs, steps })
}

/// Truncates `path` to `len` bytes and fsyncs it.
fn cut_to(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    f.set_len(len).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

const MAX_BACKUPS: u32 = 10_000;

/// Copies `path` to the first free `<path>.corrupt-<n>` (n = 1, 2, ...), fsynced.
fn backup_copy(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 1..=MAX_BACKUPS {
        let dst = path.with_file_name(format!("{name}.corrupt-{n}"));
        let mut out = match OpenOptions::new().write(true).create_new(true).open(&dst) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(&dst)(e)),
        };
        let mut src = File::open(path).map_err(io_err(path))?;
        io::copy(&mut src, &mut out).map_err(io_err(&dst))?;
        out.sync_all().map_err(io_err(&dst))?;
        sync_dir(parent_of(path))?;
        return Ok(dst);
    }
    Err(SessionError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::AlreadyExists, "too many .corrupt-N copies"),
    })
}

/// Rewrites `path` atomically without the byte ranges of `spans` (sorted, disjoint) and without
/// anything from `keep_end` on.
fn rewrite_without(path: &Path, spans: &[BadSpan], keep_end: u64) -> Result<()> {
    let tmp = temp_sibling(path);
    {
        let src = File::open(path).map_err(io_err(path))?;
        let mut src = BufReader::with_capacity(256 * 1024, src);
        let out = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = io::BufWriter::new(out);
        let mut pos = 0u64;
        for s in spans
            .iter()
            .map(|s| (s.start, s.end))
            .chain([(keep_end, keep_end)])
        {
            let (start, end) = s;
            let keep = start - pos;
            io::copy(&mut (&mut src).take(keep), &mut out).map_err(io_err(&tmp))?;
            io::copy(&mut (&mut src).take(end - start), &mut io::sink()).map_err(io_err(path))?;
            pos = end;
        }
        let out = out.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        out.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(parent_of(path))
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

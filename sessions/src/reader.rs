//! Tolerant session reader for replay and live views.
//!
//! [`SessionReader::open`] accepts a session directory or a bare `trajectories.jsonl` /
//! `metrics.jsonl`. It only fails when the path does not exist or cannot be read at all; every
//! problem inside (missing files, corrupt lines, torn tails) becomes a [`Problem`] next to the
//! records that could be read.
//!
//! Metrics are loaded fully (one small line per step). Trajectories are *indexed*: each good line
//! gets a [`TrajectoryEntry`] with its byte offset, length and a [`TrajectorySummary`], and the
//! full record is loaded on demand with [`SessionReader::trajectory`]. [`SessionReader::poll_new`]
//! follows files that are still being written.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{io_err, Result, SessionError};
use crate::jsonl::{starts_with_brace, Line, LineScanner, ScanOutcome};
use crate::layout::{self, CONFIG_FILE, METRICS_FILE, RUN_INFO_FILE, TRAJECTORIES_FILE};
use crate::records::{
    CheckpointRecord, MetricsRecord, RunInfo, SummaryWithoutShape, TrajectoryRecord,
    TrajectorySummary,
};

/// What kind of path was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A session directory.
    SessionDir,
    /// A bare metrics file (name contains `metrics`).
    MetricsFile,
    /// A bare trajectories file (any other file).
    TrajectoriesFile,
}

/// Category of a [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// An expected session file does not exist.
    MissingFile,
    /// A file exists but could not be read.
    Unreadable,
    /// A file or line is not valid JSON/TOML or does not match the record schema.
    Corrupt,
    /// The last line has no trailing newline (a torn write, or still being written).
    TornTail,
    /// A followed file was truncated or replaced (e.g. by a resume) and was re-read from the start.
    Reset,
}

/// Something wrong in a session that did not prevent reading the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file concerned.
    pub file: PathBuf,
    /// 1-based line number, when the problem is about one line.
    pub line: Option<usize>,
    /// Category.
    pub kind: ProblemKind,
    /// Human-readable description.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Index entry of one good line of a trajectories file.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryEntry {
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line in the file.
    pub offset: u64,
    /// Length of the line in bytes, without the newline.
    pub len: u64,
    /// Cheaply parsed summary.
    pub summary: TrajectorySummary,
}

/// What [`SessionReader::poll_new`] found since the previous call (or since opening).
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// `metrics.jsonl` was truncated/replaced: discard previously returned metrics; `metrics`
    /// holds everything re-read.
    pub metrics_reset: bool,
    /// `trajectories.jsonl` was truncated/replaced: the index was rebuilt from scratch.
    pub trajectories_reset: bool,
    /// Newly read metrics records.
    pub metrics: Vec<MetricsRecord>,
    /// Range of new entries in [`SessionReader::entries`].
    pub new_entries: Range<usize>,
    /// Fully parsed new trajectories, as `(entry index, record)`; entries whose full parse
    /// failed are missing here and have a [`Problem`].
    pub trajectories: Vec<(usize, TrajectoryRecord)>,
    /// Newly committed checkpoints.
    pub checkpoints: Vec<CheckpointRecord>,
    /// New problems (also appended to [`SessionReader::problems`]).
    pub problems: Vec<Problem>,
}

impl Update {
    /// True if nothing new was found.
    pub fn is_empty(&self) -> bool {
        !self.metrics_reset
            && !self.trajectories_reset
            && self.metrics.is_empty()
            && self.new_entries.is_empty()
            && self.checkpoints.is_empty()
            && self.problems.is_empty()
    }
}

/// Reads a session (or a bare JSONL file) tolerantly; see the module docs.
#[derive(Debug)]
pub struct SessionReader {
    path: PathBuf,
    kind: SourceKind,
    metrics_path: Option<PathBuf>,
    trajectories_path: Option<PathBuf>,
    config_toml: Option<String>,
    config: Option<toml::Table>,
    run_info: Option<RunInfo>,
    checkpoints: Vec<CheckpointRecord>,
    metrics: Vec<MetricsRecord>,
    entries: Vec<TrajectoryEntry>,
    problems: Vec<Problem>,
    metrics_scan: LineScanner,
    traj_scan: LineScanner,
}

impl SessionReader {
    /// Opens a session directory or a bare `trajectories.jsonl` / `metrics.jsonl` (a file whose
    /// name contains `metrics` is read as metrics, any other file as trajectories).
    ///
    /// Fails only if `path` does not exist, cannot be read, or is neither file nor directory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let meta = fs::metadata(&path).map_err(io_err(&path))?;
        let (kind, metrics_path, trajectories_path) = if meta.is_dir() {
            fs::read_dir(&path).map_err(io_err(&path))?;
            (
                SourceKind::SessionDir,
                Some(path.join(METRICS_FILE)),
                Some(path.join(TRAJECTORIES_FILE)),
            )
        } else if meta.is_file() {
            File::open(&path).map_err(io_err(&path))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            if name.contains("metrics") {
                (SourceKind::MetricsFile, Some(path.clone()), None)
            } else {
                (SourceKind::TrajectoriesFile, None, Some(path.clone()))
            }
        } else {
            return Err(SessionError::NotASession {
                path,
                reason: "neither a file nor a directory".into(),
            });
        };
        let mut reader = SessionReader {
            path,
            kind,
            metrics_path,
            trajectories_path,
            config_toml: None,
            config: None,
            run_info: None,
            checkpoints: Vec::new(),
            metrics: Vec::new(),
            entries: Vec::new(),
            problems: Vec::new(),
            metrics_scan: LineScanner::new(),
            traj_scan: LineScanner::new(),
        };
        if kind == SourceKind::SessionDir {
            reader.load_dir_meta();
        }
        reader.poll(true);
        Ok(reader)
    }

    fn load_dir_meta(&mut self) {
        let config_path = self.path.join(CONFIG_FILE);
        if let Some(text) = read_text(&config_path, &mut self.problems) {
            match text.parse::<toml::Table>() {
                Ok(t) => self.config = Some(t),
                Err(e) => self.problems.push(Problem {
                    file: config_path,
                    line: None,
                    kind: ProblemKind::Corrupt,
                    message: format!("invalid TOML: {e}"),
                }),
            }
            self.config_toml = Some(text);
        }
        let info_path = self.path.join(RUN_INFO_FILE);
        if let Some(text) = read_text(&info_path, &mut self.problems) {
            match serde_json::from_str::<RunInfo>(&text) {
                Ok(i) => self.run_info = Some(i),
                Err(e) => self.problems.push(Problem {
                    file: info_path,
                    line: Some(e.line()),
                    kind: ProblemKind::Corrupt,
                    message: format!("invalid run info: {e}"),
                }),
            }
        }
        match layout::list_checkpoints(&self.path) {
            Ok(c) => self.checkpoints = c,
            Err(e) => self.problems.push(Problem {
                file: self.path.join(layout::CHECKPOINTS_DIR),
                line: None,
                kind: ProblemKind::Unreadable,
                message: e.to_string(),
            }),
        }
    }

    /// Reads whatever was appended since the last call (complete lines only; an incomplete last
    /// line is left for a later call), and newly committed checkpoints. Handles files that were
    /// truncated or replaced by re-reading them (see [`Update::metrics_reset`]).
    pub fn poll_new(&mut self) -> Update {
        self.poll(false)
    }

    fn poll(&mut self, initial: bool) -> Update {
        let mut up = Update {
            new_entries: self.entries.len()..self.entries.len(),
            ..Update::default()
        };
        if let Some(path) = &self.metrics_path {
            let metrics = &mut up.metrics;
            let problems = &mut up.problems;
            let res = self.metrics_scan.scan(path, |line| {
                if let Some(r) = parse_line::<MetricsRecord>(path, &line, problems) {
                    metrics.push(r);
                }
            });
            if finish_scan(path, res, &self.metrics_scan, initial, &mut up.problems) == Some(true) {
                self.metrics.clear();
                up.metrics_reset = true;
            }
            self.metrics.extend(up.metrics.iter().cloned());
        }
        if let Some(path) = &self.trajectories_path {
            let mut new_entries = Vec::new();
            let mut new_records = Vec::new();
            let problems = &mut up.problems;
            let res = self.traj_scan.scan(path, |line| {
                // A line whose plans are damaged still indexes, without their shape.
                let whole = starts_with_brace(line.bytes)
                    .then(|| serde_json::from_slice::<TrajectorySummary>(line.bytes).ok())
                    .flatten();
                let Some(summary) = whole.or_else(|| {
                    parse_line::<SummaryWithoutShape>(path, &line, problems).map(Into::into)
                }) else {
                    return;
                };
                if !initial {
                    match serde_json::from_slice::<TrajectoryRecord>(line.bytes) {
                        Ok(r) => new_records.push((new_entries.len(), r)),
                        Err(e) => problems.push(corrupt(path, line.number, &e)),
                    }
                }
                new_entries.push(TrajectoryEntry {
                    line: line.number,
                    offset: line.offset,
                    len: line.bytes.len() as u64,
                    summary,
                });
            });
            if finish_scan(path, res, &self.traj_scan, initial, &mut up.problems) == Some(true) {
                self.entries.clear();
                up.trajectories_reset = true;
            }
            let base = self.entries.len();
            up.new_entries = base..base + new_entries.len();
            up.trajectories = new_records
                .into_iter()
                .map(|(i, r)| (base + i, r))
                .collect();
            self.entries.extend(new_entries);
        }
        if self.kind == SourceKind::SessionDir && !initial {
            if let Ok(list) = layout::list_checkpoints(&self.path) {
                up.checkpoints = list
                    .iter()
                    .filter(|c| !self.checkpoints.iter().any(|o| o.step == c.step))
                    .cloned()
                    .collect();
                self.checkpoints = list;
            }
            if self.run_info.is_none() {
                if let Ok(text) = fs::read_to_string(self.path.join(RUN_INFO_FILE)) {
                    self.run_info = serde_json::from_str(&text).ok();
                }
            }
        }
        self.problems.extend(up.problems.iter().cloned());
        up
    }

    /// The path that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What kind of path was opened.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The metrics file being read, if any.
    pub fn metrics_path(&self) -> Option<&Path> {
        self.metrics_path.as_deref()
    }

    /// The trajectories file being read, if any.
    pub fn trajectories_path(&self) -> Option<&Path> {
        self.trajectories_path.as_deref()
    }

    /// `<dir>/train.log` when a session directory was opened (it may not exist).
    pub fn log_path(&self) -> Option<PathBuf> {
        (self.kind == SourceKind::SessionDir).then(|| self.path.join(layout::LOG_FILE))
    }

    /// Text of `config.toml`, if present (even if it is not valid TOML).
    pub fn config_toml(&self) -> Option<&str> {
        self.config_toml.as_deref()
    }

    /// Parsed `config.toml`, if present and valid.
    pub fn config(&self) -> Option<&toml::Table> {
        self.config.as_ref()
    }

    /// Parsed `run.json`, if present and valid.
    pub fn run_info(&self) -> Option<&RunInfo> {
        self.run_info.as_ref()
    }

    /// Committed checkpoints, sorted by step.
    pub fn checkpoints(&self) -> &[CheckpointRecord] {
        &self.checkpoints
    }

    /// All metrics records read so far, in file order.
    pub fn metrics(&self) -> &[MetricsRecord] {
        &self.metrics
    }

    /// Index of all good trajectory lines read so far, in file order.
    pub fn entries(&self) -> &[TrajectoryEntry] {
        &self.entries
    }

    /// Every problem found so far (at open and by later polls).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Loads the full trajectory of entry `index` from disk.
    ///
    /// Errors (as a [`Problem`]) if the index is out of range, the file cannot be read, the
    /// line does not match the schema, or the file changed since it was indexed.
    pub fn trajectory(&self, index: usize) -> std::result::Result<TrajectoryRecord, Problem> {
        let path = self.trajectories_path.as_deref().unwrap_or(&self.path);
        let Some(entry) = self.entries.get(index) else {
            return Err(Problem {
                file: path.to_path_buf(),
                line: None,
                kind: ProblemKind::Unreadable,
                message: format!("no trajectory #{index} (have {})", self.entries.len()),
            });
        };
        let mut file = File::open(path).map_err(|e| unreadable(path, Some(entry.line), &e))?;
        file.seek(SeekFrom::Start(entry.offset))
            .map_err(|e| unreadable(path, Some(entry.line), &e))?;
        read_entry(path, &mut file, entry)
    }

    /// Loads every indexed trajectory, returning the good ones and a problem per failure.
    pub fn load_trajectories(&self) -> (Vec<TrajectoryRecord>, Vec<Problem>) {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut problems = Vec::new();
        let Some(path) = self.trajectories_path.as_deref() else {
            return (out, problems);
        };
        if self.entries.is_empty() {
            return (out, problems);
        }
        let mut file = match File::open(path) {
            Ok(f) => BufReader::with_capacity(256 * 1024, f),
            Err(e) => {
                problems.push(unreadable(path, None, &e));
                return (out, problems);
            }
        };
        // Entries are in file order: read sequentially, skipping bad lines with a relative seek
        // that keeps the buffer.
        let mut pos = 0u64;
        for entry in &self.entries {
            let res = match i64::try_from(entry.offset.wrapping_sub(pos)) {
                Ok(skip) if entry.offset >= pos => file.seek_relative(skip),
                _ => file.seek(SeekFrom::Start(entry.offset)).map(|_| ()),
            };
            if let Err(e) = res {
                problems.push(unreadable(path, Some(entry.line), &e));
                pos = u64::MAX;
                continue;
            }
            pos = entry.offset + entry.len;
            match read_entry(path, &mut file, entry) {
                Ok(r) => out.push(r),
                Err(p) => problems.push(p),
            }
        }
        (out, problems)
    }
}

/// Reads and parses `entry`, which must start at the current position of `file`.
fn read_entry(
    path: &Path,
    file: &mut impl Read,
    entry: &TrajectoryEntry,
) -> std::result::Result<TrajectoryRecord, Problem> {
    let len = usize::try_from(entry.len).map_err(|_| Problem {
        file: path.to_path_buf(),
        line: Some(entry.line),
        kind: ProblemKind::Unreadable,
        message: "line too long for this platform".into(),
    })?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf)
        .map_err(|e| unreadable(path, Some(entry.line), &e))?;
    let rec: TrajectoryRecord =
        serde_json::from_slice(&buf).map_err(|e| corrupt(path, entry.line, &e))?;
    if rec.step != entry.summary.step || rec.task.id != entry.summary.task.id {
        return Err(Problem {
            file: path.to_path_buf(),
            line: Some(entry.line),
            kind: ProblemKind::Reset,
            message: "file changed since it was indexed; poll or reopen".into(),
        });
    }
    Ok(rec)
}

fn read_text(path: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            problems.push(Problem {
                file: path.to_path_buf(),
                line: None,
                kind: ProblemKind::MissingFile,
                message: "file is missing".into(),
            });
            None
        }
        Err(e) => {
            problems.push(unreadable(path, None, &e));
            None
        }
    }
}

fn unreadable(path: &Path, line: Option<usize>, e: &io::Error) -> Problem {
    Problem {
        file: path.to_path_buf(),
        line,
        kind: ProblemKind::Unreadable,
        message: format!("cannot read: {e}"),
    }
}

fn corrupt(path: &Path, line: usize, e: &serde_json::Error) -> Problem {
    // Each line is parsed on its own, so serde_json's "line 1" is meaningless: keep the column.
    let msg = e.to_string().replace(" at line 1 column ", " at column ");
    Problem {
        file: path.to_path_buf(),
        line: Some(line),
        kind: ProblemKind::Corrupt,
        message: format!("unreadable record: {msg}"),
    }
}

/// Parses one line; blank lines are skipped silently, bad lines become problems.
fn parse_line<T: serde::de::DeserializeOwned>(
    path: &Path,
    line: &Line<'_>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    if line.bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if !starts_with_brace(line.bytes) {
        problems.push(Problem {
            file: path.to_path_buf(),
            line: Some(line.number),
            kind: ProblemKind::Corrupt,
            message: "not a JSON object".into(),
        });
        return None;
    }
    match serde_json::from_slice::<T>(line.bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            problems.push(corrupt(path, line.number, &e));
            None
        }
    }
}

/// Turns a scan outcome into problems; returns `Some(reset)` if the file was scanned.
fn finish_scan(
    path: &Path,
    res: io::Result<ScanOutcome>,
    scanner: &LineScanner,
    initial: bool,
    problems: &mut Vec<Problem>,
) -> Option<bool> {
    match res {
        Ok(ScanOutcome::Missing) => {
            if initial {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    kind: ProblemKind::MissingFile,
                    message: "file is missing".into(),
                });
            }
            None
        }
        Ok(ScanOutcome::Scanned { reset }) => {
            if reset {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    line: None,
                    kind: ProblemKind::Reset,
                    message: "file was truncated or replaced; re-read from the start".into(),
                });
            }
            if initial && scanner.pending > 0 {
                problems.push(Problem {
                    file: path.to_path_buf(),
                    line: Some(scanner.next_line),
                    kind: ProblemKind::TornTail,
                    message: format!(
                        "incomplete last line ({} bytes without newline): torn write or still \
                         being written; ignored",
                        scanner.pending
                    ),
                });
            }
            Some(reset)
        }
        Err(e) => {
            problems.push(unreadable(path, None, &e));
            None
        }
    }
}

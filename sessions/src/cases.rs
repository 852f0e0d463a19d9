//! The case library: misalignment probes saved from the debugger into a session
//! (`<session>/cases/case-NNN.json`), and the report of re-running them against checkpoints
//! (`<session>/cases/report.json` and `report.md`, written by `cahl-tui cases run`).
//!
//! A case is a task, a plan (edited or recorded), the seed and number of runs to measure it
//! with, and what the user expects ([`Expect`]). Re-running a case measures its plan with a
//! checkpoint's adapters ([`crate::debug::PlanMeasurement`]); a case passes at a checkpoint when
//! the measurement meets the expectation, so a misalignment that training fixes turns from
//! failing to passing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::debug::{DebugTask, PlanMeasurement};
use crate::error::{io_err, Result, SessionError};

/// Version of case files and case reports.
pub const CASE_VERSION: u32 = 1;

/// The folder of a session's cases.
pub fn cases_dir(session: &Path) -> PathBuf {
    session.join("cases")
}

/// What a case expects of its plan, judged on the measured runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Expect {
    /// Most runs solve the task (success rate at least 1/2).
    #[default]
    Solves,
    /// Most runs fail (success rate under 1/2).
    Fails,
    /// Most runs fail with this misalignment label (e.g. `plan_too_coarse`).
    Label(String),
}

impl Expect {
    /// Parses `solves`, `fails` or a failure label (`plan_too_coarse`, `label:plan_too_coarse`).
    pub fn parse(s: &str) -> std::result::Result<Expect, String> {
        let s = s.trim();
        let label = s.strip_prefix("label:").unwrap_or(s);
        const WORDS: [&str; 6] = ["solves", "solved", "success", "fails", "failed", "failure"];
        if s.starts_with("label:") && WORDS.contains(&label) {
            return Err(format!(
                "{label:?} is not a failure label (it means the run's outcome): write {label}"
            ));
        }
        match s {
            "solves" | "solved" | "success" => Ok(Expect::Solves),
            "fails" | "failed" | "failure" => Ok(Expect::Fails),
            _ if !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()) =>
            {
                Ok(Expect::Label(label.to_string()))
            }
            _ => Err(format!(
                "expected `solves`, `fails` or a failure label such as `plan_too_coarse`, not {s:?}"
            )),
        }
    }

    /// How it is written (what [`Expect::parse`] reads back).
    pub fn name(&self) -> String {
        match self {
            Expect::Solves => "solves".into(),
            Expect::Fails => "fails".into(),
            Expect::Label(l) => l.clone(),
        }
    }

    /// Whether `m` meets the expectation (a measurement without runs meets none).
    pub fn met_by(&self, m: &PlanMeasurement) -> bool {
        let n = m.runs.len();
        if n == 0 {
            return false;
        }
        match self {
            Expect::Solves => 2 * m.successes() >= n,
            Expect::Fails => 2 * m.successes() < n,
            Expect::Label(l) => {
                let k = m
                    .runs
                    .iter()
                    .filter(|r| !r.success && r.failure.as_deref() == Some(l.as_str()))
                    .count();
                2 * k > n
            }
        }
    }
}

impl Serialize for Expect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Expect::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One saved probe.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseRecord {
    /// [`CASE_VERSION`].
    pub version: u32,
    /// The case's id (its file name without `.json`, e.g. `case-003`).
    pub id: String,
    /// Where it came from, e.g. `trajectory builtin-train-1-4 (step 30), plan #0 · edit 1`.
    pub source: String,
    /// The task.
    pub task: DebugTask,
    /// The plan to measure.
    pub plan: Vec<String>,
    /// Seed of the first run.
    pub seed: u64,
    /// Runs per measurement.
    pub samples: usize,
    /// One argmax run instead of `samples` sampled ones.
    pub greedy: bool,
    /// What the user expects.
    pub expect: Expect,
    /// Free text: why this case matters.
    pub note: String,
}

impl CaseRecord {
    /// Parses a case file's text (`path` names it in errors); a newer version is an error.
    pub fn from_json(text: &str, path: &Path) -> Result<CaseRecord> {
        let c: CaseRecord = serde_json::from_str(text).map_err(|source| SessionError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        if c.version > CASE_VERSION {
            return Err(SessionError::Json {
                path: path.to_path_buf(),
                source: serde::de::Error::custom(format!(
                    "case version {} is newer than supported ({CASE_VERSION})",
                    c.version
                )),
            });
        }
        Ok(c)
    }
}

/// The saved cases of a session, in file-name order, with a problem line for each file that
/// does not read as a case (it is skipped). No `cases/` folder: no cases.
pub fn list_cases(session: &Path) -> Result<(Vec<CaseRecord>, Vec<String>)> {
    let dir = cases_dir(session);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("case-") && n.ends_with(".json") && !n.starts_with('.')
                })
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    files.sort();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f)
            .map_err(io_err(&f))
            .and_then(|t| CaseRecord::from_json(&t, &f))
        {
            Ok(mut c) => {
                if c.id.is_empty() {
                    c.id = f
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                }
                cases.push(c)
            }
            Err(e) => problems.push(format!("skipped: {e}")),
        }
    }
    Ok((cases, problems))
}

/// Saves `case` as `cases/case-NNN.json` of `session`, NNN one past the highest number there
/// (so a deleted case's id is never given to another, whose old report rows would then show),
/// reserved with a create-new open, then written crash-safe (temp, fsync, rename); sets its
/// id and version; returns the file.
pub fn save_case(session: &Path, case: &CaseRecord) -> Result<PathBuf> {
    let dir = cases_dir(session);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let highest = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("case-")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let mut n = highest + 1;
    let path = loop {
        let p = dir.join(format!("case-{n:03}.json"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(_) => break p,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(io_err(&p)(e)),
        }
    };
    let mut c = case.clone();
    c.version = CASE_VERSION;
    c.id = format!("case-{n:03}");
    let json = serde_json::to_string_pretty(&c).map_err(|source| SessionError::Json {
        path: path.clone(),
        source,
    })?;
    crate::fsutil::atomic_write(&path, json.as_bytes())?;
    Ok(path)
}

/// One case at one checkpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseCell {
    /// Runs that solved the task.
    pub successes: usize,
    /// Runs measured.
    pub runs: usize,
    /// Mean planner reward over the runs.
    #[serde(with = "crate::records::float")]
    pub planner_reward: f64,
    /// The most frequent failure label of the failed runs, with its count.
    pub top_failure: Option<(String, usize)>,
    /// The measurement meets the case's expectation.
    pub pass: bool,
    /// Why the case could not be measured here (then nothing else is set).
    pub error: Option<String>,
}

impl CaseCell {
    /// The cell of a measurement against `expect`.
    pub fn of(m: &PlanMeasurement, expect: &Expect) -> CaseCell {
        CaseCell {
            successes: m.successes(),
            runs: m.runs.len(),
            planner_reward: m.planner_reward_stats().0,
            top_failure: m.failure_counts().into_iter().next(),
            pass: expect.met_by(m),
            error: None,
        }
    }

    /// The cell of a case that could not be measured.
    pub fn failed(why: impl Into<String>) -> CaseCell {
        CaseCell {
            planner_reward: f64::NAN,
            error: Some(why.into()),
            ..CaseCell::default()
        }
    }

    /// Short text: `✓ 7/10 · plan_too_coarse 3`, `✗ 0/10 · executor_failed 10`, `error`.
    pub fn short(&self) -> String {
        if self.error.is_some() {
            return "error".into();
        }
        let mark = if self.pass { "✓" } else { "✗" };
        let mut s = format!("{mark} {}/{}", self.successes, self.runs);
        if let Some((l, k)) = &self.top_failure {
            s.push_str(&format!(" · {l} {k}"));
        }
        s
    }
}

/// One case's row of a report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CaseRow {
    /// The case's id.
    pub id: String,
    /// Its task's id.
    pub task_id: String,
    /// What it expects.
    pub expect: Expect,
    /// Sub-tasks in its plan.
    pub plan_len: usize,
    /// Its note.
    pub note: String,
    /// One cell per checkpoint of the report, in order.
    pub cells: Vec<CaseCell>,
}

/// The cases of a session re-run against checkpoints (`cases/report.json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CasesReport {
    /// [`CASE_VERSION`].
    pub version: u32,
    /// When it was made (UTC, RFC 3339).
    pub created: String,
    /// The model the adapters go on.
    pub model: String,
    /// The checkpoints, as named on the command line (`step-30`, `base`, …), in column order.
    pub checkpoints: Vec<String>,
    /// One row per case.
    pub rows: Vec<CaseRow>,
    /// Case files that were skipped, and why.
    pub problems: Vec<String>,
}

impl CasesReport {
    /// The report file of a session.
    pub fn path(session: &Path) -> PathBuf {
        cases_dir(session).join("report.json")
    }

    /// Cases passing at each checkpoint.
    pub fn passing(&self) -> Vec<usize> {
        (0..self.checkpoints.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter(|r| r.cells.get(i).is_some_and(|c| c.pass))
                    .count()
            })
            .collect()
    }

    /// The report as a Markdown table (one row per case, one column per checkpoint).
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("# Cases\n\n");
        s.push_str(&format!(
            "{} case{} re-run on {} with the adapters of {} ({}).\n\n",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" },
            if self.model.is_empty() {
                "the session's model"
            } else {
                &self.model
            },
            self.checkpoints.join(", "),
            self.created
        ));
        s.push_str("A cell is ✓ when the runs meet the case's expectation (solves: at least half the runs solve the task; fails: under half; a label: more than half fail with it), then solved/runs and the most frequent failure label.\n\n");
        s.push_str("| case | task | expects |");
        for c in &self.checkpoints {
            s.push_str(&format!(" {c} |"));
        }
        s.push_str("\n|---|---|---|");
        for _ in &self.checkpoints {
            s.push_str("---|");
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} |",
                r.id,
                r.task_id,
                r.expect.name()
            ));
            for c in &r.cells {
                s.push_str(&format!(" {} |", c.short()));
            }
            s.push('\n');
        }
        s.push_str("| **passing** | | |");
        for p in self.passing() {
            s.push_str(&format!(" **{p}/{}** |", self.rows.len()));
        }
        s.push('\n');
        let errors: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| {
                r.cells
                    .iter()
                    .zip(&self.checkpoints)
                    .filter_map(move |(c, ck)| {
                        c.error.as_ref().map(|e| format!("- {} at {ck}: {e}", r.id))
                    })
            })
            .collect();
        if !errors.is_empty() {
            s.push_str("\nNot measured:\n\n");
            s.push_str(&errors.join("\n"));
            s.push('\n');
        }
        if !self.problems.is_empty() {
            s.push_str("\nSkipped case files:\n\n");
            for p in &self.problems {
                s.push_str(&format!("- {p}\n"));
            }
        }
        s
    }

    /// Reads a session's report, if one was written.
    pub fn read(session: &Path) -> Result<Option<CasesReport>> {
        let p = Self::path(session);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|source| SessionError::Json { path: p, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Writes `report.json` and `report.md` into the session's `cases/` (crash-safe); returns
    /// the Markdown file.
    pub fn write(&self, session: &Path) -> Result<PathBuf> {
        let dir = cases_dir(session);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let p = Self::path(session);
        let json = serde_json::to_string_pretty(self).map_err(|source| SessionError::Json {
            path: p.clone(),
            source,
        })?;
        crate::fsutil::atomic_write(&p, json.as_bytes())?;
        let md = dir.join("report.md");
        crate::fsutil::atomic_write(&md, self.to_markdown().as_bytes())?;
        Ok(md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::PlanRun;

    fn m(outcomes: &[(bool, Option<&str>)]) -> PlanMeasurement {
        PlanMeasurement {
            runs: outcomes
                .iter()
                .map(|(s, l)| PlanRun {
                    success: *s,
                    planner_reward: 1.0,
                    failure: l.map(str::to_string),
                    ..PlanRun::default()
                })
                .collect(),
            ..PlanMeasurement::default()
        }
    }

    #[test]
    fn expectations_parse_and_judge_measurements() {
        assert_eq!(Expect::parse("solves"), Ok(Expect::Solves));
        assert_eq!(Expect::parse(" fails "), Ok(Expect::Fails));
        assert_eq!(
            Expect::parse("label:plan_too_coarse"),
            Ok(Expect::Label("plan_too_coarse".into()))
        );
        assert!(Expect::parse("maybe?").is_err());
        assert!(
            Expect::parse("label:success").is_err(),
            "reserved words are not labels"
        );
        for e in [
            Expect::Solves,
            Expect::Fails,
            Expect::Label("plan_too_coarse".into()),
        ] {
            assert_eq!(Expect::parse(&e.name()), Ok(e.clone()), "round trip");
        }
        let half = m(&[(true, None), (false, Some("plan_too_coarse"))]);
        assert!(Expect::Solves.met_by(&half));
        assert!(!Expect::Fails.met_by(&half));
        assert!(!Expect::Label("plan_too_coarse".into()).met_by(&half));
        let coarse = m(&[
            (false, Some("plan_too_coarse")),
            (false, Some("plan_too_coarse")),
            (false, Some("executor_failed")),
        ]);
        assert!(Expect::Label("plan_too_coarse".into()).met_by(&coarse));
        assert!(Expect::Fails.met_by(&coarse));
        assert!(!Expect::Solves.met_by(&PlanMeasurement::default()));
        assert!(!Expect::Fails.met_by(&PlanMeasurement::default()));
        let cell = CaseCell::of(&coarse, &Expect::Solves);
        assert_eq!(cell.short(), "✗ 0/3 · plan_too_coarse 2");
    }

    #[test]
    fn cases_save_list_and_report_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(list_cases(dir.path()).expect("none").0, vec![]);
        let c = CaseRecord {
            plan: vec!["a".into()],
            expect: Expect::Label("plan_too_coarse".into()),
            samples: 5,
            ..CaseRecord::default()
        };
        let p1 = save_case(dir.path(), &c).expect("save");
        let p2 = save_case(dir.path(), &c).expect("save");
        assert!(p1.ends_with("cases/case-001.json") && p2.ends_with("cases/case-002.json"));
        // Numbers go on from the highest: a deleted case's number is not reused while a
        // higher one exists.
        std::fs::remove_file(&p1).unwrap();
        let p3 = save_case(dir.path(), &c).expect("save");
        assert!(p3.ends_with("cases/case-003.json"), "{p3:?}");
        std::fs::remove_file(&p3).unwrap();
        let p1 = save_case(dir.path(), &c).expect("save");
        assert!(p1.ends_with("cases/case-003.json"), "{p1:?}");
        std::fs::write(cases_dir(dir.path()).join("case-009.json"), "{ torn").expect("write");
        let (cases, problems) = list_cases(dir.path()).expect("list");
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[1].id, "case-003");
        assert_eq!(cases[1].expect, c.expect);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("case-009.json"), "{problems:?}");
        let report = CasesReport {
            version: CASE_VERSION,
            checkpoints: vec!["step-2".into(), "step-4".into()],
            rows: vec![CaseRow {
                id: "case-001".into(),
                expect: Expect::Solves,
                cells: vec![
                    CaseCell::of(&m(&[(false, Some("plan_too_coarse"))]), &Expect::Solves),
                    CaseCell::of(&m(&[(true, None)]), &Expect::Solves),
                ],
                ..CaseRow::default()
            }],
            ..CasesReport::default()
        };
        assert_eq!(report.passing(), vec![0, 1]);
        let md_path = report.write(dir.path()).expect("write");
        let md = std::fs::read_to_string(md_path).expect("md");
        assert!(
            md.contains("| case-001 |  | solves | ✗ 0/1 · plan_too_coarse 1 | ✓ 1/1 |"),
            "{md}"
        );
        assert!(md.contains("**0/1**") && md.contains("**1/1**"), "{md}");
        assert_eq!(CasesReport::read(dir.path()).expect("read"), Some(report));
    }
}

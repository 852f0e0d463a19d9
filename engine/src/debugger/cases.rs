//! Re-running a session's case library (`cahl-tui cases run`): every saved case's plan
//! measured with the adapters of each chosen checkpoint, as the debugger's `m` measures it,
//! into a [`CasesReport`] (one row per case, one cell per checkpoint).
use std::path::{Path, PathBuf};

use cahl_sessions::cases::{list_cases, CaseCell, CaseRow, CasesReport, CASE_VERSION};
use cahl_sessions::debug::{ExecutorBackend, MeasureRequest};
use cahl_sessions::UtcDateTime;

use super::engine_backend;
use super::loader::SessionModelLoader;
use crate::error::{EngineError, Result};

/// Whose adapters measure the cases: a checkpoint directory, or the base model (`base`).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterChoice {
    /// How the report names it: `step-30`, `base`, or the folder given.
    pub label: String,
    /// The checkpoint directory (`None`: the base model with no adapters).
    pub dir: Option<PathBuf>,
}

/// Resolves a `--checkpoint` value of a session: `base`, a step (`30`), a checkpoint name
/// (`step-30`) or a directory with `planner/` and `executor/` adapters.
pub fn resolve_checkpoint(session: &Path, spec: &str) -> Result<AdapterChoice> {
    if spec == "base" {
        return Ok(AdapterChoice {
            label: "base".into(),
            dir: None,
        });
    }
    let name = if spec.chars().all(|c| c.is_ascii_digit()) && !spec.is_empty() {
        format!("step-{spec}")
    } else {
        spec.to_string()
    };
    let in_session = session.join("checkpoints").join(&name);
    if in_session.is_dir() {
        return Ok(AdapterChoice {
            label: name,
            dir: Some(in_session),
        });
    }
    let p = PathBuf::from(spec);
    if p.is_dir() {
        return Ok(AdapterChoice {
            label: spec.to_string(),
            dir: Some(p),
        });
    }
    let known: Vec<String> = cahl_sessions::list_checkpoints(session)
        .unwrap_or_default()
        .iter()
        .map(|c| format!("step-{}", c.step))
        .collect();
    Err(EngineError::Config(format!(
        "--checkpoint {spec}: no checkpoints/{name} in {} and no such folder (known: {}; or `base`)",
        session.display(),
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// The checkpoints a run compares without `--checkpoint`: the session's first and latest intact
/// ones (one when they are the same), or the base model when it has none.
pub fn default_checkpoints(session: &Path) -> Result<Vec<AdapterChoice>> {
    let cks = cahl_sessions::intact_checkpoints(session)
        .map_err(|e| EngineError::Config(format!("listing checkpoints: {e}")))?;
    let mut steps: Vec<u64> = cks.iter().map(|c| c.step).collect();
    steps.sort_unstable();
    let picked: Vec<u64> = match (steps.first(), steps.last()) {
        (Some(a), Some(b)) if a != b => vec![*a, *b],
        (Some(a), _) => vec![*a],
        _ => vec![],
    };
    if picked.is_empty() {
        return Ok(vec![resolve_checkpoint(session, "base")?]);
    }
    picked
        .iter()
        .map(|s| resolve_checkpoint(session, &s.to_string()))
        .collect()
}

/// Re-runs every case of `session` with each of `choices` (in order), on `model` (default:
/// the session's own model, found from its config or run.json). `samples` overrides each
/// case's runs. `progress` hears one line per case and checkpoint. A case that cannot be
/// measured (a task whose world is unknown here, say) gets an error cell; the others go on.
pub fn run_cases(
    session: &Path,
    model: Option<&str>,
    choices: &[AdapterChoice],
    samples: Option<usize>,
    progress: &mut dyn FnMut(String),
) -> Result<CasesReport> {
    let (cases, problems) =
        list_cases(session).map_err(|e| EngineError::Config(format!("reading the cases: {e}")))?;
    if cases.is_empty() {
        return Err(EngineError::Config(format!(
            "{} has no cases yet: save one from the debugger with `a` (replay {0}, then d)",
            session.display()
        )));
    }
    let loader = SessionModelLoader::of_session(session);
    let (spec, cfg) = match (model, loader) {
        (Some(m), l) => (
            m.to_string(),
            l.map(|l| l.cfg)
                .unwrap_or_else(|| super::lookup::session_config(session)),
        ),
        (None, Some(l)) => (l.model, l.cfg),
        (None, None) => {
            return Err(EngineError::Config(format!(
                "the model of {} cannot be loaded from here (see its run.json): pass --model",
                session.display()
            )))
        }
    };
    let mut rows: Vec<CaseRow> = cases
        .iter()
        .map(|c| CaseRow {
            id: c.id.clone(),
            task_id: c.task.id.clone(),
            expect: c.expect.clone(),
            plan_len: c.plan.len(),
            note: c.note.clone(),
            cells: Vec::new(),
        })
        .collect();
    for choice in choices {
        // A checkpoint that does not load fails its column, not the run.
        let mut backend = match engine_backend(&spec, choice.dir.as_deref(), cfg.clone()) {
            Ok(b) => b,
            Err(e) => {
                let why = format!("loading {}: {e}", choice.label);
                progress(format!("{why}: its column is not measured"));
                for row in rows.iter_mut() {
                    row.cells.push(CaseCell::failed(why.clone()));
                }
                continue;
            }
        };
        for (case, row) in cases.iter().zip(rows.iter_mut()) {
            let req = MeasureRequest {
                task: case.task.clone(),
                subtasks: case.plan.clone(),
                seed: case.seed,
                samples: samples.unwrap_or(case.samples).max(1),
                greedy: case.greedy,
            };
            let cell = match backend.measure(req) {
                Ok(m) => CaseCell::of(&m, &case.expect),
                Err(e) => CaseCell::failed(e.0),
            };
            progress(format!("{} at {}: {}", case.id, choice.label, cell.short()));
            row.cells.push(cell);
        }
    }
    Ok(CasesReport {
        version: CASE_VERSION,
        created: UtcDateTime::now().rfc3339(),
        model: spec,
        checkpoints: choices.iter().map(|c| c.label.clone()).collect(),
        rows,
        problems,
    })
}

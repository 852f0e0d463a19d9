//! Update-logic tests of the debugger: opening it from the dashboard, editing, running through
//! a fake backend, loading the model on demand, saving.

mod common;

use cahl_sessions::{BackendError, BackendJob, BackendReply, DebugTask, TrainEvent};
use cahl_ui::state::debugger::{DebugInitial, ModelState, NEEDS_MODEL};
use cahl_ui::state::{AppState, Effect, Mode, Msg, StateOptions};
use common::*;
use ratatui::crossterm::event::KeyCode;

#[test]
fn debugger_opens_on_selected_trajectory_and_closes() {
    let mut s = live_state(3);
    assert!(feed(&mut s, [key('d')]).is_empty());
    let d = s.debugger.as_ref().expect("debugger open");
    assert_eq!(d.task.id, "t-2");
    // The best plan as the original, and the group's other plan as a recorded branch.
    assert_eq!(d.branches.len(), 2);
    assert!(d.branches.iter().all(|b| b.from_trace));
    assert_eq!(d.branches[0].steps.len(), 2);
    assert!(d.branches[1].name.starts_with("plan #"));
    feed(&mut s, [code(KeyCode::Esc)]);
    assert!(s.debugger.is_none(), "esc returns to the dashboard");
}

#[test]
fn debugger_without_model_explains_and_still_edits() {
    let rec = common::fixture::trajectory(3, 1);
    let (mut s, eff) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(rec),
            plan_index: None,
        },
        StateOptions::default(),
    );
    assert!(eff.is_empty());
    // `z` on the recording keeps it and starts a copy of its plan (the recording is read-only).
    feed(&mut s, [key('z')]);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(
        d.branches.len(),
        3,
        "original, the other recorded plan, the rerun"
    );
    assert!(d.branches[0].from_trace && d.branches[0].steps.len() == 2);
    assert_eq!((d.current, d.branch().name.as_str()), (2, "rerun 1"));
    assert_eq!(d.branch().subtasks, d.branches[0].subtasks);
    assert!(d.branch().steps.is_empty());
    // A new seed on a recording (here the group's other plan) also goes to a copy.
    feed(&mut s, [code(KeyCode::BackTab), key('+')]);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(d.branches.len(), 4);
    assert!(d.branches[1].from_trace && d.branches[1].seed == d.branches[0].seed);
    assert_eq!(d.branches[0].seed + 1, d.branch().seed);
    assert!(d.branches[0].from_trace && d.branches[0].steps.len() == 2);
    feed(&mut s, [key('n')]);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(d.message.as_deref(), Some(NEEDS_MODEL));
    // Back to the original to edit it.
    feed(&mut s, [code(KeyCode::Tab)]);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(d.current, 0);
    // Edit: split the first sub-task in two.
    let mut msgs = vec![key('e'), code(KeyCode::End)];
    msgs.push(code(KeyCode::Enter));
    msgs.extend(typed("Check the forecast source"));
    msgs.push(code(KeyCode::Esc));
    feed(&mut s, msgs);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(d.branches.len(), 5);
    assert_eq!(d.current, 4);
    assert_eq!(d.branch().name, "edit 1");
    assert_eq!(d.branch().subtasks.len(), 3);
    assert_eq!(d.branch().subtasks[1], "Check the forecast source");
    assert_eq!(d.branches[0].subtasks.len(), 2, "original untouched");
    // Closing the standalone debugger quits.
    assert_eq!(feed(&mut s, [key('q')]), vec![Effect::Quit]);
}

#[test]
fn debugger_runs_steps_and_reproduces_with_seed() {
    let task = DebugTask {
        id: "t-9".into(),
        text: "Find the weather in Oslo".into(),
        gold_plan: vec!["Get the weather in Oslo".into()],
        gold_calls: vec![],
        ..DebugTask::default()
    };
    let opts = StateOptions {
        backend: Some("fake".into()),
        ..StateOptions::default()
    };
    let (mut s, eff) = AppState::debugger(
        DebugInitial::Task {
            task,
            plan: vec![],
            seed: 42,
        },
        opts,
    );
    let mut fake = FakeBackend::default();
    // Empty plan + backend: the planner is asked first.
    assert!(matches!(eff.as_slice(), [Effect::Backend(_)]));
    drive_backend(&mut s, &mut fake, eff);
    assert_eq!(s.debugger.as_ref().expect("d").branch().subtasks.len(), 2);
    // One step.
    let eff = feed(&mut s, [key('n')]);
    drive_backend(&mut s, &mut fake, eff);
    let d = s.debugger.as_ref().expect("d");
    assert_eq!(d.branch().steps.len(), 1);
    assert!(d.branch().steps[0].prompt.contains("EXECUTOR PROMPT"));
    // Run to end.
    let eff = feed(&mut s, [key('r')]);
    drive_backend(&mut s, &mut fake, eff);
    let first_run = s.debugger.as_ref().expect("d").branch().steps.clone();
    assert_eq!(first_run.len(), 2);
    assert_eq!(fake.calls, 2);
    // Finished branch: n explains.
    feed(&mut s, [key('n')]);
    assert!(s
        .debugger
        .as_ref()
        .expect("d")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("finished")));
    // Reset and re-run: identical.
    let eff = feed(&mut s, [key('z'), key('r')]);
    drive_backend(&mut s, &mut fake, eff);
    assert_eq!(s.debugger.as_ref().expect("d").branch().steps, first_run);
    // Another seed differs.
    let eff = feed(&mut s, [key('+'), key('r')]);
    drive_backend(&mut s, &mut fake, eff);
    assert_ne!(s.debugger.as_ref().expect("d").branch().steps, first_run);
}

#[test]
fn debugger_drops_stale_replies_after_reset() {
    let opts = StateOptions {
        backend: Some("fake".into()),
        ..StateOptions::default()
    };
    let (mut s, _) = AppState::debugger(
        DebugInitial::Task {
            task: DebugTask {
                text: "x".into(),
                ..DebugTask::default()
            },
            plan: vec!["a".into(), "b".into()],
            seed: 1,
        },
        opts,
    );
    let eff = feed(&mut s, [key('n')]);
    feed(&mut s, [key('z')]);
    let mut fake = FakeBackend::default();
    drive_backend(&mut s, &mut fake, eff);
    assert!(
        s.debugger.as_ref().expect("d").branch().steps.is_empty(),
        "stale reply ignored"
    );
}

#[test]
fn debugger_session_saves_and_reopens() {
    let rec = common::fixture::trajectory(4, 2);
    let opts = StateOptions {
        debug_dir: Some("/tmp/cahl-debug".into()),
        ..StateOptions::default()
    };
    let (mut s, _) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(rec),
            plan_index: Some(1),
        },
        opts,
    );
    let mut msgs = vec![key('e'), code(KeyCode::Down), code(KeyCode::End)];
    msgs.extend(typed(" now"));
    msgs.push(code(KeyCode::Esc));
    feed(&mut s, msgs);
    let eff = feed(&mut s, [key('S')]);
    let [Effect::SaveDebug { path, json }] = eff.as_slice() else {
        panic!("expected SaveDebug, got {eff:?}");
    };
    assert_eq!(path.to_string_lossy(), "/tmp/cahl-debug/debug-t-2.json");
    let file = cahl_ui::DebugSessionFile::from_json(json).expect("valid json");
    let (s2, _) = AppState::debugger(DebugInitial::Saved(file), StateOptions::default());
    let (a, b) = (
        s.debugger.as_ref().expect("a"),
        s2.debugger.as_ref().expect("b"),
    );
    assert_eq!(a.branches, b.branches);
    assert_eq!(b.current, 2, "original, the other recorded plan, the edit");
    assert!(b.branch().subtasks[1].ends_with(" now"));
    assert!(cahl_ui::DebugSessionFile::from_json("{\"version\": 99}").is_err());
    assert!(cahl_ui::DebugSessionFile::from_json("not json").is_err());
}

/// A live state whose debugger model loads on demand (like `cahl-tui train`).
fn live_with_loader(steps: u64) -> LiveRun {
    live_run(
        StateOptions {
            loader: Some("tiny.gguf (second copy, ~1 MB)".into()),
            ..StateOptions::default()
        },
        steps,
    )
}

fn loaded(step: Option<u64>, result: Result<&str, &str>) -> Msg {
    Msg::Backend(BackendReply::Loaded {
        step,
        result: result.map(str::to_string).map_err(BackendError::from),
    })
}

#[test]
fn live_debugger_loads_the_model_on_demand_then_runs_the_requested_step() {
    let mut s = live_with_loader(12);
    assert_eq!(
        s.model,
        ModelState::OnDemand("tiny.gguf (second copy, ~1 MB)".into())
    );
    // Opening the debugger loads nothing.
    assert!(feed(&mut s, [key('d')]).is_empty());
    assert!(matches!(
        s.debugger.as_ref().expect("open").model,
        ModelState::OnDemand(_)
    ));
    // The first run asks for the model, with the latest checkpoint's adapters.
    let eff = feed(&mut s, [key('z'), key('n')]);
    let [Effect::Backend(BackendJob::Load { checkpoint, step })] = eff.as_slice() else {
        panic!("expected a load job, got {eff:?}");
    };
    assert_eq!(*step, Some(10));
    assert_eq!(
        checkpoint.as_deref(),
        Some(std::path::Path::new(
            "sessions/run-20261121-060000/checkpoints/step-10"
        ))
    );
    assert!(matches!(
        s.model,
        ModelState::Loading { step: Some(10), .. }
    ));
    assert!(screen(&s).contains("loading model…"));
    // While loading: no second load, other keys still work.
    assert!(feed(&mut s, [key('r'), key('c'), key('c')]).is_empty());
    let d = s.debugger.as_ref().expect("d");
    assert!(d
        .message
        .as_deref()
        .is_some_and(|m| m.contains("still loading")));
    // Ready: the step deferred while loading runs (to the end, as `r` asked last).
    let eff = feed(&mut s, [loaded(Some(10), Ok("fake test backend"))]);
    assert!(matches!(
        eff.as_slice(),
        [Effect::Backend(BackendJob::Step { .. })]
    ));
    let mut fake = FakeBackend::default();
    drive_backend(&mut s, &mut fake, eff);
    let d = s.debugger.as_ref().expect("d");
    assert!(d.model.ready());
    assert_eq!(d.branch().steps.len(), d.branch().subtasks.len());
    assert_eq!(d.newer_checkpoint, None);
    // The model stays loaded when the debugger closes and reopens.
    feed(&mut s, [code(KeyCode::Esc), key('d')]);
    assert!(s.debugger.as_ref().expect("reopened").model.ready());
}

#[test]
fn live_debugger_model_before_any_checkpoint_uses_fresh_adapters_and_reloads_later() {
    let mut s = live_with_loader(3);
    feed(&mut s, [key('d')]);
    let eff = feed(&mut s, [key('L')]);
    assert_eq!(
        eff,
        vec![Effect::Backend(BackendJob::Load {
            checkpoint: None,
            step: None
        })]
    );
    assert!(screen(&s).contains("fresh adapters (no checkpoint yet)"));
    feed(
        &mut s,
        [loaded(None, Ok("tiny.gguf · base model + fresh adapters"))],
    );
    assert_eq!(s.debugger.as_ref().expect("d").newer_checkpoint, None);
    // A checkpoint arrives: the debugger offers to reload.
    s.send(TrainEvent::Checkpoint(cahl_sessions::CheckpointRecord {
        step: 4,
        path: "checkpoints/step-4".into(),
        created_at: String::new(),
    }));
    assert_eq!(s.debugger.as_ref().expect("d").newer_checkpoint, Some(4));
    assert!(screen(&s).contains("newer checkpoint step 4: L reloads"));
    let eff = feed(&mut s, [key('L')]);
    assert!(matches!(
        eff.as_slice(),
        [Effect::Backend(BackendJob::Load { step: Some(4), .. })]
    ));
    // A failed load is shown and can be retried.
    feed(&mut s, [loaded(Some(4), Err("out of memory"))]);
    assert!(matches!(s.model, ModelState::Failed { .. }));
    assert!(screen(&s).contains("model failed to load: out of memory"));
    let eff = feed(&mut s, [key('n')]);
    assert!(matches!(
        eff.as_slice(),
        [Effect::Backend(BackendJob::Load { step: Some(4), .. })]
    ));
    // A failure drops the deferred step instead of running it.
    assert!(feed(&mut s, [loaded(Some(4), Err("still no memory"))]).is_empty());
    let d = s.debugger.as_ref().expect("d");
    assert!(d
        .message
        .as_deref()
        .is_some_and(|m| m.contains("still no memory")));
}

#[test]
fn given_backends_are_not_reloaded_and_missing_models_are_not_loaded() {
    let mut s = live_state(3);
    feed(&mut s, [key('d')]);
    assert!(feed(&mut s, [key('L'), key('n')]).is_empty());
    assert_eq!(s.model, ModelState::Missing);
    let opts = StateOptions {
        backend: Some("fake".into()),
        ..StateOptions::default()
    };
    let mut s = AppState::new(Mode::Replay, opts);
    let rec = common::fixture::trajectory(1, 0);
    let summary = cahl_sessions::TrajectorySummary::from(&rec);
    s.trajs.push_entry(0, &summary, Some(Box::new(rec)));
    feed(&mut s, [key('d')]);
    assert!(feed(&mut s, [key('L')]).is_empty());
    assert!(s
        .debugger
        .as_ref()
        .expect("d")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("given at start")));
}

#[test]
fn benchmark_tasks_show_their_world_and_gold_answer() {
    let task = DebugTask {
        id: "bamboogle-3".into(),
        text: "Who was president when the Titan IIIE first flew?".into(),
        world: "bamboogle".into(),
        tools: vec![serde_json::json!({"name": "search", "description": "", "parameters": {}})],
        gold_answer: Some("Richard Nixon".into()),
        ..DebugTask::default()
    };
    let (mut s, eff) = AppState::debugger(
        DebugInitial::Task {
            task,
            plan: vec![],
            seed: 0,
        },
        StateOptions::default(),
    );
    assert!(eff.is_empty(), "no model: nothing is asked");
    let d = s.debugger.as_ref().expect("d");
    assert_eq!(d.source, "bamboogle benchmark item, 1 tool");
    feed(&mut s, [key('c')]);
    assert!(screen(&s).contains("answer: Richard Nixon"));
}

fn given_backend_on_trace() -> AppState {
    let (s, _) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(common::fixture::trajectory(3, 0)),
            plan_index: None,
        },
        StateOptions {
            backend: Some("fake test backend".into()),
            ..StateOptions::default()
        },
    );
    s
}

#[test]
fn measuring_runs_n_samples_greedy_once_and_leaves_the_recording_alone() {
    let mut s = given_backend_on_trace();
    let recorded = s.debugger.as_ref().unwrap().branches[0].clone();
    assert!(
        recorded.result.is_some(),
        "a recording carries its recorded result"
    );
    // M cycles the runs per measurement: 10 -> 20.
    feed(&mut s, [key('M')]);
    assert_eq!(s.debugger.as_ref().unwrap().samples, 20);
    let eff = feed(&mut s, [key('m')]);
    match eff.as_slice() {
        [Effect::Backend(BackendJob::Measure { req, .. })] => {
            assert_eq!((req.samples, req.greedy), (20, false));
            assert_eq!(req.subtasks, recorded.subtasks);
            assert_eq!(req.seed, recorded.seed);
        }
        other => panic!("expected a measure job, got {other:?}"),
    }
    drive_backend(&mut s, &mut FakeBackend::default(), eff);
    let d = s.debugger.as_ref().unwrap();
    let m = d.branches[0].measurement.as_ref().expect("measured");
    assert_eq!(m.runs.len(), 20);
    // The recorded steps and result are untouched: the measurement sits beside them.
    assert_eq!(d.branches[0].steps, recorded.steps);
    assert_eq!(d.branches[0].result, recorded.result);
    assert!(d.branches[0].from_trace);
    // g: one greedy run replaces it.
    let eff = feed(&mut s, [key('g')]);
    drive_backend(&mut s, &mut FakeBackend::default(), eff);
    let m = s.debugger.as_ref().unwrap().branches[0]
        .measurement
        .clone()
        .expect("measured");
    assert!(m.greedy);
    assert_eq!(m.runs.len(), 1);
}

#[test]
fn a_finished_branch_is_judged_and_a_reset_or_edit_drops_stale_outcomes() {
    let mut s = given_backend_on_trace();
    // z on the recording: a copy to run; r runs it to the end, then it is judged.
    let eff = feed(&mut s, [key('z'), key('r')]);
    let rest = drive_backend(&mut s, &mut FakeBackend::default(), eff);
    assert!(rest.is_empty());
    let d = s.debugger.as_ref().unwrap();
    let b = d.branch();
    assert!(b.name.starts_with("rerun"));
    assert!(b.finished());
    let r = b.result.as_ref().expect("judged once finished");
    // The fake judge solves a branch with as many calls as the gold.
    assert_eq!(r.success, b.steps.len() == d.task.gold_calls.len());
    // A measurement, then a reset: both outcomes belong to the old run and go.
    let eff = feed(&mut s, [key('m')]);
    drive_backend(&mut s, &mut FakeBackend::default(), eff);
    assert!(s.debugger.as_ref().unwrap().branch().measurement.is_some());
    feed(&mut s, [key('z')]);
    let b = s.debugger.as_ref().unwrap().branch();
    assert!(b.result.is_none() && b.measurement.is_none() && b.steps.is_empty());
}

#[test]
fn a_stale_measurement_is_dropped_and_errors_are_said() {
    let mut s = given_backend_on_trace();
    let eff = feed(&mut s, [key('m')]);
    let ticket = match eff.as_slice() {
        [Effect::Backend(BackendJob::Measure { ticket, .. })] => *ticket,
        other => panic!("expected a measure job, got {other:?}"),
    };
    // Busy: a second measurement waits.
    assert!(feed(&mut s, [key('g')]).is_empty());
    let d = s.debugger.as_ref().unwrap();
    assert!(d.message.as_deref().unwrap_or("").contains("busy"));
    feed(
        &mut s,
        [Msg::Backend(BackendReply::Measured {
            ticket,
            result: Err(BackendError("the model crashed".into())),
        })],
    );
    let d = s.debugger.as_ref().unwrap();
    assert!(d.branches[0].measurement.is_none());
    assert!(
        d.message
            .as_deref()
            .unwrap_or("")
            .contains("measuring failed: the model crashed"),
        "{:?}",
        d.message
    );
    // A reply to nothing pending changes nothing.
    feed(
        &mut s,
        [Msg::Backend(BackendReply::Measured {
            ticket: 999,
            result: Ok(Default::default()),
        })],
    );
    assert!(s.debugger.as_ref().unwrap().branches[0]
        .measurement
        .is_none());
}

#[test]
fn cases_need_a_session_and_a_valid_expectation() {
    let mut s = given_backend_on_trace();
    feed(&mut s, [key('a')]);
    feed(&mut s, typed("maybe? whatever"));
    assert!(feed(&mut s, [code(KeyCode::Enter)]).is_empty());
    let d = s.debugger.as_ref().unwrap();
    assert!(
        d.case_input.is_some(),
        "a bad expectation keeps the prompt open"
    );
    assert!(d
        .message
        .as_deref()
        .unwrap_or("")
        .contains("expected `solves`"));
    // Fixed: but a standalone debugger with no session has no library to save into.
    for _ in 0.."maybe? whatever".len() {
        feed(&mut s, [code(KeyCode::Backspace)]);
    }
    feed(&mut s, typed("solves"));
    assert!(feed(&mut s, [code(KeyCode::Enter)]).is_empty());
    let d = s.debugger.as_ref().unwrap();
    assert!(d.case_input.is_none());
    assert!(d
        .message
        .as_deref()
        .unwrap_or("")
        .contains("no session to keep cases in"));
}

#[test]
fn a_saved_case_lands_in_the_session_and_is_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = live_with_loader(3);
    s.session_path = Some(dir.path().to_path_buf());
    feed(&mut s, [key('d'), key('a')]);
    feed(&mut s, typed("fails"));
    let eff = feed(&mut s, [code(KeyCode::Enter)]);
    let [Effect::SaveCase { session, case }] = eff.as_slice() else {
        panic!("expected a case to save, got {eff:?}");
    };
    let path = cahl_sessions::cases::save_case(session, case).expect("saved");
    feed(&mut s, [Msg::CaseSaved(Ok(path.clone()))]);
    let msg = s
        .debugger
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap_or_default();
    assert!(msg.contains("case case-001 saved"), "{msg}");
    assert!(msg.contains("cahl-tui cases run"), "{msg}");
    let (cases, problems) = cahl_sessions::cases::list_cases(dir.path()).expect("list");
    assert!(problems.is_empty());
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].expect, cahl_sessions::Expect::Fails);
    assert_eq!(cases[0].task.id, "t-2");
}

#[test]
fn editing_a_branch_drops_the_measurement_still_running_on_its_old_plan() {
    let mut s = given_backend_on_trace();
    // A fresh edit branch (not run): edit it, measure, then edit it again in place.
    feed(&mut s, [key('e'), code(KeyCode::End)]);
    feed(&mut s, typed(" first"));
    feed(&mut s, [code(KeyCode::Esc)]);
    assert!(s
        .debugger
        .as_ref()
        .unwrap()
        .branch()
        .name
        .starts_with("edit"));
    let eff = feed(&mut s, [key('m')]);
    let [Effect::Backend(BackendJob::Measure { ticket, .. })] = eff.as_slice() else {
        panic!("expected a measure job, got {eff:?}");
    };
    let ticket = *ticket;
    feed(&mut s, [key('e'), code(KeyCode::End)]);
    feed(&mut s, typed(" second"));
    feed(&mut s, [code(KeyCode::Esc)]);
    let d = s.debugger.as_ref().unwrap();
    assert!(d.branch().subtasks.iter().any(|t| t.ends_with("second")));
    assert!(!d.busy(), "the job on the old plan is dropped");
    feed(
        &mut s,
        [Msg::Backend(BackendReply::Measured {
            ticket,
            result: Ok(cahl_sessions::PlanMeasurement {
                runs: vec![Default::default()],
                ..Default::default()
            }),
        })],
    );
    assert!(
        s.debugger.as_ref().unwrap().branch().measurement.is_none(),
        "the old plan's measurement is not put on the new plan"
    );
}

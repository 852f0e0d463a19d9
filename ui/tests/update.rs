//! Update-logic tests: recorded engine events and key presses in, state and effects out.

mod common;

use cahl_sessions::{RunState, TrainCommand, TrainEvent};
use cahl_ui::backend::{BackendJob, BackendReply};
use cahl_ui::state::charts::{ChartKind, ChartRange};
use cahl_ui::state::debugger::{DebugInitial, ModelState, NEEDS_MODEL};
use cahl_ui::state::trajs::Filter;
use cahl_ui::state::{update, AppState, DiskBatch, Effect, Mode, Msg, Pane, StateOptions};
use cahl_ui::DebugTask;
use common::*;
use ratatui::crossterm::event::KeyCode;

#[test]
fn recorded_events_fill_metrics_stream_log_and_status() {
    let s = live_state(12);
    assert_eq!(s.metrics.len(), 12);
    assert_eq!(s.trajs.len(), 36);
    assert_eq!(s.total_steps, 100);
    assert_eq!(s.last_step(), 12);
    assert_eq!(s.device, "cuda:0 (NVIDIA H100)");
    assert_eq!(s.checkpoints.len(), 1);
    assert!(s.log.iter().any(|l| l.text.contains("truncated at 512")));
    // ETA = mean step time (12 s) × 88 remaining steps.
    assert_eq!(s.eta_s(), Some(12.0 * 88.0));
    assert_eq!(s.tokens_per_s(), 1834.0);
    // Newest first.
    let first = s.trajs.visible()[0];
    let it = s.trajs.get(first).expect("newest item");
    assert_eq!((it.step, it.task_id.as_str()), (12, "t-2"));
}

#[test]
fn filter_cycles_all_failures_misaligned() {
    let mut s = live_state(12);
    let all = s.trajs.visible().len();
    feed(&mut s, [key('f')]);
    assert_eq!(s.trajs.filter, Filter::Failures);
    let failures = s.trajs.visible();
    assert!(!failures.is_empty() && failures.len() < all);
    assert!(failures
        .iter()
        .all(|q| !s.trajs.get(*q).expect("item").success));
    feed(&mut s, [key('f')]);
    assert_eq!(s.trajs.filter, Filter::Misaligned);
    assert!(s
        .trajs
        .visible()
        .iter()
        .all(|q| s.trajs.get(*q).expect("item").misaligned));
    feed(&mut s, [key('f')]);
    assert_eq!(s.trajs.visible().len(), all);
}

#[test]
fn freeze_hides_new_arrivals_and_keeps_selection() {
    let mut s = live_state(4);
    feed(&mut s, [key('j'), key('j')]);
    let sel = s.trajs.current();
    feed(&mut s, [key(' ')]);
    let before = s.trajs.visible();
    feed(
        &mut s,
        (5..=6).map(|st| {
            Msg::Engine(TrainEvent::Trajectory(Box::new(
                common::fixture::trajectory(st, 0),
            )))
        }),
    );
    assert_eq!(s.trajs.visible(), before, "frozen view must not change");
    assert_eq!(s.trajs.hidden_by_freeze(), 2);
    assert_eq!(s.trajs.current(), sel);
    assert!(screen(&s).contains("FROZEN (+2 new)"));
    feed(&mut s, [key(' ')]);
    assert_eq!(s.trajs.visible().len(), before.len() + 2);
    assert_eq!(
        s.trajs.current(),
        sel,
        "selection stays on the same trajectory"
    );
}

#[test]
fn search_by_text_and_id_and_clear() {
    let mut s = live_state(10);
    let mut msgs = vec![key('/')];
    msgs.extend(typed("kyoto"));
    msgs.push(code(KeyCode::Enter));
    let eff = feed(&mut s, msgs);
    assert!(
        eff.is_empty(),
        "live items have their text: no load needed: {eff:?}"
    );
    assert!(
        s.trajs.visible().is_empty(),
        "the fixture uses Kyoto only for k=4"
    );
    assert!(screen(&s).contains("nothing matches"));
    // Search by id.
    let mut msgs = vec![key('/')];
    msgs.extend(std::iter::repeat_n(code(KeyCode::Backspace), 5));
    msgs.extend(typed("t-1"));
    msgs.push(code(KeyCode::Enter));
    feed(&mut s, msgs);
    let vis = s.trajs.visible();
    assert_eq!(vis.len(), 10);
    assert!(vis
        .iter()
        .all(|q| s.trajs.get(*q).expect("item").task_id == "t-1"));
    // By text, case-insensitive.
    let mut msgs = vec![key('/')];
    msgs.extend(std::iter::repeat_n(code(KeyCode::Backspace), 3));
    msgs.extend(typed("LYON"));
    msgs.push(code(KeyCode::Enter));
    feed(&mut s, msgs);
    assert_eq!(s.trajs.visible().len(), 10);
    // Esc cancels the prompt without changing the search; an empty search clears.
    feed(&mut s, [key('/'), key('z'), code(KeyCode::Esc)]);
    assert_eq!(s.trajs.search, "LYON");
    let mut msgs = vec![key('/')];
    msgs.extend(std::iter::repeat_n(code(KeyCode::Backspace), 4));
    msgs.push(code(KeyCode::Enter));
    feed(&mut s, msgs);
    assert_eq!(s.trajs.visible().len(), 30);
}

#[test]
fn jump_to_step_selects_that_step() {
    let mut s = live_state(20);
    let mut msgs = vec![key('g')];
    msgs.extend(typed("7x"));
    msgs.push(code(KeyCode::Enter));
    feed(&mut s, msgs);
    let it = s
        .trajs
        .get(s.trajs.current().expect("selection"))
        .expect("item");
    assert_eq!(it.step, 7);
    assert!(s.flash.as_deref().is_some_and(|f| f.contains("step 7")));
    // Beyond the end: the newest step at or before it.
    let mut msgs = vec![key('g')];
    msgs.extend(typed("999"));
    msgs.push(code(KeyCode::Enter));
    feed(&mut s, msgs);
    let it = s
        .trajs
        .get(s.trajs.current().expect("selection"))
        .expect("item");
    assert_eq!(it.step, 20);
}

#[test]
fn training_controls_send_commands() {
    let mut s = live_state(3);
    assert_eq!(
        feed(&mut s, [key('p')]),
        vec![Effect::Command(TrainCommand::Pause)]
    );
    feed(
        &mut s,
        [Msg::Engine(TrainEvent::Status {
            state: RunState::Paused,
            message: "paused after step 3".into(),
        })],
    );
    assert_eq!(s.run_state, RunState::Paused);
    assert_eq!(
        feed(&mut s, [key('p')]),
        vec![Effect::Command(TrainCommand::Resume)]
    );
    assert_eq!(
        feed(&mut s, [key('s')]),
        vec![Effect::Command(TrainCommand::SaveCheckpoint)]
    );
    // Stop asks for confirmation.
    assert!(feed(&mut s, [key('x')]).is_empty());
    assert!(feed(&mut s, [key('n')]).is_empty());
    assert!(feed(&mut s, [key('x')]).is_empty());
    assert_eq!(
        feed(&mut s, [key('y')]),
        vec![Effect::Command(TrainCommand::Stop)]
    );
}

#[test]
fn quit_in_live_mode_stops_then_waits_for_finished() {
    let mut s = live_state(3);
    assert_eq!(
        feed(&mut s, [key('q')]),
        vec![Effect::Command(TrainCommand::Stop)]
    );
    assert!(feed(&mut s, [Msg::Tick(1_000)]).is_empty(), "still waiting");
    let eff = feed(
        &mut s,
        [Msg::Engine(TrainEvent::Finished {
            step: 3,
            completed: false,
            checkpoint: None,
            message: "stopped by user".into(),
        })],
    );
    assert_eq!(eff, vec![Effect::Quit]);
}

#[test]
fn quit_times_out_and_second_q_or_ctrl_c_forces() {
    let mut s = AppState::new(
        Mode::Live,
        StateOptions {
            quit_timeout_ms: 5_000,
            ..StateOptions::default()
        },
    );
    feed(&mut s, recorded_events(2).into_iter().map(Msg::Engine));
    feed(&mut s, [Msg::Tick(1_000)]);
    assert_eq!(
        feed(&mut s, [ctrl('c')]),
        vec![Effect::Command(TrainCommand::Stop)]
    );
    assert!(feed(&mut s, [Msg::Tick(5_999)]).is_empty());
    assert_eq!(feed(&mut s, [Msg::Tick(6_000)]), vec![Effect::Quit]);
    let mut s = live_state(2);
    feed(&mut s, [key('q')]);
    assert_eq!(feed(&mut s, [key('q')]), vec![Effect::Quit]);
}

#[test]
fn engine_errors_are_shown_not_fatal() {
    let mut s = live_state(3);
    feed(
        &mut s,
        [Msg::Engine(TrainEvent::Error(
            "CUDA out of memory in step 4".into(),
        ))],
    );
    assert!(screen(&s).contains("engine error: CUDA out of memory"));
    assert!(s.log.iter().any(|l| l.text.contains("out of memory")));
    // The UI keeps working and the banner goes away on the next key.
    feed(&mut s, [key('j')]);
    assert!(s.last_error.is_none());
    feed(&mut s, [Msg::EngineGone]);
    assert!(!s.engine_connected);
    assert_eq!(
        feed(&mut s, [key('q')]),
        vec![Effect::Quit],
        "no trainer: quit at once"
    );
}

#[test]
fn live_buffer_is_bounded_and_old_records_reload_from_disk() {
    let mut s = AppState::new(
        Mode::Live,
        StateOptions {
            live_capacity: 50,
            full_records: 10,
            ..StateOptions::default()
        },
    );
    feed(&mut s, recorded_events(40).into_iter().map(Msg::Engine));
    assert_eq!(s.trajs.len(), 50);
    assert_eq!(s.trajs.dropped, 70);
    assert_eq!(s.trajs.iter().filter(|it| it.record.is_some()).count(), 10);
    // Expanding an item without its record asks the loop to read it from the session files.
    feed(&mut s, std::iter::repeat_n(key('j'), 30));
    let eff = feed(&mut s, [code(KeyCode::Enter)]);
    match eff.as_slice() {
        [Effect::Load {
            disk_index: None,
            task_id,
            ..
        }] => assert!(task_id.starts_with("t-")),
        other => panic!("expected a Load effect, got {other:?}"),
    }
    assert!(screen(&s).contains("loading…"));
}

#[test]
fn resumed_run_replaces_reemitted_metrics() {
    let mut s = live_state(10);
    feed(
        &mut s,
        [Msg::Engine(TrainEvent::Metrics(common::fixture::metrics(
            6,
        )))],
    );
    assert_eq!(
        s.metrics.iter().map(|m| m.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
}

#[test]
fn chart_and_pane_keys() {
    let mut s = live_state(3);
    assert_eq!(s.chart, ChartKind::Success);
    feed(&mut s, [key('c')]);
    assert_eq!(s.chart, ChartKind::Components);
    feed(&mut s, [key('c'), key('c'), key('c')]);
    assert_eq!(s.chart, ChartKind::Success);
    feed(&mut s, [key('w')]);
    assert!(matches!(s.range, ChartRange::Window(_)));
    feed(&mut s, [key('w')]);
    assert_eq!(s.range, ChartRange::Whole);
    feed(&mut s, [code(KeyCode::Tab)]);
    assert_eq!(s.focus, Pane::Log);
    feed(&mut s, [code(KeyCode::BackTab)]);
    assert_eq!(s.focus, Pane::Trajectories);
    feed(&mut s, [key('?')]);
    assert!(s.help);
    feed(&mut s, [key('x')]);
    assert!(!s.help, "any key closes help without acting");
    assert!(s.input.is_none());
}

#[test]
fn replay_has_no_training_controls_and_search_loads_texts() {
    let mut s = AppState::new(Mode::Replay, StateOptions::default());
    let entries = (0..5)
        .map(|i| {
            let t = common::fixture::trajectory(i + 1, i);
            (i as usize, cahl_sessions::TrajectorySummary::from(&t), None)
        })
        .collect();
    feed(
        &mut s,
        [Msg::Disk(DiskBatch {
            metrics: (1..=5).map(common::fixture::metrics).collect(),
            entries,
            problems: vec!["trajectories.jsonl:6: torn tail".into()],
            ..DiskBatch::default()
        })],
    );
    for c in ['p', 's', 'x'] {
        assert!(feed(&mut s, [key(c)]).is_empty());
        assert!(s
            .flash
            .as_deref()
            .is_some_and(|f| f.contains("only available")));
    }
    let mut msgs = vec![key('/')];
    msgs.extend(typed("paris"));
    msgs.push(code(KeyCode::Enter));
    assert_eq!(feed(&mut s, msgs), vec![Effect::LoadTexts]);
    let seqs: Vec<u64> = s.trajs.iter().map(|it| it.seq).collect();
    feed(
        &mut s,
        [Msg::Texts(
            seqs.iter()
                .map(|q| {
                    let t = common::fixture::trajectory(q + 1, *q);
                    (*q, t.task.text, (2, 2))
                })
                .collect(),
        )],
    );
    assert_eq!(s.trajs.visible().len(), 1);
    assert_eq!(s.problems.len(), 1);
    assert_eq!(feed(&mut s, [key('q')]), vec![Effect::Quit]);
}

#[test]
fn debugger_opens_on_selected_trajectory_and_closes() {
    let mut s = live_state(3);
    assert!(feed(&mut s, [key('d')]).is_empty());
    let d = s.debugger.as_ref().expect("debugger open");
    assert_eq!(d.task.id, "t-2");
    assert_eq!(d.branches.len(), 1);
    assert!(d.branches[0].from_trace);
    assert_eq!(d.branches[0].steps.len(), 2);
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
    feed(&mut s, [key('z'), key('n')]);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(d.message.as_deref(), Some(NEEDS_MODEL));
    // Edit: split the first sub-task in two.
    let mut msgs = vec![key('e'), code(KeyCode::End)];
    msgs.push(code(KeyCode::Enter));
    msgs.extend(typed("Check the forecast source"));
    msgs.push(code(KeyCode::Esc));
    feed(&mut s, msgs);
    let d = s.debugger.as_ref().expect("debugger");
    assert_eq!(d.branches.len(), 2);
    assert_eq!(d.current, 1);
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
    assert_eq!(b.current, 1);
    assert!(b.branch().subtasks[1].ends_with(" now"));
    assert!(cahl_ui::DebugSessionFile::from_json("{\"version\": 99}").is_err());
    assert!(cahl_ui::DebugSessionFile::from_json("not json").is_err());
}

#[test]
fn release_events_are_ignored() {
    use ratatui::crossterm::event::{KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
    let mut s = live_state(2);
    let k = KeyEvent {
        code: KeyCode::Char('q'),
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Release,
        state: KeyEventState::NONE,
    };
    assert!(update(&mut s, Msg::Key(k)).is_empty());
}

#[test]
fn expanded_view_scrolls_within_its_content() {
    let mut s = live_state(2);
    feed(&mut s, [code(KeyCode::Enter)]);
    assert!(s.trajs.expanded);
    feed(&mut s, std::iter::repeat_n(key('j'), 10_000));
    let max = s.trajs.detail_scroll;
    assert!(max > 10 && max < 200, "clamped to the content: {max}");
    feed(&mut s, [key('k')]);
    assert_eq!(
        s.trajs.detail_scroll,
        max - 1,
        "one key press moves back immediately"
    );
    assert!(screen(&s).contains("trajectory t-2"));
    feed(&mut s, [code(KeyCode::Enter)]);
    assert!(!s.trajs.expanded);
}

/// A live state whose debugger model loads on demand (like `cahl-tui train`).
fn live_with_loader(steps: u64) -> AppState {
    let mut s = AppState::new(
        Mode::Live,
        StateOptions {
            loader: Some("tiny.gguf (second copy, ~1 MB)".into()),
            ..StateOptions::default()
        },
    );
    feed(&mut s, recorded_events(steps).into_iter().map(Msg::Engine));
    s
}

fn loaded(step: Option<u64>, result: Result<&str, &str>) -> Msg {
    Msg::Backend(BackendReply::Loaded {
        step,
        result: result.map(str::to_string).map_err(str::to_string),
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
    feed(
        &mut s,
        [Msg::Engine(TrainEvent::Checkpoint(
            cahl_sessions::CheckpointRecord {
                step: 4,
                path: "checkpoints/step-4".into(),
                created_at: String::new(),
            },
        ))],
    );
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
    s.trajs
        .push_record(Box::new(common::fixture::trajectory(1, 0)));
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

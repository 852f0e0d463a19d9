//! Update-logic tests of the dashboard: recorded engine events (written to a session first, as
//! the engine does) and key presses in, state and effects out.

mod common;

use cahl_sessions::{RunState, TrainCommand, TrainEvent};
use cahl_ui::state::charts::{ChartKind, ChartRange};
use cahl_ui::state::trajs::Filter;
use cahl_ui::state::{update, AppState, DiskBatch, Effect, Mode, Msg, Pane, StateOptions};
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
    assert!(s
        .log
        .iter()
        .any(|l| l.text == "checkpoint saved: step 10 (checkpoints/step-10)"));
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
    // Then the failure labels the failed trajectories carry (the fixture's: plan_too_coarse).
    feed(&mut s, [key('f')]);
    assert_eq!(s.trajs.filter.label(), "plan_too_coarse");
    let coarse = s.trajs.visible();
    assert!(!coarse.is_empty());
    assert!(coarse.iter().all(|q| {
        let it = s.trajs.get(*q).expect("item");
        !it.success && it.failure.as_deref() == Some("plan_too_coarse")
    }));
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
    s.send_all(
        (5..=6).map(|st| TrainEvent::Trajectory(Box::new(common::fixture::trajectory(st, 0)))),
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
    let mut s = live_run(
        StateOptions {
            quit_timeout_ms: 5_000,
            ..StateOptions::default()
        },
        2,
    );
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

/// A termination signal ends the UI as `q` does: a live run is asked to stop (and save), the
/// signal is logged, and a diverged or unfinished run's end is a warning.
#[test]
fn a_signal_stops_the_live_run_like_q() {
    let mut s = live_state(3);
    assert_eq!(
        feed(&mut s, [Msg::Signal("SIGTERM")]),
        vec![Effect::Command(TrainCommand::Stop)]
    );
    assert!(s.log.iter().any(|l| l.text.contains("SIGTERM received")));
    let eff = feed(
        &mut s,
        [Msg::Engine(TrainEvent::Finished {
            step: 3,
            completed: true,
            checkpoint: None,
            message: "completed; diverged: planner reward collapsed".into(),
        })],
    );
    assert_eq!(eff, vec![Effect::Quit]);
    assert!(s
        .flash
        .as_deref()
        .is_some_and(|f| f.contains("diverged: see messages")));
    // Outside a live run a signal quits at once.
    let mut r = AppState::new(Mode::Replay, StateOptions::default());
    assert_eq!(feed(&mut r, [Msg::Signal("SIGHUP")]), vec![Effect::Quit]);
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
    let mut s = live_run(
        StateOptions {
            live_capacity: 50,
            full_records: 10,
            ..StateOptions::default()
        },
        40,
    );
    assert_eq!(s.trajs.len(), 50);
    assert_eq!(s.trajs.dropped, 70);
    assert_eq!(s.trajs.iter().filter(|it| it.record.is_some()).count(), 10);
    // Expanding an item without its record asks the loop to read it from the session files.
    feed(&mut s, std::iter::repeat_n(key('j'), 30));
    let eff = feed(&mut s, [code(KeyCode::Enter)]);
    let sel = s.trajs.current().expect("selection");
    let index = s.trajs.get(sel).and_then(|it| it.disk_index);
    assert!(index.is_some(), "every live item has its line in the files");
    assert_eq!(
        eff,
        vec![Effect::Load {
            seq: sel,
            disk_index: index
        }]
    );
    assert!(screen(&s).contains("loading…"));
}

#[test]
fn resumed_run_replaces_rewritten_metrics() {
    let mut s = live_state(10);
    s.send(TrainEvent::Metrics(common::fixture::metrics(6)));
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
    // `C` shows each component alone, then all again.
    let n = cahl_ui::state::charts::kind_series(s.chart, &s.metrics).len();
    assert!(n >= 2);
    feed(&mut s, [key('C')]);
    assert_eq!(s.component, Some(0));
    feed(&mut s, std::iter::repeat_n(key('C'), n - 1));
    assert_eq!(s.component, Some(n - 1));
    feed(&mut s, [key('C')]);
    assert_eq!(s.component, None);
    feed(&mut s, [key('C'), key('c')]);
    assert_eq!(s.chart, ChartKind::ExecutorComponents);
    assert_eq!(s.component, None, "a new panel shows all its components");
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
            // An older session's index: no task text or plan shape in the summary, so a
            // search reads the texts from disk.
            let mut sm = cahl_sessions::TrajectorySummary::from(&t);
            sm.task.text.clear();
            sm.plan_shape = None;
            (i as usize, sm, None)
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

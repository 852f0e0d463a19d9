//! Snapshot tests of every view at 120×40 (ratatui `TestBackend` + insta).

mod common;

use cahl_ui::state::debugger::DebugInitial;
use cahl_ui::state::{AppState, DiskBatch, Mode, Msg, StateOptions};
use common::*;
use ratatui::crossterm::event::KeyCode;

#[test]
fn dashboard_live() {
    let s = live_state(30);
    let out = screen(&s);
    assert!(out.contains("mean reward"));
    assert!(out.contains("step 30/100"));
    assert!(out.contains("1834 tok/s"));
    assert!(out.contains("ETA 14m00s"));
    assert!(out.contains("mem 12.0 GiB"));
    assert!(
        out.contains("⣀")
            || out.contains("⠉")
            || out.chars().any(|c| ('\u{2801}'..='\u{28FF}').contains(&c)),
        "braille marks drawn"
    );
    insta::assert_snapshot!("dashboard_live", render(&s));
}

#[test]
fn dashboard_components_window() {
    let mut s = live_state(30);
    feed(&mut s, [key('c'), key('w'), code(KeyCode::Tab)]);
    let out = screen(&s);
    assert!(out.contains("planner reward components"));
    assert!(out.contains("last 100 steps"));
    insta::assert_snapshot!("dashboard_components_window", render(&s));
}

#[test]
fn dashboard_loss_and_kl() {
    let mut s = live_state(30);
    feed(&mut s, [key('c'), key('c')]);
    assert!(screen(&s).contains("executor reward components"));
    feed(&mut s, [key('c')]);
    assert!(screen(&s).contains(" loss "));
    insta::assert_snapshot!("dashboard_loss", render(&s));
    feed(&mut s, [key('c')]);
    assert!(screen(&s).contains(" KL "));
}

#[test]
fn trajectory_expanded() {
    let mut s = live_state(6);
    feed(&mut s, [key('j'), code(KeyCode::Enter)]);
    let out = screen(&s);
    assert!(out.contains("plan #0"));
    assert!(out.contains("(continued)"));
    assert!(out.contains("call: get_weather"));
    insta::assert_snapshot!("trajectory_expanded", render(&s));
}

#[test]
fn help_overlay() {
    let mut s = live_state(5);
    feed(&mut s, [key('?')]);
    let out = screen(&s);
    for (k, _) in cahl_ui::view::help::DASHBOARD_KEYS {
        assert!(out.contains(k), "help lists {k}");
    }
    insta::assert_snapshot!("help_overlay", render(&s));
}

/// The debugger's key list at 80x24 (it was clipped): every key is on the screen.
#[test]
fn debugger_help_fits_a_small_terminal() {
    let (mut s, _) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(common::fixture::trajectory(3, 0)),
            plan_index: None,
        },
        StateOptions::default(),
    );
    feed(&mut s, [key('?')]);
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    t.draw(|f| cahl_ui::view::draw(f, &s)).unwrap();
    let out = t.backend().to_string();
    for (k, _) in cahl_ui::view::help::DEBUGGER_KEYS {
        assert!(out.contains(k), "the 80x24 debugger help lists {k}:\n{out}");
    }
}

#[test]
fn debugger_from_trace_without_model() {
    let (s, _) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(common::fixture::trajectory(3, 0)),
            plan_index: Some(1),
        },
        StateOptions::default(),
    );
    let out = screen(&s);
    assert!(out.contains("no model"));
    assert!(out.contains("executor prompt"));
    assert!(out.contains("calls diverge from gold at call #1"));
    insta::assert_snapshot!("debugger_trace", render(&s));
}

#[test]
fn debugger_edited_branch_run_and_compare() {
    let opts = StateOptions {
        backend: Some("fake test backend".into()),
        ..StateOptions::default()
    };
    let (mut s, _) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(common::fixture::trajectory(3, 0)),
            plan_index: None,
        },
        opts,
    );
    let mut msgs = vec![key('e'), code(KeyCode::Down), code(KeyCode::End)];
    msgs.extend(typed(" at 8pm"));
    msgs.push(code(KeyCode::Esc));
    msgs.push(key('r'));
    let eff = feed(&mut s, msgs);
    let mut fake = FakeBackend::default();
    drive_backend(&mut s, &mut fake, eff);
    let out = screen(&s);
    assert!(out.contains("edit 1 [2/2]"));
    assert!(
        out.contains("differs from the gold plan at sub-task 2"),
        "{out}"
    );
    insta::assert_snapshot!("debugger_run", render(&s));
    feed(&mut s, [key('c')]);
    let out = screen(&s);
    assert!(out.contains("(current)") && out.contains(" gold "));
    insta::assert_snapshot!("debugger_compare", render(&s));
}

#[test]
fn debugger_editing() {
    let (mut s, _) = AppState::debugger(
        DebugInitial::Trajectory {
            record: Box::new(common::fixture::trajectory(3, 0)),
            plan_index: None,
        },
        StateOptions::default(),
    );
    feed(&mut s, [key('e')]);
    assert!(screen(&s).contains("edit plan"));
    insta::assert_snapshot!("debugger_editing", render(&s));
}

#[test]
fn replay_with_problem_banner() {
    let mut s = AppState::new(Mode::Replay, StateOptions::default());
    s.session_path = Some("sessions/run-20261121-060000".into());
    let entries = (1..=20u64)
        .flat_map(|st| (0..2).map(move |k| (st, k)))
        .enumerate()
        .map(|(i, (st, k))| {
            let t = common::fixture::trajectory(st, k);
            (i, cahl_sessions::TrajectorySummary::from(&t), None)
        })
        .collect();
    feed(
        &mut s,
        [Msg::Disk(DiskBatch {
            metrics: (1..=20).map(common::fixture::metrics).collect(),
            entries,
            problems: vec![
                "sessions/run-20261121-060000/trajectories.jsonl:41: invalid record: invalid type: string \"x\", expected u64".into(),
                "sessions/run-20261121-060000/trajectories.jsonl:42: torn last line (no newline)".into(),
            ],
            run_info: Some(common::fixture::run_info(40)),
            ..DiskBatch::default()
        })],
    );
    let out = screen(&s);
    assert!(out.contains("2 file problems"), "{out}");
    assert!(out.contains("REPLAY"));
    insta::assert_snapshot!("replay_problem_banner", render(&s));
}

#[test]
fn debugger_live_model_loading_and_ready() {
    use cahl_sessions::{BackendJob, BackendReply};
    let mut s = live_run(
        StateOptions {
            loader: Some("tiny.gguf (second copy, ~1 MB)".into()),
            ..StateOptions::default()
        },
        12,
    );
    feed(&mut s, [key('d')]);
    assert!(screen(&s).contains("not loaded yet: n/r/p or L loads it"));
    let eff = feed(&mut s, [key('z'), key('n')]);
    assert!(matches!(
        eff.as_slice(),
        [cahl_ui::state::Effect::Backend(BackendJob::Load { .. })]
    ));
    let out = screen(&s);
    assert!(out.contains("loading model… tiny.gguf"), "{out}");
    assert!(out.contains("adapters of checkpoint step 10"), "{out}");
    insta::assert_snapshot!("debugger_live_loading", render(&s));
    let eff = feed(
        &mut s,
        [Msg::Backend(BackendReply::Loaded {
            step: Some(10),
            result: Ok("tiny.gguf · planner+executor adapters of step-10".into()),
        })],
    );
    drive_backend(&mut s, &mut FakeBackend::default(), eff);
    s.send(cahl_sessions::TrainEvent::Checkpoint(
        cahl_sessions::CheckpointRecord {
            step: 20,
            path: "checkpoints/step-20".into(),
            created_at: String::new(),
        },
    ));
    let out = screen(&s);
    assert!(out.contains("adapters of step-10"), "{out}");
    assert!(out.contains("newer checkpoint step 20"), "{out}");
    insta::assert_snapshot!("debugger_live_ready_newer_checkpoint", render(&s));
}

#[test]
fn debugger_benchmark_task_compare() {
    let task = cahl_sessions::DebugTask {
        id: "level-1-0".into(),
        text: "Can you please modify my appointment scheduled for March 25th with Dr. Kim to March 26th with Dr. Lee?".into(),
        world: "api-bank".into(),
        tools: vec![serde_json::json!({"name": "ModifyRegistration", "description": "", "parameters": {"type": "object", "properties": {}}})],
        gold_calls: vec![cahl_sessions::CallRecord {
            name: "ModifyRegistration".into(),
            arguments: serde_json::json!({"appointment_id": "34567890", "new_appointment_date": "2023-03-26", "new_appointment_doctor": "Dr. Lee"}),
        }],
        ..cahl_sessions::DebugTask::default()
    };
    let (mut s, _) = AppState::debugger(
        DebugInitial::Task {
            task,
            plan: vec!["Modify appointment 34567890 to 2023-03-26 with Dr. Lee".into()],
            seed: 0,
        },
        StateOptions {
            backend: Some("fake test backend".into()),
            ..StateOptions::default()
        },
    );
    let eff = feed(&mut s, [key('r')]);
    drive_backend(&mut s, &mut FakeBackend::default(), eff);
    feed(&mut s, [key('c')]);
    let out = screen(&s);
    assert!(
        out.contains("task level-1-0 · api-bank benchmark item, 1 tool"),
        "{out}"
    );
    assert!(out.contains("≠ gold from call #1"), "{out}");
    insta::assert_snapshot!("debugger_benchmark_compare", render(&s));
}

/// An oracle run says so in the header; a plan executed twice shows both executions, and a
/// failed plan its failure side.
#[test]
fn oracle_header_and_several_executions() {
    use cahl_sessions::TrainEvent;
    let mut s = common::LiveRun::new(cahl_ui::state::StateOptions::default());
    s.send(TrainEvent::Started {
        info: common::fixture::run_info(100),
        total_steps: 100,
        start_step: 0,
        session_dir: std::path::PathBuf::from("ignored"),
        device: "cpu".into(),
    });
    let mut t = common::fixture::trajectory(1, 1);
    for p in &mut t.plans {
        let again: Vec<_> = p
            .steps
            .iter()
            .cloned()
            .map(|mut st| {
                st.execution = 1;
                st
            })
            .collect();
        p.steps.extend(again);
    }
    s.send(TrainEvent::Trajectory(Box::new(t)));
    s.send(TrainEvent::Metrics(common::fixture::metrics(1)));
    // The run info comes from the session's run.json, which the engine writes with `oracle`.
    s.run_info.as_mut().expect("run info").oracle = true;
    let out = screen(&s);
    assert!(out.contains("ORACLE continuation"), "{out}");
    feed(&mut s, [code(KeyCode::Enter)]);
    let out = screen(&s);
    // Steps are labelled by execution once a plan has several (the second is further down).
    assert!(out.contains("execution 1"), "{out}");
}

/// The dashboard at 80x24: one pane at a time under a tab line; `1` the charts, `2` the stream,
/// `tab` the messages.
#[test]
fn dashboard_at_80x24_shows_one_pane_at_a_time() {
    let draw = |s: &AppState| {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
        t.draw(|f| cahl_ui::view::draw(f, s)).unwrap();
        t.backend().clone()
    };
    let mut s = live_state(12);
    let out = draw(&s).to_string();
    assert!(
        out.contains("2 trajectories") && out.contains("trajectories · all"),
        "{out}"
    );
    insta::assert_snapshot!("dashboard_80x24_stream", draw(&s));
    feed(&mut s, [key('1')]);
    let out = draw(&s).to_string();
    assert!(
        out.contains("mean reward") && out.contains("rates"),
        "{out}"
    );
    insta::assert_snapshot!("dashboard_80x24_charts", draw(&s));
    feed(&mut s, [key('2'), code(KeyCode::Tab)]);
    let out = draw(&s).to_string();
    assert!(
        out.contains("messages") && !out.contains("mean reward"),
        "{out}"
    );
}

/// A live run's debugger with its model loaded from checkpoint step 10 (step 20 saved since).
fn debugger_with_checkpoints() -> LiveRun {
    use cahl_sessions::BackendReply;
    let mut s = live_run(
        StateOptions {
            loader: Some("tiny.gguf (second copy, ~1 MB)".into()),
            ..StateOptions::default()
        },
        12,
    );
    feed(&mut s, [key('d')]);
    feed(
        &mut s,
        [Msg::Backend(BackendReply::Loaded {
            step: Some(10),
            result: Ok("tiny.gguf · planner+executor adapters of step-10".into()),
        })],
    );
    s.send(cahl_sessions::TrainEvent::Checkpoint(
        cahl_sessions::CheckpointRecord {
            step: 20,
            path: "checkpoints/step-20".into(),
            created_at: String::new(),
        },
    ));
    s
}

#[test]
fn debugger_measured_plan_picker_and_case_prompt() {
    let mut s = debugger_with_checkpoints();
    let eff = feed(&mut s, [key('m')]);
    drive_backend(&mut s, &mut FakeBackend::default(), eff);
    let out = screen(&s);
    // The fake backend fails runs r with (seed + r) % 3 == 0: r = 0, 3, 6, 9 of seed 1122.
    assert!(out.contains("6/10 solved (60%)"), "{out}");
    assert!(out.contains("failures: plan_too_coarse 4"), "{out}");
    insta::assert_snapshot!("debugger_measured_160x48", render_at(&s, 160, 48));
    insta::assert_snapshot!("debugger_measured_80x24", render_at(&s, 80, 24));
    feed(&mut s, [key('o')]);
    let out = render_at(&s, 160, 48).to_string();
    assert!(out.contains("● checkpoint step 10"), "{out}");
    assert!(
        out.contains("checkpoint step 20") && out.contains("fresh adapters"),
        "{out}"
    );
    insta::assert_snapshot!("debugger_picker_160x48", render_at(&s, 160, 48));
    insta::assert_snapshot!("debugger_picker_80x24", render_at(&s, 80, 24));
    // j then enter: the adapters of step 20 are loaded.
    let eff = feed(&mut s, [key('j'), code(KeyCode::Enter)]);
    match eff.as_slice() {
        [cahl_ui::state::Effect::Backend(cahl_sessions::BackendJob::Load { checkpoint, step })] => {
            assert_eq!(*step, Some(20));
            assert!(checkpoint
                .as_ref()
                .is_some_and(|p| p.ends_with("checkpoints/step-20")));
        }
        other => panic!("expected a load of step 20, got {other:?}"),
    }
    assert!(screen(&s).contains("loading model…"));
    feed(&mut s, [key('a')]);
    feed(
        &mut s,
        typed("plan_too_coarse the executor makes one call per step"),
    );
    insta::assert_snapshot!("debugger_case_prompt_80x24", render_at(&s, 80, 24));
    insta::assert_snapshot!("debugger_case_prompt_160x48", render_at(&s, 160, 48));
    let eff = feed(&mut s, [code(KeyCode::Enter)]);
    match eff.as_slice() {
        [cahl_ui::state::Effect::SaveCase { session, case }] => {
            assert_eq!(Some(session.clone()), s.session_dir());
            assert_eq!(
                case.expect,
                cahl_sessions::Expect::Label("plan_too_coarse".into())
            );
            assert_eq!(case.note, "the executor makes one call per step");
            assert_eq!(case.plan, s.debugger.as_ref().unwrap().branch().subtasks);
            assert_eq!((case.seed, case.samples), (1122, 10));
        }
        other => panic!("expected a case to save, got {other:?}"),
    }
}

fn case_library() -> cahl_ui::state::cases::CasesView {
    use cahl_sessions::{CaseCell, CaseRecord, CaseRow, CasesReport, Expect};
    let case = |id: &str, expect: Expect, note: &str| CaseRecord {
        id: id.into(),
        task: cahl_sessions::DebugTask {
            id: "builtin-train-0-12".into(),
            ..Default::default()
        },
        plan: vec!["a".into(), "b".into()],
        samples: 10,
        expect,
        note: note.into(),
        ..CaseRecord::default()
    };
    let cell = |successes: usize, pass: bool, top: Option<(&str, usize)>| CaseCell {
        successes,
        runs: 10,
        planner_reward: 1.5,
        top_failure: top.map(|(l, k)| (l.to_string(), k)),
        pass,
        error: None,
    };
    let report = CasesReport {
        version: 1,
        created: "2026-12-06T23:40:00Z".into(),
        model: "embedded".into(),
        checkpoints: vec!["step-25".into(), "step-100".into()],
        rows: vec![
            CaseRow {
                id: "case-001".into(),
                expect: Expect::Solves,
                cells: vec![
                    cell(2, false, Some(("plan_too_coarse", 8))),
                    cell(7, true, Some(("executor_failed", 3))),
                ],
                ..CaseRow::default()
            },
            CaseRow {
                id: "case-002".into(),
                expect: Expect::Label("subtask_value_missing".into()),
                cells: vec![
                    cell(0, true, Some(("subtask_value_missing", 10))),
                    cell(1, true, Some(("subtask_value_missing", 9))),
                ],
                ..CaseRow::default()
            },
        ],
        problems: vec![],
    };
    cahl_ui::state::cases::CasesView {
        cases: vec![
            case(
                "case-001",
                Expect::Solves,
                "merged transfer the executor cannot carry out",
            ),
            case(
                "case-002",
                Expect::Label("subtask_value_missing".into()),
                "the plan drops the amount",
            ),
            case("case-003", Expect::Fails, "saved after the last run"),
        ],
        report: Some(report),
        problems: vec!["skipped: cases/case-009.json: invalid JSON: EOF".into()],
        session: "runs/run-20261206-230000".into(),
        scroll: 0,
    }
}

#[test]
fn case_library_overlay() {
    let mut s = AppState::new(Mode::Replay, StateOptions::default());
    s.session_path = Some("runs/run-20261206-230000".into());
    let eff = feed(&mut s, [key('v')]);
    assert!(matches!(
        eff.as_slice(),
        [cahl_ui::state::Effect::LoadCases { session }] if session.ends_with("run-20261206-230000")
    ));
    feed(&mut s, [Msg::Cases(Box::new(case_library()))]);
    let out = render_at(&s, 160, 48).to_string();
    assert!(out.contains("step-25") && out.contains("step-100"), "{out}");
    assert!(out.contains("✗ 2/10 · plan_too_coarse 8"), "{out}");
    assert!(
        out.contains("not run"),
        "case-003 is not in the report:\n{out}"
    );
    assert!(out.contains("passing"), "{out}");
    insta::assert_snapshot!("cases_160x48", render_at(&s, 160, 48));
    insta::assert_snapshot!("cases_80x24", render_at(&s, 80, 24));
    feed(&mut s, [key('x')]);
    assert!(s.cases.is_none(), "any other key closes the overlay");
}

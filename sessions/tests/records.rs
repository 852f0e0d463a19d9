//! Serde round trips and forward/backward compatibility of the record types.

mod common;

use cahl_sessions::*;
use common::*;

#[test]
fn trajectory_round_trips_through_one_line() {
    let t = trajectory(3, 1);
    let line = serde_json::to_string(&t).unwrap();
    assert!(!line.contains('\n'), "a record must be a single line");
    let back: TrajectoryRecord = serde_json::from_str(&line).unwrap();
    assert_eq!(back, t);
    // The optional prompt is omitted when absent and kept when present.
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["plans"][0]["steps"][0].get("prompt").is_some());
    assert!(v["plans"][1]["steps"][0].get("prompt").is_none());
    assert_eq!(v["plans"][0]["steps"][0]["continued"], 2);
    assert_eq!(v["task"]["gold_calls"][0]["arguments"]["city"], "Paris");
}

#[test]
fn metrics_and_small_records_round_trip() {
    let m = metrics(7);
    let back: MetricsRecord = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);

    let r = reward(1.0);
    let back: RewardBreakdown = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);

    let info = run_info();
    assert_eq!(info.format_version, FORMAT_VERSION);
    assert!(info.started_at.ends_with('Z') && info.started_at.len() == 20);
    let back: RunInfo = serde_json::from_str(&serde_json::to_string(&info).unwrap()).unwrap();
    assert_eq!(back, info);

    let c = CheckpointRecord {
        step: 12,
        path: "checkpoints/step-12".into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    let back: CheckpointRecord = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn non_finite_floats_are_written_as_null_and_read_as_nan() {
    let mut m = metrics(1);
    m.planner.loss = f64::NAN;
    m.executor.kl = f64::INFINITY;
    m.components
        .insert("executor/format".into(), f64::NEG_INFINITY);
    let mut t = trajectory(1, 0);
    t.plans[0].steps[0].samples[0].advantage = Some(f64::NAN);
    t.plans[0].reward.total = f64::NAN;

    let line = serde_json::to_string(&m).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(v["planner"]["loss"].is_null());
    assert!(v["executor"]["kl"].is_null());
    assert!(v["components"]["executor/format"].is_null());
    let back: MetricsRecord = serde_json::from_str(&line).unwrap();
    assert!(back.planner.loss.is_nan());
    assert!(back.executor.kl.is_nan());
    assert!(back.components["executor/format"].is_nan());
    assert_eq!(back.planner.kl, m.planner.kl);

    let back: TrajectoryRecord = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back.plans[0].steps[0].samples[0].advantage, None);
    assert!(back.plans[0].reward.total.is_nan());
    assert_eq!(back.plans[0].steps[0].samples[1].advantage, Some(-0.5));
}

#[test]
fn missing_fields_default_and_unknown_fields_are_ignored() {
    let m: MetricsRecord =
        serde_json::from_str(r#"{"step": 4, "planner_reward": 0.5, "future_field": [1,2]}"#)
            .unwrap();
    assert_eq!(m.step, 4);
    assert_eq!(m.planner_reward, 0.5);
    assert!(m.executor_reward.is_nan(), "missing float means unknown");
    assert!(m.planner.loss.is_nan());
    assert!(!m.planner.skipped);
    assert!(m.components.is_empty());

    let t: TrajectoryRecord = serde_json::from_str(
        r#"{"step": 2, "task": {"id": "t1"}, "plans": [{"steps": [{"samples": [{"raw_text": "x"}]}]}], "new": true}"#,
    )
    .unwrap();
    assert_eq!(t.task.id, "t1");
    assert_eq!(t.plans[0].steps[0].samples[0].raw_text, "x");
    assert_eq!(t.plans[0].steps[0].samples[0].advantage, None);
    assert_eq!(t.plans[0].steps[0].continued, 0);

    let s: TrajectorySummary =
        serde_json::from_str(&serde_json::to_string(&trajectory(9, 3)).unwrap()).unwrap();
    assert_eq!(s, TrajectorySummary::from(&trajectory(9, 3)));
    assert_eq!(s.task.id, "task-9-3");
}

#[test]
fn arbitrary_floats_round_trip_to_within_one_ulp() {
    // serde_json's default parser (without the `float_roundtrip` feature) may be off by one ulp
    // for some values; the format guarantees the written text is the shortest exact repr.
    let mut m = metrics(1);
    m.executor_reward = 0.2 * 7.0; // 1.4000000000000001
    m.planner.lr = 3.0e-7 / 3.0;
    m.components.insert("x".into(), std::f64::consts::PI);
    let line = serde_json::to_string(&m).unwrap();
    assert!(line.contains("1.4000000000000001"), "{line}");
    let back: MetricsRecord = serde_json::from_str(&line).unwrap();
    for (a, b) in [
        (back.executor_reward, m.executor_reward),
        (back.planner.lr, m.planner.lr),
        (back.components["x"], m.components["x"]),
    ] {
        assert!((a - b).abs() <= b.abs() * f64::EPSILON, "{a} vs {b}");
    }
}

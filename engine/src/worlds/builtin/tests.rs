//! Tests of the built-in world: assets, generation, splits, tool behaviour.
use std::collections::HashSet;

use serde_json::json;

use super::*;
use crate::parse::validate_call;
use crate::worlds::Split;

#[test]
fn assets_parse_and_have_enough_tools_and_templates() {
    assert!(builtin_tools().len() >= 20);
    assert!(template_count() >= 30);
    let names: HashSet<_> = builtin_tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), builtin_tools().len(), "tool names unique");
}

#[test]
fn every_template_instantiates_and_gold_calls_are_schema_valid() {
    for seed in 0..20 {
        let tasks = instantiate_all(seed).unwrap();
        for t in &tasks {
            assert!((1..=5).contains(&t.gold_calls.len()), "{:?}", t.template);
            assert_eq!(t.gold_plan.len(), t.gold_calls.len(), "{:?}", t.template);
            for c in &t.gold_calls {
                assert!(
                    validate_call(c, builtin_tools()).is_empty(),
                    "{:?} {c:?}",
                    t.template
                );
            }
            assert!(!t.request.contains('{') && t.gold_plan.iter().all(|p| !p.contains('{')));
        }
    }
}

#[test]
fn generation_is_deterministic_and_splits_disjoint() {
    let a = generate_tasks(Split::Train, 200, 1).unwrap();
    let b = generate_tasks(Split::Train, 200, 1).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 200);
    let dev = generate_tasks(Split::Dev, 50, 1).unwrap();
    let test = generate_tasks(Split::Test, 50, 2).unwrap();
    assert_eq!(dev.len(), 50);
    let train_req: HashSet<_> = generate_tasks(Split::Train, 1000, 3)
        .unwrap()
        .into_iter()
        .map(|t| t.request)
        .collect();
    for t in dev.iter().chain(test.iter()) {
        assert!(!train_req.contains(&t.request));
    }
    assert!(dev
        .iter()
        .all(|t| !test.iter().any(|u| u.request == t.request)));
    let c = generate_tasks(Split::Train, 200, 2).unwrap();
    assert_ne!(a, c);
}

#[test]
fn dependent_calls_use_earlier_results() {
    let tasks = generate_tasks(Split::Train, 400, 5).unwrap();
    let t = tasks
        .iter()
        .find(|t| t.template.as_deref() == Some("balance"))
        .unwrap();
    assert_eq!(t.gold_derived[1], vec!["token".to_string()]);
    let mut w = BuiltinWorld::new();
    w.reset(t).unwrap();
    let tok = w.execute(&t.gold_calls[0]).content["token"].clone();
    assert_eq!(t.gold_calls[1].arguments["token"], tok);
}

#[test]
fn episodes_do_not_leak_state() {
    let tasks = generate_tasks(Split::Train, 5, 9).unwrap();
    let mut w = BuiltinWorld::new();
    w.reset(&tasks[0]).unwrap();
    let s0 = w.final_state();
    assert!(
        w.execute(&ToolCall::new("add_alarm", json!({"time": "11:11"})))
            .ok
    );
    assert_ne!(w.final_state(), s0);
    w.reset(&tasks[1]).unwrap();
    assert_eq!(w.final_state(), s0);
    assert_eq!(BuiltinWorld::new().final_state(), s0);
}

#[test]
fn tools_behave() {
    let mut w = BuiltinWorld::new();
    let bad = w.execute(&ToolCall::new(
        "login",
        json!({"username": "alice", "password": "nope"}),
    ));
    assert!(!bad.ok);
    let tok = w
        .execute(&ToolCall::new(
            "login",
            json!({"username": "alice", "password": "red7"}),
        ))
        .content["token"]
        .as_str()
        .unwrap()
        .to_string();
    let t = w.execute(&ToolCall::new(
        "transfer",
        json!({"token": tok, "from_account": "checking", "to_account": "savings", "amount": 100}),
    ));
    assert!(t.ok, "{t:?}");
    let b = w.execute(&ToolCall::new(
        "get_balance",
        json!({"token": tok, "account": "savings"}),
    ));
    assert_eq!(b.content["balance"], 1300);
    let over = w.execute(&ToolCall::new(
        "transfer",
        json!({"token": tok, "from_account": "checking", "to_account": "savings", "amount": 100000}),
    ));
    assert_eq!(over.content["error"], "insufficient funds");
    let c = w.execute(&ToolCall::new(
        "convert_units",
        json!({"value": 20, "from_unit": "c", "to_unit": "f"}),
    ));
    assert_eq!(c.content["value"], 68);
    let k = w.execute(&ToolCall::new(
        "calculate",
        json!({"expression": "120 * 3"}),
    ));
    assert_eq!(k.content["result"], 360);
    assert!(
        !w.execute(&ToolCall::new(
            "calculate",
            json!({"expression": "__import__('os')"})
        ))
        .ok
    );
    assert!(
        !w.execute(&ToolCall::new("add_alarm", json!({"time": "25:00"})))
            .ok
    );
    assert!(
        !w.execute(&ToolCall::new(
            "add_alarm",
            json!({"time": "10:00", "x": 1})
        ))
        .ok
    );
    assert!(
        !w.execute(&ToolCall::new(
            "get_balance",
            json!({"token": "forged", "account": "checking"})
        ))
        .ok
    );
    let long = "a".repeat(MAX_ARG_LEN + 1);
    assert!(
        !w.execute(&ToolCall::new("get_contact", json!({ "name": long })))
            .ok
    );
    assert!(
        w.execute(&ToolCall::new("logout", json!({"token": tok})))
            .ok
    );
    assert!(
        !w.execute(&ToolCall::new("logout", json!({"token": tok})))
            .ok
    );
}

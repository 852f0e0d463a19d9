//! Property tests: parsers, validation, rewards and the calculator never panic on any input, and
//! well-formed outputs round-trip.
use cahl_engine::parse::{parse_executor, parse_planner, validate_calls, ToolCall};
use cahl_engine::rewards::{
    executor_step_reward, planner_reward, toolrl_reward, PlanEpisode, RewardConfig, ToolRlGold,
};
use cahl_engine::worlds::builtin::{builtin_tools, BuiltinWorld};
use cahl_engine::worlds::calc;
use cahl_engine::worlds::World;
use proptest::prelude::*;

fn tagged() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<think>".to_string()),
        Just("</think>".to_string()),
        Just("<tool_call>".to_string()),
        Just("</tool_call>".to_string()),
        Just("<response>".to_string()),
        Just("</response>".to_string()),
        Just("<plan>".to_string()),
        Just("</plan>".to_string()),
        Just("\n".to_string()),
        Just("{\"name\": \"add_alarm\", \"parameters\": {\"time\": \"07:00\"}}".to_string()),
        Just("{\"name\": 1, \"arguments\": \"{\\\"a\\\":\"}".to_string()),
        Just("1. ".to_string()),
        Just("[{\"name\":\"x\"}, 3]".to_string()),
        "\\PC{0,12}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn parsers_never_panic(s in "\\PC{0,300}") {
        let e = parse_executor(&s);
        let p = parse_planner(&s);
        let _ = validate_calls(&e.calls(), builtin_tools());
        prop_assert!(e.issues.iter().all(|i| !i.message().is_empty()));
        prop_assert!(p.issues.iter().all(|i| !i.message().is_empty()));
    }

    #[test]
    fn tag_soup_never_panics_and_rewards_are_finite(s in tagged()) {
        let cfg = RewardConfig::default();
        let gold = vec![ToolCall::new("add_alarm", serde_json::json!({"time": "07:00"}))];
        let r = executor_step_reward(&s, builtin_tools(), &gold, &cfg);
        prop_assert!(r.total.is_finite() && r.total >= 0.0 && r.total <= 4.0 + 1e-9);
        let t = toolrl_reward(&s, &ToolRlGold::from_calls(gold.clone()), &cfg);
        prop_assert!(t.total >= -3.0 - 1e-9 && t.total <= 4.0 + 1e-9);
        let ep = PlanEpisode { plan_text: &s, executed: &gold, final_state: None, gold_calls: &gold, gold_derived: &[], gold_state: None };
        prop_assert!(planner_reward(&ep, &cfg).total.is_finite());
        let mut w = BuiltinWorld::new();
        for c in parse_executor(&s).calls() {
            let _ = w.execute(&c);
        }
    }

    #[test]
    fn well_formed_calls_round_trip(name in "[a-z_]{1,12}", key in "[a-z]{1,8}", val in "[a-zA-Z0-9 ]{0,16}", n in 1usize..4) {
        let call = ToolCall::new(name.clone(), serde_json::json!({ key.clone(): val.clone() }));
        let lines: Vec<String> = (0..n).map(|_| call.to_toolrl_json()).collect();
        let text = format!("<think>\nx\n</think>\n\n<tool_call>\n{}\n</tool_call>", lines.join("\n"));
        let out = parse_executor(&text);
        prop_assert!(out.issues.is_empty(), "{:?}", out.issues);
        prop_assert_eq!(out.calls(), vec![call; n]);
    }

    #[test]
    fn calculator_never_panics(s in "[0-9+*/%^(). -]{0,80}") {
        if let Ok(v) = calc::eval(&s) { prop_assert!(v.is_finite()); }
    }

    #[test]
    fn world_never_panics_on_arbitrary_arguments(tool in 0usize..22, v in "\\PC{0,40}", n in any::<f64>()) {
        let tools = builtin_tools();
        let t = &tools[tool % tools.len()];
        let mut args = serde_json::Map::new();
        for (i, p) in t.property_names().into_iter().enumerate() {
            let value = if i % 2 == 0 { serde_json::json!(v.clone()) } else { serde_json::Number::from_f64(n).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null) };
            args.insert(p.to_string(), value);
        }
        let mut w = BuiltinWorld::new();
        let obs = w.execute(&ToolCall { name: t.name.clone(), arguments: args });
        prop_assert!(obs.ok || obs.content.get("error").is_some());
    }
}

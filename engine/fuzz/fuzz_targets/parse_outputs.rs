//! Fuzz the executor and planner parsers, schema validation, the rewards and the calculator:
//! none may panic. Run with `cargo +nightly fuzz run parse_outputs` from `engine/`.
#![no_main]
use libfuzzer_sys::fuzz_target;

use cahl_engine::parse::{parse_executor, parse_planner, validate_calls};
use cahl_engine::rewards::{executor_step_reward, toolrl_reward, RewardConfig, ToolRlGold};
use cahl_engine::worlds::builtin::{builtin_tools, BuiltinWorld};
use cahl_engine::worlds::{calc, World};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let out = parse_executor(&s);
    let _ = parse_planner(&s);
    let calls = out.calls();
    let _ = validate_calls(&calls, builtin_tools());
    let cfg = RewardConfig::default();
    let _ = executor_step_reward(&s, builtin_tools(), &calls, &cfg);
    let _ = toolrl_reward(&s, &ToolRlGold::from_calls(calls.clone()), &cfg);
    let _ = calc::eval(&s);
    let mut w = BuiltinWorld::new();
    for c in &calls {
        let _ = w.execute(c);
    }
});

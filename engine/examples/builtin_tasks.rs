//! Print generated built-in world tasks as JSON lines:
//! `cargo run -p cahl-engine --example builtin_tasks -- [train|dev|test] [N] [SEED]`.
use cahl_engine::worlds::builtin::generate_tasks;
use cahl_engine::worlds::Split;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let split = match args.get(1).map(String::as_str) {
        Some("dev") => Split::Dev,
        Some("test") => Split::Test,
        _ => Split::Train,
    };
    let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    for t in generate_tasks(split, n, seed)? {
        println!("{}", serde_json::to_string(&t)?);
    }
    Ok(())
}

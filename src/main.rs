//! `cahl-tui`: train, watch and debug hierarchical tool-using agents.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser, Debug)]
#[command(
    name = "cahl-tui",
    version,
    about = "Train, watch and debug planner/executor LoRA agents with joint GRPO"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate text from a model (optionally with a LoRA adapter and the chat template).
    Generate(cmd::generate::GenerateArgs),
    /// Show a model's architecture, sizes, dtypes and tokenizer / chat-template presence.
    Inspect(cmd::inspect::InspectArgs),
    /// Measure decode / prefill / LoRA training speed and peak memory.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> Result<()> {
    cahl_engine::model::ops::init_cpu_float_mode();
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(a) => cmd::generate::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    }
}

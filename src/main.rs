//! `cahl-tui`: train, watch and debug hierarchical tool-using agents.
use anyhow::Result;
use clap::{Parser, Subcommand};

mod cmd;
mod logging;

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
    /// Train planner and executor adapters jointly with GRPO (CAHL) or an ablation.
    Train(cmd::train::TrainArgs),
    /// Build the embedded default model from scratch (tokenizer + small Llama on gold trajectories).
    Pretrain(cmd::pretrain::PretrainArgs),
    /// Supervised warm start of the planner and executor adapters on gold plans and gold calls
    /// (then `train --init-adapters DIR`).
    Sft(cmd::sft::SftArgs),
    /// Score predictions of any model on BFCL, API-Bank, NESTFUL or Bamboogle.
    Score(cmd::score::ScoreArgs),
    /// Build a BM25 search index for the search-QA world.
    Index(cmd::index::IndexArgs),
    /// The plan-editing debugger: edit a plan and watch the executor respond, branch by branch.
    Debug(cmd::debug::DebugArgs),
    /// Evaluate an agent greedily on the built-in world or a benchmark: accuracy tables,
    /// efficiency, misalignment taxonomy; writes results.jsonl and summary.json.
    Eval(cmd::eval::EvalArgs),
    /// Markdown report of a session: reward curves (SVG and PNG) and its eval tables.
    Report(cmd::report::ReportArgs),
    /// Compare sessions side by side (training curves, evals on the same tasks).
    Compare(cmd::report::CompareArgs),
    /// Browse a recorded run (session directory or trajectories.jsonl) without a model.
    Replay(cmd::replay::ReplayArgs),
}

fn main() -> Result<()> {
    cahl_engine::model::ops::init_cpu_float_mode();
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(a) => cmd::generate::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Debug(a) => cmd::debug::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Score(a) => cmd::score::run(a),
        Command::Pretrain(a) => cmd::pretrain::run(a),
        Command::Sft(a) => cmd::sft::run(a),
        Command::Index(a) => cmd::index::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Report(a) => cmd::report::report(a),
        Command::Compare(a) => cmd::report::compare(a),
    }
}

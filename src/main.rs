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
    /// Browse a recorded run (session directory or trajectories.jsonl) without a model, or
    /// another engine's run read-only (a verl rollout dump, a TRL completions table).
    Replay(cmd::replay::ReplayArgs),
    /// The case library of a session: misalignment probes saved from the debugger (`a`),
    /// re-run against checkpoints as a regression suite.
    Cases(cmd::cases::CasesArgs),
    /// Serve the model and its adapters behind an OpenAI-compatible API (completions, chat
    /// completions with tools, runtime LoRA loading), e.g. for `train --endpoint`.
    Serve(cmd::serve::ServeArgs),
}

fn main() -> Result<()> {
    // candle's element-wise kernels hand chunks to a spinning pool of their own, one caller at
    // a time; our parallelism is at the level of matmuls and of independent work (see
    // docs/PERFORMANCE.md), so that pool gets no threads unless the user asks for them. This
    // runs before any other thread exists.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let pool_threads = cahl_engine::model::ops::pin_matmul_threads();
    cahl_engine::model::ops::tune_allocator();
    cahl_engine::model::ops::init_compute_pool(pool_threads);
    let cli = Cli::parse();
    // Batch commands run on a thread of the compute pool (see `on_compute_pool`); the ones with
    // a terminal UI keep the main thread and move their model work onto the pool themselves.
    use cahl_engine::model::ops::on_compute_pool as pooled;
    match cli.command {
        Command::Generate(a) => pooled(|| cmd::generate::run(a)),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Bench(a) => pooled(|| cmd::bench::run(a)),
        Command::Replay(a) => cmd::replay::run(a),
        Command::Debug(a) => cmd::debug::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Score(a) => cmd::score::run(a),
        Command::Pretrain(a) => pooled(|| cmd::pretrain::run(a)),
        Command::Sft(a) => pooled(|| cmd::sft::run(a)),
        Command::Index(a) => cmd::index::run(a),
        Command::Eval(a) => pooled(|| cmd::eval::run(a)),
        Command::Report(a) => cmd::report::report(a),
        Command::Compare(a) => cmd::report::compare(a),
        Command::Cases(a) => pooled(|| cmd::cases::run(a)),
        Command::Serve(a) => cmd::serve::run(a),
    }
}

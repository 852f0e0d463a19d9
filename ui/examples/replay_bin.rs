//! `replay_bin replay PATH`: the binary's `replay` subcommand (`src/cmd/replay.rs`, compiled
//! here as-is) without the engine, so the tmux end-to-end script can run before the binary is
//! wired and without building candle.

#[path = "../../src/cmd/replay.rs"]
mod replay;

#[derive(clap::Parser)]
enum Cli {
    /// Browse a recorded run.
    Replay(replay::ReplayArgs),
}

fn main() -> anyhow::Result<()> {
    let Cli::Replay(args) = <Cli as clap::Parser>::parse();
    replay::run(args)
}

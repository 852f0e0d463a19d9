//! `cahl-tui index build`: build the BM25 search index used by the `search` tool.
use std::path::PathBuf;

use anyhow::Context;
use cahl_engine::worlds::search::Bm25Index;

/// Search index commands.
#[derive(Debug, clap::Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    pub command: IndexCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Build a BM25 index from a JSONL corpus of `{"title", "text"}` lines.
    Build {
        /// Corpus JSONL file.
        #[arg(long)]
        corpus: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    match args.command {
        IndexCommand::Build { corpus, out } => {
            let idx = Bm25Index::from_jsonl(&corpus)
                .with_context(|| format!("reading {}", corpus.display()))?;
            idx.save(&out)?;
            println!("indexed {} documents into {}", idx.len(), out.display());
            Ok(())
        }
    }
}

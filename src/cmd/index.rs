//! `cahl-tui index build`: build the tantivy BM25 search index used by the `search`
//! tool.
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
    /// Build a tantivy BM25 index from a JSONL corpus of `{"title", "text"}` lines.
    Build {
        /// Corpus JSONL file.
        #[arg(long)]
        corpus: PathBuf,
        /// Output folder (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: IndexArgs) -> anyhow::Result<()> {
    match args.command {
        IndexCommand::Build { corpus, out } => {
            let idx = Bm25Index::build_dir(&corpus, &out)
                .with_context(|| format!("indexing {} into {}", corpus.display(), out.display()))?;
            println!("indexed {} documents into {}", idx.len(), out.display());
            Ok(())
        }
    }
}

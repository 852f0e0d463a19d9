//! `cahl-tui score`: score any model's predictions on BFCL, API-Bank, NESTFUL or Bamboogle.
use std::path::PathBuf;

use anyhow::Context;
use cahl_engine::benchmarks::{read_predictions, Bench};

/// Score predictions (`{"id", "calls": [{"name", "arguments"}]}` or `{"id", "text"}` per line).
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Benchmark: bfcl, api-bank, nestful or bamboogle.
    #[arg(long)]
    pub bench: String,
    /// Benchmark data folder (e.g. ../shared/data/bfcl).
    #[arg(long)]
    pub data: PathBuf,
    /// Only this category (BFCL category, API-Bank file stem, NESTFUL glaive/sgd).
    #[arg(long)]
    pub category: Option<String>,
    /// Predictions JSONL.
    #[arg(long)]
    pub predictions: PathBuf,
    /// Write one `{"id", "correct", "error"}` line per item here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let bench = Bench::scored(&args.bench)?;
    let preds = read_predictions(&args.predictions)?;
    let report = bench
        .score(&args.data, args.category.as_deref(), &preds)
        .with_context(|| format!("scoring {} in {}", args.bench, args.data.display()))?;
    print!("{}", report.summary());
    if bench == Bench::Bamboogle {
        println!("(answers judged by normalized exact match; containment shown alongside; no LLM judge offline)");
    }
    if let Some(out) = &args.out {
        let mut text = String::new();
        for v in &report.verdicts {
            let line = serde_json::json!({"id": v.id, "correct": v.correct, "error": v.error});
            text.push_str(&format!("{line}\n"));
        }
        cahl_sessions::fsutil::atomic_write(out, text.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

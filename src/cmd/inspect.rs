//! `cahl-tui inspect PATH`.
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// HF model folder or .gguf file.
    pub path: std::path::PathBuf,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let report = cahl_engine::load::inspect(&args.path)?;
    print!("{report}");
    Ok(())
}

//! `cahl-tui serve`: the engine as an OpenAI-compatible server (see
//! `cahl_engine::backend::serve` for the routes).
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use cahl_engine::agent::{Agent, ModelSection};
use cahl_engine::backend::serve::Server;
use cahl_engine::load::embedded;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// HF model folder or .gguf file (default, or "embedded": the embedded default model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Serve the `planner` and `executor` adapters of this folder (a checkpoint, an `sft`
    /// output) under those names.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Serve a PEFT adapter folder under a name (repeatable), as vLLM's --lora-modules.
    #[arg(long, value_name = "NAME=DIR")]
    pub lora: Vec<String>,
    /// Address to listen on (loopback by default; the API has no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one; the line `listening on http://HOST:PORT` on stdout says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The base model's name in /v1/models and requests (default: the model path).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Requests answered side by side.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Device: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, f16, bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Store the frozen base matrices in this dtype on the CPU (f16: half the memory).
    #[arg(long, default_value = "")]
    pub base_dtype: String,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let path = args
        .model
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = if embedded::is_embedded(&path) {
        embedded::EMBEDDED.to_string()
    } else {
        path
    };
    eprintln!("loading {path}…");
    let mut agent = Agent::load(&ModelSection {
        path: path.clone(),
        dtype: args.dtype.clone(),
        device: args.device.clone(),
        base_dtype: args.base_dtype.clone(),
    })?;
    if let Some(dir) = &args.checkpoint {
        let roles = agent
            .load_adapters(dir, false)
            .with_context(|| format!("--checkpoint {}", dir.display()))?;
        eprintln!("adapters: {}", roles.join(", "));
    }
    for spec in &args.lora {
        let (name, dir) = spec
            .split_once('=')
            .with_context(|| format!("--lora {spec:?}: expected NAME=DIR"))?;
        let a = cahl_engine::model::LoraAdapter::load_peft(
            name,
            std::path::Path::new(dir),
            agent.model.config(),
            agent.model.dtype(),
            agent.model.device(),
        )
        .with_context(|| format!("--lora {spec}"))?;
        agent.model.insert_adapter(a);
    }
    let name = args.served_model_name.clone().unwrap_or(path);
    let server = Server::bind(agent, &format!("{}:{}", args.host, args.port), &name)?;
    let addr = server.addr();
    let handle = server.spawn(args.workers)?;
    println!("listening on http://{addr} (model {name})");
    std::io::stdout().flush().ok();
    handle.wait();
    Ok(())
}

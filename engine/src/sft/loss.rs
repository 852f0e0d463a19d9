//! The supervised loss: mean cross-entropy over completion tokens, the batch's common prompt
//! prefix run once.
use candle_core::Tensor;

use super::examples::SftExample;
use crate::error::{EngineError, Result};
use crate::grpo::completion_logprobs_at;
use crate::model::{AdapterRef, Model};

/// Mean completion cross-entropy of a batch of examples (with graph when `train`), and the
/// number of completion tokens. The batch's common prompt prefix runs once.
pub fn sft_loss(
    model: &Model,
    adapter: AdapterRef,
    batch: &[&SftExample],
    train: bool,
) -> Result<(Tensor, usize)> {
    if batch.is_empty() {
        return Err(EngineError::Invalid("sft_loss: empty batch".into()));
    }
    let full: Vec<Vec<u32>> = batch
        .iter()
        .map(|e| [e.prompt.as_slice(), e.completion.as_slice()].concat())
        .collect();
    // Common prefix, leaving at least one prompt token out of it for every example (so each
    // sequence has a non-empty remainder).
    let mut p = batch.iter().map(|e| e.prompt.len()).min().unwrap_or(0);
    for f in &full[1..] {
        p = p.min(f.iter().zip(&full[0]).take_while(|(a, b)| a == b).count());
    }
    let p = p.saturating_sub(1).max(1);
    let prefix = &full[0][..p];
    let rests: Vec<&[u32]> = full.iter().map(|f| &f[p..]).collect();
    // Only completion positions are scored (the head runs on those rows alone).
    let positions: Vec<(usize, usize)> = batch
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            let start = e.prompt.len() - p;
            (start..start + e.completion.len()).map(move |j| (i, j))
        })
        .collect();
    let n = positions.len();
    if n == 0 {
        return Err(EngineError::Invalid(
            "sft_loss: the batch has no completion tokens".into(),
        ));
    }
    let lp = completion_logprobs_at(model, adapter, prefix, &rests, &positions, train)?;
    let loss = (lp.sum_all()? / (-(n as f64)))?;
    Ok((loss, n))
}

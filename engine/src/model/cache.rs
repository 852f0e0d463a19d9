//! Key/value cache for incremental decoding and shared-prefix training.
use candle_core::{Result, Tensor};

/// Per-layer keys and values, each `(batch, kv_heads, seq, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: vec![None; num_layers],
        }
    }

    /// Number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    /// Append new keys/values for `layer` and return the full keys/values.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("kv cache has no layer {layer}")))?;
        let (k, v) = match slot.take() {
            None => (k.contiguous()?, v.contiguous()?),
            Some((pk, pv)) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
        };
        *slot = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Repeat a batch-1 cache `n` times along the batch dimension (a group sharing one prompt).
    pub fn expand_batch(&self, n: usize) -> Result<KvCache> {
        let mut out = KvCache::new(self.layers.len());
        for (slot, layer) in out.layers.iter_mut().zip(&self.layers) {
            if let Some((k, v)) = layer {
                let (b, h, t, d) = k.dims4()?;
                if b != 1 {
                    candle_core::bail!("expand_batch needs a batch-1 cache, got batch {b}");
                }
                let k = k.broadcast_as((n, h, t, d))?.contiguous()?;
                let (_, hv, tv, dv) = v.dims4()?;
                let v = v.broadcast_as((n, hv, tv, dv))?.contiguous()?;
                *slot = Some((k, v));
            }
        }
        Ok(out)
    }

    /// Keep only the given batch rows (drop finished sequences during sampling).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            let idx = Tensor::new(rows, k.device())?;
            *k = k.index_select(&idx, 0)?;
            *v = v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

//! Key/value cache for incremental decoding and shared-prefix training.
//!
//! At inference (keys and values carry no autograd graph) each layer keeps a buffer with room
//! to spare along the sequence axis and writes new positions in place, so a decode step copies
//! only its own keys and values instead of the whole cache. Tensors that carry a graph (the
//! training path) are concatenated instead, because an in-place write would break backprop.
use candle_core::{Result, Tensor};

/// Positions a buffer grows by at least.
const GROW: usize = 64;

#[derive(Debug)]
struct Layer {
    /// `(batch, kv_heads, capacity, head_dim)`; positions `len..` are unused.
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl Layer {
    fn keys(&self) -> Result<(Tensor, Tensor)> {
        if self.k.dim(2)? == self.len {
            Ok((self.k.clone(), self.v.clone()))
        } else {
            Ok((
                self.k.narrow(2, 0, self.len)?,
                self.v.narrow(2, 0, self.len)?,
            ))
        }
    }
}

/// Per-layer keys and values, each `(batch, kv_heads, seq, head_dim)`.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
}

impl Clone for KvCache {
    /// A deep copy: in-place appends to the clone never show through the original.
    fn clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().and_then(|l| {
                    let k = l.k.narrow(2, 0, l.len).and_then(|t| t.copy()).ok()?;
                    let v = l.v.narrow(2, 0, l.len).and_then(|t| t.copy()).ok()?;
                    Some(Layer { k, v, len: l.len })
                })
            })
            .collect();
        KvCache { layers }
    }
}

/// A zeroed buffer like `t` with `cap` positions on axis 2.
fn buffer_like(t: &Tensor, cap: usize) -> Result<Tensor> {
    let (b, h, _, d) = t.dims4()?;
    Tensor::zeros((b, h, cap, d), t.dtype(), t.device())
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| None).collect(),
        }
    }

    /// A cache holding the same tensors (no copy). Appending to either writes into the shared
    /// buffers, so only share a cache that is read ([`KvCache::truncated`] copies).
    pub fn share(&self) -> KvCache {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|l| Layer {
                    k: l.k.clone(),
                    v: l.v.clone(),
                    len: l.len,
                })
            })
            .collect();
        KvCache { layers }
    }

    /// Number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    /// Append new keys/values for `layer` and return the full keys/values.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("kv cache has no layer {layer}")))?;
        let t = k.dim(2)?;
        let tracked = k.track_op() || v.track_op();
        let next = match slot.take() {
            None if tracked => Layer {
                k: k.contiguous()?,
                v: v.contiguous()?,
                len: t,
            },
            None => {
                let cap = t + GROW;
                let (kb, vb) = (buffer_like(k, cap)?, buffer_like(v, cap)?);
                kb.slice_set(&k.contiguous()?, 2, 0)?;
                vb.slice_set(&v.contiguous()?, 2, 0)?;
                Layer {
                    k: kb,
                    v: vb,
                    len: t,
                }
            }
            Some(old) if tracked || old.k.track_op() || old.v.track_op() => {
                let (pk, pv) = old.keys()?;
                Layer {
                    k: Tensor::cat(&[&pk, k], 2)?,
                    v: Tensor::cat(&[&pv, v], 2)?,
                    len: old.len + t,
                }
            }
            Some(mut old) => {
                let need = old.len + t;
                if need > old.k.dim(2)? {
                    let cap = (2 * old.k.dim(2)?).max(need + GROW);
                    let (pk, pv) = old.keys()?;
                    let (kb, vb) = (buffer_like(&pk, cap)?, buffer_like(&pv, cap)?);
                    kb.slice_set(&pk.contiguous()?, 2, 0)?;
                    vb.slice_set(&pv.contiguous()?, 2, 0)?;
                    old.k = kb;
                    old.v = vb;
                }
                old.k.slice_set(&k.contiguous()?, 2, old.len)?;
                old.v.slice_set(&v.contiguous()?, 2, old.len)?;
                old.len = need;
                old
            }
        };
        let out = next.keys()?;
        *slot = Some(next);
        Ok(out)
    }

    /// Repeat a batch-1 cache `n` times along the batch dimension (a group sharing one prompt).
    pub fn expand_batch(&self, n: usize) -> Result<KvCache> {
        let mut out = KvCache::new(self.layers.len());
        for (slot, layer) in out.layers.iter_mut().zip(&self.layers) {
            if let Some(l) = layer {
                let (b, h, c, d) = l.k.dims4()?;
                if b != 1 {
                    candle_core::bail!("expand_batch needs a batch-1 cache, got batch {b}");
                }
                let k = l.k.broadcast_as((n, h, c, d))?.contiguous()?;
                let (_, hv, cv, dv) = l.v.dims4()?;
                let v = l.v.broadcast_as((n, hv, cv, dv))?.contiguous()?;
                *slot = Some(Layer { k, v, len: l.len });
            }
        }
        Ok(out)
    }

    /// The first `len` positions as a cache of their own. Untracked (inference) tensors are
    /// copied into fresh buffers, so appending to the result never writes into `self`; tracked
    /// ones are narrowed, keeping their graph.
    pub fn truncated(&self, len: usize) -> Result<KvCache> {
        if len > self.seq_len() {
            candle_core::bail!(
                "kv cache holds {} positions, cannot keep {len}",
                self.seq_len()
            );
        }
        let mut out = KvCache::new(self.layers.len());
        for (slot, layer) in out.layers.iter_mut().zip(&self.layers) {
            let Some(l) = layer else { continue };
            let (k, v) = (l.k.narrow(2, 0, len)?, l.v.narrow(2, 0, len)?);
            *slot = Some(if l.k.track_op() || l.v.track_op() {
                Layer { k, v, len }
            } else {
                // Room for a prompt tail and a completion without regrowing.
                let cap = len + 4 * GROW;
                let (kb, vb) = (buffer_like(&k, cap)?, buffer_like(&v, cap)?);
                kb.slice_set(&k.contiguous()?, 2, 0)?;
                vb.slice_set(&v.contiguous()?, 2, 0)?;
                Layer { k: kb, v: vb, len }
            });
        }
        Ok(out)
    }

    /// Each layer's cached keys and values (`None` for a layer that holds nothing).
    pub fn layer_tensors(&self) -> Result<Vec<Option<(Tensor, Tensor)>>> {
        self.layers
            .iter()
            .map(|l| l.as_ref().map(|l| l.keys()).transpose())
            .collect()
    }

    /// A cache holding exactly the given keys and values per layer (all of one length).
    pub fn from_layer_tensors(layers: Vec<Option<(Tensor, Tensor)>>) -> Result<KvCache> {
        let mut len = None;
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            out.push(match l {
                None => None,
                Some((k, v)) => {
                    let t = k.dim(2)?;
                    if *len.get_or_insert(t) != t || v.dim(2)? != t {
                        candle_core::bail!("kv cache layers differ in length");
                    }
                    Some(Layer { k, v, len: t })
                }
            });
        }
        Ok(KvCache { layers: out })
    }

    /// Add rows to a cache of rows whose prompts differ in length, decoded together: part `j` (a
    /// batch-1 inference cache of `len_j` positions) fills `copies_j` rows after the existing
    /// ones, every row's positions right-aligned at the longest so all rows append at the same
    /// column; `pads` holds each row's leading padding (to be masked: see
    /// [`crate::model::Model::forward_last_rows`]) and gets the new rows'. When a new prompt is
    /// longer than the cache, the existing rows get more leading padding. Room is left for
    /// `extra` more positions. Returns the rows added.
    pub fn admit(
        &mut self,
        pads: &mut Vec<usize>,
        parts: &[(&KvCache, usize)],
        extra: usize,
    ) -> Result<usize> {
        let rows_before = pads.len();
        let old_width = if rows_before == 0 { 0 } else { self.seq_len() };
        let width = parts
            .iter()
            .map(|(c, _)| c.seq_len())
            .max()
            .unwrap_or(0)
            .max(old_width);
        let shift = width - old_width;
        for p in pads.iter_mut() {
            *p += shift;
        }
        for (c, copies) in parts {
            if c.layers.len() != self.layers.len() {
                candle_core::bail!("kv caches to align differ in layer count");
            }
            pads.extend(std::iter::repeat_n(width - c.seq_len(), *copies));
        }
        let cap = width + extra;
        for i in 0..self.layers.len() {
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            if rows_before > 0 {
                if let Some(l) = &self.layers[i] {
                    let (k, v) = l.keys()?;
                    for (src, dst) in [(&k, &mut ks), (&v, &mut vs)] {
                        let buf = buffer_like(src, cap)?;
                        buf.slice_set(&src.contiguous()?, 2, shift)?;
                        dst.push(buf);
                    }
                }
            }
            for (c, copies) in parts.iter().filter(|(_, n)| *n > 0) {
                let Some(l) = &c.layers[i] else {
                    candle_core::bail!("kv cache to align holds nothing in layer {i}");
                };
                let (k, v) = l.keys()?;
                if k.dim(0)? != 1 {
                    candle_core::bail!(
                        "rows are added from batch-1 caches, got batch {}",
                        k.dim(0)?
                    );
                }
                for (src, dst) in [(&k, &mut ks), (&v, &mut vs)] {
                    let buf = buffer_like(src, cap)?;
                    buf.slice_set(&src.contiguous()?, 2, width - l.len)?;
                    let (_, h, _, d) = buf.dims4()?;
                    dst.push(buf.broadcast_as((*copies, h, cap, d))?);
                }
            }
            if ks.is_empty() {
                continue;
            }
            self.layers[i] = Some(Layer {
                k: Tensor::cat(&ks, 0)?.contiguous()?,
                v: Tensor::cat(&vs, 0)?.contiguous()?,
                len: width,
            });
        }
        Ok(pads.len() - rows_before)
    }

    /// Drop the first `n` positions of every row (padding that no row needs any more).
    pub fn drop_front(&mut self, n: usize) -> Result<()> {
        for l in self.layers.iter_mut().flatten() {
            if n > l.len {
                candle_core::bail!("kv cache holds {} positions, cannot drop {n}", l.len);
            }
            let keep = l.len - n;
            let cap = keep + GROW;
            let k = l.k.narrow(2, n, keep)?;
            let v = l.v.narrow(2, n, keep)?;
            let (kb, vb) = (buffer_like(&k, cap)?, buffer_like(&v, cap)?);
            kb.slice_set(&k.contiguous()?, 2, 0)?;
            vb.slice_set(&v.contiguous()?, 2, 0)?;
            *l = Layer {
                k: kb,
                v: vb,
                len: keep,
            };
        }
        Ok(())
    }

    /// Keep only the given batch rows (drop finished sequences during sampling).
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        for l in self.layers.iter_mut().flatten() {
            let idx = Tensor::new(rows, l.k.device())?;
            l.k = l.k.index_select(&idx, 0)?;
            l.v = l.v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

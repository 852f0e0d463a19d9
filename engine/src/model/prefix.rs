//! Shared prompt prefixes.
//!
//! Every planner prompt of a world starts with the same system message (the tool list), and so
//! does every executor prompt: in the built-in world about 450 of an executor prompt's ~570
//! tokens. A [`Prefix`] holds the keys and values of such a token prefix, computed once under
//! one adapter, and prompts that start with it prefill only their own tail. Which positions are
//! shared is decided on token ids (the longest common prefix), so no assumption about the chat
//! template is needed: a prompt that shares little simply prefills in full.
//!
//! For training, [`Prefix::detached`] turns a prefix computed with a graph into one whose keys
//! and values are leaf variables. Each micro-batch then backpropagates into those leaves only,
//! and one backward through the prefix's own graph, seeded with the summed leaf gradients
//! ([`Prefix::backward_into`]), adds the prefix's share of the adapter gradient: the same
//! gradient as recomputing the prefix for every micro-batch, with the prefix computed once.
use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::Result;
use crate::model::{AdapterRef, KvCache, Model};

/// Prefixes shorter than this are not worth a separate cache.
pub const MIN_PREFIX: usize = 16;

/// The keys and values of a token prefix under one adapter (and one version of its weights).
#[derive(Debug, Clone)]
pub struct Prefix {
    ids: Vec<u32>,
    cache: KvCache,
    /// With [`Prefix::detached`]: the leaf variables, per layer (keys, values).
    leaves: Vec<Option<(Var, Var)>>,
}

impl Prefix {
    /// Run `ids` through the model (batch 1, positions from 0) and keep the cache. With `train`
    /// the keys and values carry the graph back to the adapter.
    pub fn build(model: &Model, adapter: AdapterRef, ids: &[u32], train: bool) -> Result<Prefix> {
        let mut cache = model.new_cache();
        if !ids.is_empty() {
            let t = model.ids_tensor(ids, 1)?;
            model.forward_hidden(&t, 0, &mut cache, adapter, train)?;
        }
        Ok(Prefix {
            ids: ids.to_vec(),
            cache,
            leaves: Vec::new(),
        })
    }

    /// The same prefix sharing this one's tensors (no copy; [`Prefix::cache_for`] copies before
    /// anything is appended, so sharing is safe for inference).
    pub fn share(&self) -> Prefix {
        Prefix {
            ids: self.ids.clone(),
            cache: self.cache.share(),
            leaves: self.leaves.clone(),
        }
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// How many leading positions of `prompt` can come from this prefix: the longest common
    /// prefix of the token ids, leaving at least the prompt's last token to run (its output is
    /// the first next-token distribution). `None` when that is under [`MIN_PREFIX`].
    pub fn reusable_len(&self, prompt: &[u32]) -> Option<usize> {
        let common = self
            .ids
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let n = common.min(prompt.len().saturating_sub(1));
        (n >= MIN_PREFIX).then_some(n)
    }

    /// A cache holding the first `n` positions, to be extended by the rest of a prompt.
    pub fn cache_for(&self, n: usize) -> Result<KvCache> {
        Ok(self.cache.truncated(n)?)
    }

    /// The same prefix with its keys and values copied into leaf variables (no graph).
    pub fn detached(&self) -> Result<Prefix> {
        let mut leaves = Vec::new();
        let mut layers = Vec::new();
        for l in self.cache.layer_tensors()? {
            match l {
                None => {
                    leaves.push(None);
                    layers.push(None);
                }
                Some((k, v)) => {
                    let kv = Var::from_tensor(&k.detach())?;
                    let vv = Var::from_tensor(&v.detach())?;
                    layers.push(Some((kv.as_tensor().clone(), vv.as_tensor().clone())));
                    leaves.push(Some((kv, vv)));
                }
            }
        }
        Ok(Prefix {
            ids: self.ids.clone(),
            cache: KvCache::from_layer_tensors(layers)?,
            leaves,
        })
    }

    /// The gradients a backward pass left on this (detached) prefix's leaves, per layer.
    pub fn leaf_grads(&self, grads: &GradStore) -> Vec<Option<(Tensor, Tensor)>> {
        self.leaves
            .iter()
            .map(|l| {
                l.as_ref().and_then(|(k, v)| {
                    let gk = grads.get(k.as_tensor())?.clone();
                    let gv = grads.get(v.as_tensor())?.clone();
                    Some((gk, gv))
                })
            })
            .collect()
    }

    /// Backpropagate the summed leaf gradients `leaf_grads` (of a [`Prefix::detached`] copy)
    /// through this prefix's graph. Returns `None` when nothing flows (no gradient, or keys and
    /// values without a graph).
    pub fn backward_into(
        &self,
        leaf_grads: &[Option<(Tensor, Tensor)>],
    ) -> Result<Option<GradStore>> {
        let mut terms = Vec::new();
        for (l, g) in self.cache.layer_tensors()?.iter().zip(leaf_grads) {
            if let (Some((k, v)), Some((gk, gv))) = (l, g) {
                if k.track_op() {
                    terms.push((k * gk.detach())?.sum_all()?);
                }
                if v.track_op() {
                    terms.push((v * gv.detach())?.sum_all()?);
                }
            }
        }
        if terms.is_empty() {
            return Ok(None);
        }
        let total = Tensor::stack(&terms, 0)?.sum_all()?;
        Ok(Some(total.backward()?))
    }
}

/// Add `b` into `a` layer by layer (gradients of one prefix from several micro-batches).
pub fn add_leaf_grads(
    a: &mut Vec<Option<(Tensor, Tensor)>>,
    b: Vec<Option<(Tensor, Tensor)>>,
) -> Result<()> {
    if a.is_empty() {
        *a = b;
        return Ok(());
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x = match (x.take(), y) {
            (Some((k1, v1)), Some((k2, v2))) => Some(((k1 + k2)?, (v1 + v2)?)),
            (x, None) => x,
            (None, y) => y,
        };
    }
    Ok(())
}

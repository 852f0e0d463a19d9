//! The decoder: Llama / Qwen2 blocks (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP) over
//! one frozen copy of the base weights, with any number of named LoRA adapters.
//!
//! Two paths share the code: inference (`train = false`) uses fused kernels (ours from
//! [`crate::model::fused`] on the CPU in f32/f64, candle's otherwise) and builds no graph; training
//! (`train = true`) uses only ops whose backward is correct and routes frozen matmuls through
//! [`frozen_matmul`] so no gradient is computed for base weights.
use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Module, Tensor, Var};

use crate::error::{EngineError, Result};
use crate::model::cache::KvCache;
use crate::model::config::ModelConfig;
use crate::model::lora::{LoraAdapter, LoraConfig, Target};
use crate::model::ops::{frozen_matmul, matmul_2d, rms_norm_train, softmax_train};
use crate::model::{flash, fused};

/// A frozen linear layer: weight `(out, in)` and optional bias.
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    pub w: Tensor,
    pub b: Option<Tensor>,
}

impl FrozenLinear {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = frozen_matmul(x, &self.w, train)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Debug)]
struct Block {
    proj: [FrozenLinear; 7],
    ln_attn: Tensor,
    ln_mlp: Tensor,
}

/// Rotary tables, `(max_pos, head_dim / 2)`.
#[derive(Debug)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &ModelConfig, dtype: DType, dev: &Device) -> Result<Self> {
        let d = cfg.head_dim();
        let max_pos = cfg.max_position_embeddings.clamp(1, 32_768);
        let mut inv: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d as f64))
            .collect();
        if let Some(rs) = &cfg.rope_scaling {
            let kind = rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            if kind == "llama3" {
                let g = |k: &str, dflt: f64| rs.get(k).and_then(|v| v.as_f64()).unwrap_or(dflt);
                let factor = g("factor", 8.0);
                let lo = g("low_freq_factor", 1.0);
                let hi = g("high_freq_factor", 4.0);
                let old = g("original_max_position_embeddings", 8192.0);
                let lo_wl = old / lo;
                let hi_wl = old / hi;
                for f in inv.iter_mut() {
                    let wl = 2.0 * std::f64::consts::PI / *f;
                    if wl < hi_wl {
                    } else if wl > lo_wl {
                        *f /= factor;
                    } else {
                        let s = (old / wl - lo) / (hi - lo);
                        *f = (1.0 - s) * *f / factor + s * *f;
                    }
                }
            }
        }
        let mut cos = Vec::with_capacity(max_pos * d / 2);
        let mut sin = Vec::with_capacity(max_pos * d / 2);
        for p in 0..max_pos {
            for f in &inv {
                let a = p as f64 * f;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (max_pos, d / 2), dev)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (max_pos, d / 2), dev)?.to_dtype(dtype)?,
        })
    }
}

/// The model: frozen base weights plus named LoRA adapters.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
    rope: Rope,
    dtype: DType,
    device: Device,
    adapters: BTreeMap<String, LoraAdapter>,
    /// Sequences with at least this many keys use the blocked attention ([`flash`]).
    blocked_min_keys: usize,
}

/// Which adapter a forward call uses: `None` is the base (reference) policy.
pub type AdapterRef<'a> = Option<&'a str>;

/// One decode step of rows that sit at different positions (prompts of different lengths
/// decoded together, see [`KvCache::admit`]): each row's rotary angles and an additive
/// mask that hides its padding.
struct Rows {
    /// `(rows, head_dim / 2)`: the rotary tables at each row's position.
    cos: Tensor,
    sin: Tensor,
    /// `(rows, 1, 1, cached + 1)`: `-inf` on a row's padding, `0` elsewhere.
    mask: Tensor,
}

impl Model {
    /// Build from HF-named weights (see docs/DESIGN.md). Shapes are checked against `cfg`.
    pub fn new(
        cfg: &ModelConfig,
        weights: &HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = weights
                .get(name)
                .ok_or_else(|| EngineError::Weights(format!("missing weight {name}")))?;
            if t.dims() != shape {
                return Err(EngineError::Weights(format!(
                    "weight {name} has shape {:?}, config implies {:?}",
                    t.dims(),
                    shape
                )));
            }
            Ok(t.to_device(device)?.to_dtype(dtype)?.contiguous()?)
        };
        let h = cfg.hidden_size;
        let embed = get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let lin = |t: Target, bias: bool| -> Result<FrozenLinear> {
                let (fin, fout) = t.shape(cfg);
                let base = format!("{p}.{}.{}", t.parent(), t.name());
                let w = get(&format!("{base}.weight"), &[fout, fin])?;
                let b = if bias {
                    Some(get(&format!("{base}.bias"), &[fout])?)
                } else {
                    None
                };
                Ok(FrozenLinear { w, b })
            };
            let qb = cfg.qkv_bias();
            let proj = [
                lin(Target::Q, qb)?,
                lin(Target::K, qb)?,
                lin(Target::V, qb)?,
                lin(Target::O, cfg.o_bias())?,
                lin(Target::Gate, false)?,
                lin(Target::Up, false)?,
                lin(Target::Down, false)?,
            ];
            blocks.push(Block {
                proj,
                ln_attn: get(&format!("{p}.input_layernorm.weight"), &[h])?,
                ln_mlp: get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            });
        }
        let norm = get("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings || !weights.contains_key("lm_head.weight") {
            embed.clone()
        } else {
            get("lm_head.weight", &[cfg.vocab_size, h])?
        };
        Ok(Model {
            cfg: cfg.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            rope: Rope::new(cfg, dtype, device)?,
            dtype,
            device: device.clone(),
            adapters: BTreeMap::new(),
            blocked_min_keys: flash::default_min_keys(),
        })
    }

    /// Sequences with at least this many keys (cached prefix included) and more than one new
    /// token use the blocked attention of [`flash`] on the CPU in f32/f64 (0: always;
    /// `usize::MAX`: never). Default [`flash::default_min_keys`] (384, or what `CAHL_ATTENTION`
    /// says); this setting wins over the variable.
    pub fn set_blocked_attention_min_keys(&mut self, keys: usize) {
        self.blocked_min_keys = keys;
    }

    /// See [`Model::set_blocked_attention_min_keys`].
    pub fn blocked_attention_min_keys(&self) -> usize {
        self.blocked_min_keys
    }

    /// Random weights (N(0, 0.02), norms at 1) for tests and benchmarks, seeded.
    pub fn random_weights(cfg: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dev = Device::Cpu;
        let mut w = HashMap::new();
        let mut normal = |shape: &[usize], std: f32| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    // Box-Muller from two uniforms.
                    let u1: f32 = rng.random_range(1e-7..1.0);
                    let u2: f32 = rng.random();
                    std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
                })
                .collect();
            Ok(Tensor::from_vec(v, shape, &dev)?)
        };
        let h = cfg.hidden_size;
        w.insert(
            "model.embed_tokens.weight".into(),
            normal(&[cfg.vocab_size, h], 0.02)?,
        );
        for i in 0..cfg.num_hidden_layers {
            for t in Target::ALL {
                let (fin, fout) = t.shape(cfg);
                let base = format!("model.layers.{i}.{}.{}", t.parent(), t.name());
                w.insert(format!("{base}.weight"), normal(&[fout, fin], 0.02)?);
                let bias = match t {
                    Target::Q | Target::K | Target::V => cfg.qkv_bias(),
                    Target::O => cfg.o_bias(),
                    _ => false,
                };
                if bias {
                    w.insert(format!("{base}.bias"), normal(&[fout], 0.02)?);
                }
            }
            for ln in ["input_layernorm", "post_attention_layernorm"] {
                let v = (normal(&[h], 0.1)? + 1.0)?;
                w.insert(format!("model.layers.{i}.{ln}.weight"), v);
            }
        }
        w.insert("model.norm.weight".into(), (normal(&[h], 0.1)? + 1.0)?);
        if !cfg.tie_word_embeddings {
            w.insert("lm_head.weight".into(), normal(&[cfg.vocab_size, h], 0.02)?);
        }
        Ok(w)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Base parameter count (tied head counted once).
    pub fn num_base_params(&self) -> usize {
        let mut n = self.embed.elem_count() + self.norm.elem_count();
        for b in &self.blocks {
            n += b.ln_attn.elem_count() + b.ln_mlp.elem_count();
            for p in &b.proj {
                n += p.w.elem_count() + p.b.as_ref().map_or(0, |b| b.elem_count());
            }
        }
        if !self.cfg.tie_word_embeddings {
            n += self.lm_head.elem_count();
        }
        n
    }

    /// Create (or replace) a named adapter with PEFT's initialisation.
    pub fn add_adapter(&mut self, name: &str, cfg: &LoraConfig, seed: u64) -> Result<()> {
        let a = LoraAdapter::new_random(name, cfg, &self.cfg, self.dtype, &self.device, seed)?;
        self.adapters.insert(name.to_string(), a);
        Ok(())
    }

    /// Insert a loaded adapter under its name.
    pub fn insert_adapter(&mut self, adapter: LoraAdapter) {
        self.adapters.insert(adapter.name.clone(), adapter);
    }

    pub fn adapter(&self, name: &str) -> Result<&LoraAdapter> {
        self.adapters
            .get(name)
            .ok_or_else(|| EngineError::NoAdapter(name.to_string()))
    }

    /// Remove the adapter `name`; `None` when there was none.
    pub fn remove_adapter(&mut self, name: &str) -> Option<LoraAdapter> {
        self.adapters.remove(name)
    }

    pub fn adapter_names(&self) -> Vec<String> {
        self.adapters.keys().cloned().collect()
    }

    fn resolve(&self, adapter: AdapterRef) -> Result<Option<&LoraAdapter>> {
        adapter.map(|n| self.adapter(n)).transpose()
    }

    fn proj(
        &self,
        layer: usize,
        t: Target,
        x: &Tensor,
        lora: Option<&LoraAdapter>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let lin = &self.blocks[layer].proj[t.index()];
        let pair = lora.and_then(|ad| ad.pair(layer, t).map(|p| (ad, p)));
        if let (false, Some((ad, pair))) = (train, pair) {
            // A decode step's adapted projection as one op (CPU, a few rows).
            let (a, b) = (pair.a.as_tensor(), pair.b.as_tensor());
            if let Some(y) = crate::model::kernels::small_m_lora(x, &lin.w, a, b, ad.scale())? {
                return match &lin.b {
                    Some(bias) => Ok(y.broadcast_add(bias)?.detach()),
                    None => Ok(y),
                };
            }
        }
        let base = lin.forward(x, train)?;
        let Some((ad, pair)) = pair else {
            return Ok(base);
        };
        let xin = if train {
            match ad
                .dropout_mask(x.dims(), x.device(), x.dtype())
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?
            {
                Some(m) => x.mul(&m)?,
                None => x.clone(),
            }
        } else {
            x.clone()
        };
        // The scale is applied to the rank-r intermediate (r values per position, not out).
        let low = (matmul_2d(&xin, &pair.a.as_tensor().t()?)? * ad.scale())?;
        let up = matmul_2d(&low, &pair.b.as_tensor().t()?)?;
        let y = (base + up)?;
        // Inference records no graph: without this, every activation computed from the
        // adapter's variables would stay alive through the KV cache.
        Ok(if train { y } else { y.detach() })
    }

    fn norm(&self, x: &Tensor, w: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        // candle's fused rms_norm has no f64 kernel: f64 inference (tests) uses ours.
        if (train || x.dtype() == DType::F64) && fused::fused_ok(x) {
            fused::rms_norm(x, w, self.cfg.rms_norm_eps)
        } else if train {
            rms_norm_train(x, w, self.cfg.rms_norm_eps)
        } else {
            candle_nn::ops::rms_norm(&x.contiguous()?, w, self.cfg.rms_norm_eps as f32)
        }
    }

    fn rope(&self, x: &Tensor, offset: usize, train: bool) -> candle_core::Result<Tensor> {
        let t = x.dim(2)?;
        let cos = self.rope.cos.narrow(0, offset, t)?;
        let sin = self.rope.sin.narrow(0, offset, t)?;
        match (train, self.cfg.rope_interleaved) {
            (true, false) => candle_nn::rotary_emb::rope_slow(x, &cos, &sin),
            (true, true) => candle_nn::rotary_emb::rope_i_slow(x, &cos, &sin),
            (false, false) => candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin),
            (false, true) => candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        x: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        lora: Option<&LoraAdapter>,
        train: bool,
        rows: Option<&Rows>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let nh = self.cfg.num_attention_heads;
        let nkv = self.cfg.num_kv_heads();
        let d = self.cfg.head_dim();
        let rep = nh / nkv;
        let q = self.proj(layer, Target::Q, x, lora, train)?;
        let k = self.proj(layer, Target::K, x, lora, train)?;
        let v = self.proj(layer, Target::V, x, lora, train)?;
        let v = v.reshape((b, t, nkv, d))?.transpose(1, 2)?.contiguous()?;
        // On the CPU in f32/f64 one op rotates and transposes to (b, heads, t, d).
        let fused = fused::fused_ok(x);
        let (q, k) = if let Some(rows) = rows {
            // One token per row (t == 1), each at its own position: the rows are rotated as
            // the time steps of one sequence, then put back as the batch.
            let il = self.cfg.rope_interleaved;
            let rot = |x: Tensor, heads: usize| -> candle_core::Result<Tensor> {
                let x = x.reshape((1, b, heads, d))?;
                let r = if fused {
                    fused::rope_bthd(&x, &rows.cos, &rows.sin, il, false)?
                } else {
                    let x = x.transpose(1, 2)?.contiguous()?;
                    if il {
                        candle_nn::rotary_emb::rope_i(&x, &rows.cos, &rows.sin)?
                    } else {
                        candle_nn::rotary_emb::rope(&x, &rows.cos, &rows.sin)?
                    }
                };
                r.transpose(0, 2)?.contiguous() // (b, heads, 1, d)
            };
            (rot(q, nh)?, rot(k, nkv)?)
        } else if fused {
            let cos = self.rope.cos.narrow(0, offset, t)?;
            let sin = self.rope.sin.narrow(0, offset, t)?;
            let il = self.cfg.rope_interleaved;
            (
                fused::rope_bthd(&q.reshape((b, t, nh, d))?, &cos, &sin, il, train)?,
                fused::rope_bthd(&k.reshape((b, t, nkv, d))?, &cos, &sin, il, train)?,
            )
        } else {
            let q = q.reshape((b, t, nh, d))?.transpose(1, 2)?;
            let k = k.reshape((b, t, nkv, d))?.transpose(1, 2)?;
            (self.rope(&q, offset, train)?, self.rope(&k, offset, train)?)
        };
        let (k, v) = cache.append(layer, &k, &v)?;
        let total = k.dim(2)?;
        // Grouped-query attention without copying K/V: fold the heads sharing a KV head into
        // the query length. HF maps query head h to KV head h / rep.
        let q = q.contiguous()?.reshape((b, nkv, rep * t, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        if rows.is_none() && fused && flash::use_blocked(t, total, self.blocked_min_keys) {
            let y = flash::causal_attention(&q, &k, &v, scale, t, offset, train)?;
            let y = y
                .reshape((b, nh, t, d))?
                .transpose(1, 2)?
                .reshape((b, t, nh * d))?;
            return self.proj(layer, Target::O, &y, lora, train);
        }
        let scores = q.matmul(&k.t()?)?;
        let att = if let Some(rows) = rows {
            // No causal part with one new token per row; the mask hides each row's padding.
            let att = (scores * scale)?.broadcast_add(&rows.mask)?;
            candle_nn::ops::softmax_last_dim(&att)?
        } else if fused {
            // Scale, causal mask and softmax in one op.
            fused::causal_softmax(&scores, scale, t, offset, train)?
        } else {
            let mut att = (scores * scale)?;
            if t > 1 {
                let mask: Vec<f32> = (0..rep * t)
                    .flat_map(|row| {
                        let i = row % t;
                        (0..total).map(move |j| {
                            if j > offset + i {
                                f32::NEG_INFINITY
                            } else {
                                0.0
                            }
                        })
                    })
                    .collect();
                let mask =
                    Tensor::from_vec(mask, (rep * t, total), x.device())?.to_dtype(att.dtype())?;
                att = att.broadcast_add(&mask)?;
            }
            if train {
                softmax_train(&att)?
            } else {
                candle_nn::ops::softmax_last_dim(&att)?
            }
        };
        let y = att.matmul(&v)?; // (b, nkv, rep*t, d)
        let y = y
            .reshape((b, nh, t, d))?
            .transpose(1, 2)?
            .reshape((b, t, nh * d))?;
        self.proj(layer, Target::O, &y, lora, train)
    }

    fn mlp(
        &self,
        layer: usize,
        x: &Tensor,
        lora: Option<&LoraAdapter>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let g = self.proj(layer, Target::Gate, x, lora, train)?;
        let u = self.proj(layer, Target::Up, x, lora, train)?;
        let h = if fused::fused_ok(&g) {
            fused::swiglu(&g, &u)?
        } else {
            (candle_nn::Activation::Silu.forward(&g)? * u)?
        };
        self.proj(layer, Target::Down, &h, lora, train)
    }

    /// Final hidden states `(b, t, hidden)` (after the last norm) for token ids `(b, t)` at
    /// positions `offset..offset+t`, appending to `cache`.
    pub fn forward_hidden(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        adapter: AdapterRef,
        train: bool,
    ) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if offset + t > self.rope.cos.dim(0)? {
            return Err(EngineError::Invalid(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                offset + t,
                self.rope.cos.dim(0)?
            )));
        }
        self.blocks_forward(ids, offset, cache, adapter, train, None)
    }

    /// Logits `(rows, vocab)` f32 of one decode step of rows at different positions
    /// (inference): row `r` feeds `ids[r]` at position `positions[r]`, and its first `pads[r]`
    /// cached positions are padding (a cache of right-aligned rows, [`KvCache::admit`]).
    pub fn forward_last_rows(
        &self,
        ids: &[u32],
        positions: &[usize],
        pads: &[usize],
        cache: &mut KvCache,
        adapter: AdapterRef,
    ) -> Result<Tensor> {
        let n = ids.len();
        if positions.len() != n || pads.len() != n || n == 0 {
            return Err(EngineError::Invalid(format!(
                "a rows step needs one position and one pad per row ({n} ids, {} positions, {} \
                 pads)",
                positions.len(),
                pads.len()
            )));
        }
        let max_pos = self.rope.cos.dim(0)?;
        if let Some(&p) = positions.iter().find(|&&p| p >= max_pos) {
            return Err(EngineError::Invalid(format!(
                "sequence of {} tokens exceeds the model's {max_pos} positions",
                p + 1
            )));
        }
        let at: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let at = Tensor::from_vec(at, n, &self.device)?;
        let total = cache.seq_len() + 1;
        let mask: Vec<f32> = pads
            .iter()
            .flat_map(|&pad| (0..total).map(move |j| if j < pad { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let rows = Rows {
            cos: self.rope.cos.index_select(&at, 0)?,
            sin: self.rope.sin.index_select(&at, 0)?,
            mask: Tensor::from_vec(mask, (n, 1, 1, total), &self.device)?.to_dtype(self.dtype)?,
        };
        let ids = Tensor::from_slice(ids, (n, 1), &self.device)?;
        let h = self.blocks_forward(&ids, 0, cache, adapter, false, Some(&rows))?;
        Ok(self.logits(&h.squeeze(1)?, false)?.to_dtype(DType::F32)?)
    }

    fn blocks_forward(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        adapter: AdapterRef,
        train: bool,
        rows: Option<&Rows>,
    ) -> Result<Tensor> {
        let lora = self.resolve(adapter)?;
        let (b, t) = ids.dims2()?;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .to_dtype(self.dtype)?
            .reshape((b, t, self.cfg.hidden_size))?;
        for i in 0..self.blocks.len() {
            let blk = &self.blocks[i];
            let h = self.norm(&x, &blk.ln_attn, train)?;
            let a = self.attention(i, &h, offset, cache, lora, train, rows)?;
            x = (x + a)?;
            let h = self.norm(&x, &blk.ln_mlp, train)?;
            let m = self.mlp(i, &h, lora, train)?;
            x = (x + m)?;
        }
        Ok(self.norm(&x, &self.norm, train)?)
    }

    /// Logits `(…, vocab)` from hidden states.
    pub fn logits(&self, hidden: &Tensor, train: bool) -> Result<Tensor> {
        Ok(frozen_matmul(hidden, &self.lm_head, train)?)
    }

    /// Convenience: full logits `(b, t, vocab)` in f32.
    pub fn forward(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        adapter: AdapterRef,
        train: bool,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(ids, offset, cache, adapter, train)?;
        Ok(self.logits(&h, train)?.to_dtype(DType::F32)?)
    }

    /// Logits of the last position only, `(b, vocab)` f32 (inference).
    pub fn forward_last(
        &self,
        ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        adapter: AdapterRef,
    ) -> Result<Tensor> {
        let h = self.forward_hidden(ids, offset, cache, adapter, false)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(self.logits(&last, false)?.to_dtype(DType::F32)?)
    }

    /// Positions the rotary tables cover (the longest sequence this model runs).
    pub fn max_positions(&self) -> usize {
        self.rope.cos.dims().first().copied().unwrap_or(0)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.blocks.len())
    }

    /// Ids tensor on the model's device.
    pub fn ids_tensor(&self, ids: &[u32], batch: usize) -> Result<Tensor> {
        let t = ids.len() / batch.max(1);
        Ok(Tensor::from_slice(ids, (batch, t), &self.device)?)
    }

    /// Base weights under their HF names (the tied head is not repeated), e.g. to save a
    /// pre-trained model as `model.safetensors`.
    pub fn base_weights(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![
            ("model.embed_tokens.weight".to_string(), self.embed.clone()),
            ("model.norm.weight".to_string(), self.norm.clone()),
        ];
        if self.lm_head.id() != self.embed.id() {
            v.push(("lm_head.weight".to_string(), self.lm_head.clone()));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            v.push((format!("{p}.input_layernorm.weight"), b.ln_attn.clone()));
            v.push((
                format!("{p}.post_attention_layernorm.weight"),
                b.ln_mlp.clone(),
            ));
            for t in Target::ALL {
                let base = format!("{p}.{}.{}", t.parent(), t.name());
                let lin = &b.proj[t.index()];
                v.push((format!("{base}.weight"), lin.w.clone()));
                if let Some(bias) = &lin.b {
                    v.push((format!("{base}.bias"), bias.clone()));
                }
            }
        }
        v
    }

    /// Turn every base weight into a trainable variable (full-parameter training, used by
    /// `cahl-tui pretrain`) and return them under their HF names. A tied head shares the
    /// embedding's variable. Base matmuls then compute weight gradients (see
    /// [`frozen_matmul`]); adapters are unaffected.
    pub fn make_base_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        if self.embed.dtype() != self.dtype {
            return Err(EngineError::Unsupported(format!(
                "the base weights are stored in {:?} (16-bit storage); full-parameter training \
                 needs them in the compute dtype {:?}",
                self.embed.dtype(),
                self.dtype
            )));
        }
        let tied = self.lm_head.id() == self.embed.id();
        let mut out = Vec::new();
        let mut var = |name: String, t: &mut Tensor| -> Result<()> {
            let v = Var::from_tensor(&t.contiguous()?)?;
            *t = v.as_tensor().clone();
            out.push((name, v));
            Ok(())
        };
        var("model.embed_tokens.weight".into(), &mut self.embed)?;
        var("model.norm.weight".into(), &mut self.norm)?;
        if tied {
            self.lm_head = self.embed.clone();
        } else {
            var("lm_head.weight".into(), &mut self.lm_head)?;
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            var(format!("{p}.input_layernorm.weight"), &mut b.ln_attn)?;
            var(
                format!("{p}.post_attention_layernorm.weight"),
                &mut b.ln_mlp,
            )?;
            for t in Target::ALL {
                let base = format!("{p}.{}.{}", t.parent(), t.name());
                let lin = &mut b.proj[t.index()];
                var(format!("{base}.weight"), &mut lin.w)?;
                if let Some(bias) = lin.b.as_mut() {
                    var(format!("{base}.bias"), bias)?;
                }
            }
        }
        Ok(out)
    }

    /// Keep the frozen matrices (projections, embedding, head) in `dt` (e.g. f16) while the
    /// model computes in its own dtype: each matmul widens the weight as it reads it (decode's
    /// small-m kernel on the fly, larger matmuls one matrix at a time), so memory and the bytes
    /// streamed per decode step halve at the cost of rounding the base weights once. Norms,
    /// biases and adapters keep the compute dtype. Not for a base made trainable.
    pub fn store_base_weights(&mut self, dt: DType) -> Result<()> {
        if dt == self.embed.dtype() {
            return Ok(());
        }
        if !self.device.is_cpu() {
            return Err(EngineError::Unsupported(
                "16-bit base-weight storage is a CPU option; on a GPU use --dtype".into(),
            ));
        }
        if self.embed.is_variable() {
            return Err(EngineError::Unsupported(
                "the base is being trained (full-parameter); its weights stay in the compute dtype"
                    .into(),
            ));
        }
        let tied = self.lm_head.id() == self.embed.id();
        let conv = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(dt)?.contiguous()?) };
        self.embed = conv(&self.embed)?;
        self.lm_head = if tied {
            self.embed.clone()
        } else {
            conv(&self.lm_head)?
        };
        for b in &mut self.blocks {
            for p in &mut b.proj {
                p.w = conv(&p.w)?;
            }
        }
        Ok(())
    }

    /// The dtype the frozen matrices are stored in ([`Model::store_base_weights`]).
    pub fn base_weight_dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Every frozen base tensor (for tests that check no gradient reaches them).
    pub fn base_tensors(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.embed, &self.norm, &self.lm_head];
        for b in &self.blocks {
            v.push(&b.ln_attn);
            v.push(&b.ln_mlp);
            for p in &b.proj {
                v.push(&p.w);
                if let Some(bias) = &p.b {
                    v.push(bias);
                }
            }
        }
        v
    }
}

//! AdamW over one adapter's variables, with gradient accumulation and global-norm clipping.
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use cahl_sessions::fsutil::{atomic_write, atomic_write_with};

/// AdamW hyper-parameters (PyTorch's names and defaults, except lr).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables.
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
        }
    }
}

/// Sums gradients of a fixed list of variables over micro-batches.
#[derive(Debug)]
pub struct GradAccum {
    vars: Vec<Var>,
    sums: Vec<Option<Tensor>>,
}

impl GradAccum {
    pub fn new(vars: Vec<Var>) -> Self {
        let n = vars.len();
        GradAccum {
            vars,
            sums: vec![None; n],
        }
    }

    /// Add the gradients found in `grads` for our variables.
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        for (v, s) in self.vars.iter().zip(self.sums.iter_mut()) {
            if let Some(g) = grads.get(v.as_tensor()) {
                *s = Some(match s.take() {
                    None => g.clone(),
                    Some(prev) => (prev + g)?,
                });
            }
        }
        Ok(())
    }

    /// The gradients `grads` holds for `vars`, in order (to keep them without the whole store,
    /// which also holds gradients of every intermediate tensor).
    pub fn pick(vars: &[Var], grads: &GradStore) -> Vec<Option<Tensor>> {
        vars.iter()
            .map(|v| grads.get(v.as_tensor()).cloned())
            .collect()
    }

    /// Add gradients picked with [`GradAccum::pick`] for the same variables.
    pub fn add_picked(&mut self, picked: Vec<Option<Tensor>>) -> Result<()> {
        for (g, s) in picked.into_iter().zip(self.sums.iter_mut()) {
            if let Some(g) = g {
                *s = Some(match s.take() {
                    None => g,
                    Some(prev) => (prev + g)?,
                });
            }
        }
        Ok(())
    }

    /// Indices of variables that received no gradient at all.
    pub fn missing(&self) -> Vec<usize> {
        self.sums
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| i)
            .collect()
    }

    pub fn grads(&self) -> &[Option<Tensor>] {
        &self.sums
    }

    pub fn clear(&mut self) {
        self.sums.iter_mut().for_each(|s| *s = None);
    }
}

/// Result of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// True when the update was skipped: non-finite gradients, or an update that would have made
    /// a weight non-finite (then `non_finite_weights`); parameters and moments are untouched.
    pub skipped: bool,
    /// True when the update was rolled back because a parameter would have become non-finite.
    pub non_finite_weights: bool,
}

/// True when every element of `t` is finite (a NaN or an infinity anywhere makes the sum of
/// absolute values non-finite).
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.to_dtype(DType::F64)?
        .abs()?
        .sum_all()?
        .to_scalar::<f64>()?
        .is_finite())
}

/// The largest absolute value in `vars` (0 for none); NaN when any is NaN.
pub fn max_abs(vars: &[Var]) -> Result<f64> {
    let mut most = 0f64;
    for v in vars {
        // candle's max does not propagate NaN: check finiteness first.
        if !all_finite(v.as_tensor())? {
            return Ok(f64::NAN);
        }
        let m = v
            .as_tensor()
            .to_dtype(DType::F64)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        if m.is_nan() {
            return Ok(f64::NAN);
        }
        most = most.max(m);
    }
    Ok(most)
}

/// AdamW (decoupled weight decay, bias-corrected moments).
#[derive(Debug)]
pub struct AdamW {
    pub cfg: AdamWConfig,
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
}

#[derive(Serialize, Deserialize)]
struct OptimMeta {
    step: u64,
    config: AdamWConfig,
    names: Vec<String>,
}

impl AdamW {
    pub fn new(named: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (_, var) in &named {
            let z = var.as_tensor().zeros_like()?.to_dtype(DType::F32)?;
            m.push(z.clone());
            v.push(z);
        }
        let (names, vars) = named.into_iter().unzip();
        Ok(AdamW {
            cfg,
            names,
            vars,
            m,
            v,
            step: 0,
        })
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }
    pub fn steps_taken(&self) -> u64 {
        self.step
    }
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Apply one update from accumulated gradients (missing gradients count as zero).
    /// Non-finite gradients skip the update and leave parameters and moments untouched.
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<StepInfo> {
        if grads.len() != self.vars.len() {
            return Err(EngineError::Invalid(
                "gradient list does not match parameters".into(),
            ));
        }
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Ok(StepInfo {
                grad_norm: norm,
                skipped: true,
                non_finite_weights: false,
            });
        }
        let clip = if self.cfg.max_grad_norm > 0.0 && norm > self.cfg.max_grad_norm {
            self.cfg.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        let step = self.step + 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        // The new parameters and moments are computed first and committed only when every
        // parameter is finite: an update that would make a weight non-finite (an absurd
        // learning rate, an overflow) is rolled back whole, parameters and moments alike.
        let mut next = Vec::with_capacity(grads.len());
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let g = (g.to_dtype(DType::F32)? * clip)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let p = self.vars[i].as_tensor().to_dtype(DType::F32)?;
            let p = (p.clone() * (1.0 - c.lr * c.weight_decay))?;
            let p = (p - (upd * c.lr)?)?.to_dtype(self.vars[i].dtype())?;
            if !all_finite(&p)? {
                return Ok(StepInfo {
                    grad_norm: norm,
                    skipped: true,
                    non_finite_weights: true,
                });
            }
            next.push((i, p, m, v));
        }
        self.step = step;
        for (i, p, m, v) in next {
            self.vars[i].set(&p)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(StepInfo {
            grad_norm: norm,
            skipped: false,
            non_finite_weights: false,
        })
    }

    /// Save moments (`optimizer.safetensors`) and step/config (`optimizer.json`) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (i, n) in self.names.iter().enumerate() {
            map.insert(format!("{n}.exp_avg"), self.m[i].clone());
            map.insert(format!("{n}.exp_avg_sq"), self.v[i].clone());
        }
        atomic_write_with(&dir.join("optimizer.safetensors"), |tmp| {
            Ok::<_, crate::EngineError>(candle_core::safetensors::save(&map, tmp)?)
        })?;
        let meta = OptimMeta {
            step: self.step,
            config: self.cfg.clone(),
            names: self.names.clone(),
        };
        let text = serde_json::to_string_pretty(&meta)?;
        atomic_write(&dir.join("optimizer.json"), text.as_bytes())?;
        Ok(())
    }

    /// Restore state written by [`AdamW::save`]; names and shapes must match.
    pub fn load(&mut self, dir: &Path, device: &Device) -> Result<()> {
        let mp = dir.join("optimizer.json");
        let text = std::fs::read_to_string(&mp).map_err(|e| EngineError::Io {
            path: mp.clone(),
            source: e,
        })?;
        let meta: OptimMeta =
            serde_json::from_str(&text).map_err(|e| EngineError::load(&mp, e.to_string()))?;
        if meta.names != self.names {
            return Err(EngineError::load(
                &mp,
                "optimizer parameters do not match the adapter",
            ));
        }
        let sp = dir.join("optimizer.safetensors");
        let t = candle_core::safetensors::load(&sp, device)
            .map_err(|e| EngineError::load(&sp, e.to_string()))?;
        for (i, n) in self.names.iter().enumerate() {
            let get = |k: String| -> Result<Tensor> {
                let x = t
                    .get(&k)
                    .ok_or_else(|| EngineError::load(&sp, format!("missing {k}")))?;
                if x.dims() != self.vars[i].dims() {
                    return Err(EngineError::load(&sp, format!("{k} has the wrong shape")));
                }
                Ok(x.clone())
            };
            self.m[i] = get(format!("{n}.exp_avg"))?;
            self.v[i] = get(format!("{n}.exp_avg_sq"))?;
        }
        self.step = meta.step;
        self.cfg = meta.config;
        Ok(())
    }
}

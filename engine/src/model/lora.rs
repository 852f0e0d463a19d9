//! Named LoRA adapters over the frozen base, saved and loaded in PEFT's format.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::model::config::ModelConfig;
use cahl_sessions::fsutil::{atomic_write, atomic_write_with};

/// The projection modules a LoRA adapter may target, in HF/PEFT naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];
    /// PEFT module name, e.g. `q_proj`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }
    /// Parent module in the HF tree (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            _ => "mlp",
        }
    }
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.strip_suffix("_proj").unwrap_or(s);
        Some(match s {
            "q" => Target::Q,
            "k" => Target::K,
            "v" => Target::V,
            "o" => Target::O,
            "gate" => Target::Gate,
            "up" => Target::Up,
            "down" => Target::Down,
            _ => return None,
        })
    }
    /// (in_features, out_features) of this projection for a config.
    pub fn shape(self, cfg: &ModelConfig) -> (usize, usize) {
        let h = cfg.hidden_size;
        let qd = cfg.num_attention_heads * cfg.head_dim();
        let kvd = cfg.num_kv_heads() * cfg.head_dim();
        match self {
            Target::Q => (h, qd),
            Target::K | Target::V => (h, kvd),
            Target::O => (qd, h),
            Target::Gate | Target::Up => (h, cfg.intermediate_size),
            Target::Down => (cfg.intermediate_size, h),
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    16.0
}
fn default_targets() -> Vec<String> {
    Target::ALL.iter().map(|t| t.name().to_string()).collect()
}

/// LoRA hyper-parameters (PEFT's names).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha")]
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "default_targets")]
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: default_r(),
            lora_alpha: default_alpha(),
            lora_dropout: 0.0,
            target_modules: default_targets(),
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }
    pub fn targets(&self) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for t in &self.target_modules {
            let tt = Target::parse(t).ok_or_else(|| {
                EngineError::Config(format!(
                    "unknown LoRA target module {t:?} (known: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj)"
                ))
            })?;
            if !out.contains(&tt) {
                out.push(tt);
            }
        }
        if self.r == 0 {
            return Err(EngineError::Config("LoRA rank r must be > 0".into()));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(EngineError::Config("lora_dropout must be in [0, 1)".into()));
        }
        Ok(out)
    }
}

/// One LoRA pair: `A` is `(r, in)`, `B` is `(out, r)`; delta(x) = scale * B A x.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
}

/// A named adapter: one optional LoRA pair per (layer, target).
#[derive(Debug)]
pub struct LoraAdapter {
    pub name: String,
    pub config: LoraConfig,
    /// `layers[i][target.index()]`
    pub layers: Vec<[Option<LoraPair>; 7]>,
    scale: f64,
    dropout_rng: Mutex<ChaCha8Rng>,
}

impl LoraAdapter {
    /// New adapter initialised as PEFT does: A ~ kaiming-uniform (bound 1/sqrt(in)), B = 0.
    pub fn new_random(
        name: &str,
        cfg: &LoraConfig,
        model: &ModelConfig,
        dtype: DType,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let targets = cfg.targets()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(model.num_hidden_layers);
        for _ in 0..model.num_hidden_layers {
            let mut row: [Option<LoraPair>; 7] = Default::default();
            for &t in &targets {
                let (fin, fout) = t.shape(model);
                let bound = 1.0 / (fin as f64).sqrt();
                let a: Vec<f32> = (0..cfg.r * fin)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                let a = Tensor::from_vec(a, (cfg.r, fin), device)?.to_dtype(dtype)?;
                let b = Tensor::zeros((fout, cfg.r), dtype, device)?;
                row[t.index()] = Some(LoraPair {
                    a: Var::from_tensor(&a)?,
                    b: Var::from_tensor(&b)?,
                });
            }
            layers.push(row);
        }
        Ok(LoraAdapter {
            name: name.to_string(),
            config: cfg.clone(),
            layers,
            scale: cfg.scale(),
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)),
        })
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn pair(&self, layer: usize, t: Target) -> Option<&LoraPair> {
        self.layers.get(layer).and_then(|r| r[t.index()].as_ref())
    }

    /// All trainable variables with their PEFT key names, in a stable order.
    pub fn named_vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::new();
        for (i, row) in self.layers.iter().enumerate() {
            for t in Target::ALL {
                if let Some(p) = &row[t.index()] {
                    let base = peft_key(i, t);
                    out.push((format!("{base}.lora_A.weight"), &p.a));
                    out.push((format!("{base}.lora_B.weight"), &p.b));
                }
            }
        }
        out
    }

    pub fn vars(&self) -> Vec<Var> {
        self.named_vars()
            .into_iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Dropout mask for the LoRA input (inverted dropout), drawn from the adapter's seeded RNG.
    pub fn dropout_mask(
        &self,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Option<Tensor>> {
        let p = self.config.lora_dropout;
        if p <= 0.0 {
            return Ok(None);
        }
        let n: usize = shape.iter().product();
        let keep = 1.0 / (1.0 - p);
        let mut rng = self
            .dropout_rng
            .lock()
            .map_err(|_| EngineError::Poisoned("dropout rng"))?;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random::<f64>() < p {
                    0.0
                } else {
                    keep as f32
                }
            })
            .collect();
        Ok(Some(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?))
    }

    /// State of the dropout RNG, for checkpoints.
    pub fn dropout_rng_state(&self) -> Option<ChaCha8Rng> {
        self.dropout_rng.lock().ok().map(|r| r.clone())
    }
    pub fn set_dropout_rng_state(&self, rng: ChaCha8Rng) {
        if let Ok(mut g) = self.dropout_rng.lock() {
            *g = rng;
        }
    }

    /// Save in PEFT format: `adapter_config.json` + `adapter_model.safetensors`.
    pub fn save_peft(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::Io {
            path: dir.into(),
            source: e,
        })?;
        let cfg = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.config.r,
            "lora_alpha": self.config.lora_alpha,
            "lora_dropout": self.config.lora_dropout,
            "target_modules": self.config.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "modules_to_save": null,
            "layers_to_transform": null,
            "revision": null,
        });
        // A non-finite adapter is never written: it would load fine and generate garbage.
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for (k, v) in self.named_vars() {
            let t = v.as_tensor().to_dtype(DType::F32)?;
            if !crate::optim::all_finite(&t)? {
                return Err(EngineError::Invalid(format!(
                    "adapter {}: {k} holds non-finite values; not saved to {}",
                    self.name,
                    dir.display()
                )));
            }
            map.insert(k, t);
        }
        let text = serde_json::to_string_pretty(&cfg)?;
        atomic_write(&dir.join("adapter_config.json"), text.as_bytes())?;
        atomic_write_with(&dir.join("adapter_model.safetensors"), |tmp| {
            Ok::<_, crate::EngineError>(candle_core::safetensors::save(&map, tmp)?)
        })?;
        Ok(())
    }

    /// Load a PEFT adapter directory for `model`; shapes are checked against the config.
    pub fn load_peft(
        name: &str,
        dir: &Path,
        model: &ModelConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| EngineError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::load(&cfg_path, format!("invalid JSON: {e}")))?;
        let get_f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let r = v
            .get("r")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| EngineError::load(&cfg_path, "missing integer key \"r\""))?
            as usize;
        let lora_alpha = get_f("lora_alpha").unwrap_or(r as f64);
        let lora_dropout = get_f("lora_dropout").unwrap_or(0.0);
        if v.get("use_dora").and_then(|x| x.as_bool()) == Some(true) {
            return Err(EngineError::load(
                &cfg_path,
                "DoRA adapters are not supported",
            ));
        }
        if v.get("use_rslora").and_then(|x| x.as_bool()) == Some(true) {
            return Err(EngineError::load(
                &cfg_path,
                "rsLoRA adapters are not supported",
            ));
        }
        let target_modules: Vec<String> = match v.get("target_modules") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => return Err(EngineError::load(&cfg_path, "missing \"target_modules\"")),
        };
        let config = LoraConfig {
            r,
            lora_alpha,
            lora_dropout,
            target_modules,
        };
        let targets = config
            .targets()
            .map_err(|e| EngineError::load(&cfg_path, e.to_string()))?;
        let st_path = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&st_path, device)
            .map_err(|e| EngineError::load(&st_path, e.to_string()))?;
        let mut layers = Vec::with_capacity(model.num_hidden_layers);
        let mut used = 0usize;
        for i in 0..model.num_hidden_layers {
            let mut row: [Option<LoraPair>; 7] = Default::default();
            for &t in &targets {
                let (fin, fout) = t.shape(model);
                let base = peft_key(i, t);
                let fetch = |suffix: &str, shape: (usize, usize)| -> Result<Tensor> {
                    let key = format!("{base}.{suffix}.weight");
                    let alt = format!("{base}.{suffix}.default.weight");
                    let ten = tensors
                        .get(&key)
                        .or_else(|| tensors.get(&alt))
                        .ok_or_else(|| {
                            EngineError::load(&st_path, format!("missing tensor {key}"))
                        })?;
                    if ten.dims2().ok() != Some(shape) {
                        return Err(EngineError::load(
                            &st_path,
                            format!(
                                "tensor {key} has shape {:?}, expected {:?}",
                                ten.dims(),
                                shape
                            ),
                        ));
                    }
                    Ok(ten.to_dtype(dtype)?)
                };
                let a = fetch("lora_A", (r, fin))?;
                let b = fetch("lora_B", (fout, r))?;
                used += 2;
                row[t.index()] = Some(LoraPair {
                    a: Var::from_tensor(&a)?,
                    b: Var::from_tensor(&b)?,
                });
            }
            layers.push(row);
        }
        if used != tensors.len() {
            let known: std::collections::HashSet<String> = (0..model.num_hidden_layers)
                .flat_map(|i| targets.iter().map(move |&t| peft_key(i, t)))
                .collect();
            let extra: Vec<&String> = tensors
                .keys()
                .filter(|k| !known.iter().any(|b| k.starts_with(b.as_str())))
                .take(3)
                .collect();
            return Err(EngineError::load(
                &st_path,
                format!("unexpected tensors for this model (wrong base model?): {extra:?}"),
            ));
        }
        let scale = config.scale();
        Ok(LoraAdapter {
            name: name.to_string(),
            config,
            layers,
            scale,
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
        })
    }

    /// Copy parameter values from another adapter of the same layout.
    pub fn copy_from(&self, other: &LoraAdapter) -> Result<()> {
        let mine = self.named_vars();
        let theirs: BTreeMap<String, &Var> = other.named_vars().into_iter().collect();
        for (k, v) in mine {
            let src = theirs
                .get(&k)
                .ok_or_else(|| EngineError::Weights(format!("adapter {} lacks {k}", other.name)))?;
            v.set(src.as_tensor())?;
        }
        Ok(())
    }
}

/// PEFT key prefix of a module, e.g. `base_model.model.model.layers.3.self_attn.q_proj`.
pub fn peft_key(layer: usize, t: Target) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}",
        t.parent(),
        t.name()
    )
}

//! Devices and dtypes by name, as configs and flags spell them.
use candle_core::DType;

use crate::error::Result;

/// A device from its name: `cpu`, `cuda` (GPU 0) or `cuda:N`. CUDA needs a build with
/// `--features cuda`; without it the error says so.
pub fn parse_device(s: &str) -> Result<candle_core::Device> {
    let bad = || {
        crate::error::EngineError::Config(format!(
            "unknown device {s:?} (expected cpu, cuda or cuda:N)"
        ))
    };
    match s {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => cuda_device(0),
        _ => {
            let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
            cuda_device(n.parse().map_err(|_| bad())?)
        }
    }
}

fn cuda_device(ordinal: usize) -> Result<candle_core::Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(crate::error::EngineError::Config(
            "device cuda: this binary was built without CUDA (rebuild with `--features cuda`)"
                .into(),
        ));
    }
    candle_core::Device::new_cuda(ordinal).map_err(|e| {
        crate::error::EngineError::Config(format!("device cuda:{ordinal} is not usable: {e}"))
    })
}

/// A dtype from its name (`f32`, `f16`, `bf16`, `f64`).
pub fn parse_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f64" => DType::F64,
        _ => return None,
    })
}

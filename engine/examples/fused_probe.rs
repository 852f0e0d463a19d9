//! Milliseconds of the fused ops (`cahl_engine::model::fused`) on the shapes of one layer of
//! SmolLM2-135M (hidden 576, 9 query and 3 key-value heads of 64, MLP 1536) at `B x 128`
//! tokens, forward alone and forward + backward, best and mean of 30 (after a warm-up).
//!
//! `cargo run --release -p cahl-engine --example fused_probe`; `B=8` for eight sequences.
//! The kernel path is the one `bench` would use; `CAHL_CPU_KERNELS=avx512|avx2|scalar` forces
//! one, so runs with each compare the paths on this CPU.
use cahl_engine::model::fused::{causal_softmax, rms_norm, rope_bthd, swiglu};
use cahl_engine::model::kernels::cpu_path;
use candle_core::{Device, Result, Tensor, Var};
use std::time::Instant;

/// Best and mean milliseconds of 30 calls of `f`, after one warm-up call.
fn time(mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    f()?;
    let (mut best, mut tot) = (f64::MAX, 0.0);
    for _ in 0..30 {
        let t = Instant::now();
        f()?;
        let e = t.elapsed().as_secs_f64() * 1e3;
        best = best.min(e);
        tot += e;
    }
    Ok((best, tot / 30.0))
}

/// Times `op` forward (inputs as constants) and forward + backward (inputs as variables, the
/// loss `sum(op(..))`; candle's part of that, the sum and its gradient, is the same on every
/// path).
fn probe(name: &str, ins: &[Tensor], op: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let (fb, fm) = time(|| op(ins).map(|_| ()))?;
    let vars: Vec<Var> = ins.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (bb, bm) = time(|| op(&ts)?.sum_all()?.backward().map(|_| ()))?;
    println!("{name:<28} fwd {fb:7.3} / {fm:7.3} ms   fwd+bwd {bb:7.3} / {bm:7.3} ms");
    Ok(())
}

fn main() -> Result<()> {
    let b: usize = std::env::var("B")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let t = 128;
    let dev = Device::Cpu;
    println!(
        "path: {}  shape: {b} x {t} tokens  (best / mean)",
        cpu_path().name()
    );
    let x = Tensor::randn(0f32, 1.0, (b, t, 576), &dev)?;
    let w = Tensor::randn(0f32, 1.0, 576, &dev)?;
    // The norm's weight is frozen, as in LoRA training.
    probe("rms-norm (576)", &[x], |v| rms_norm(&v[0], &w, 1e-5))?;
    let g = Tensor::randn(0f32, 1.0, (b, t, 1536), &dev)?;
    let u = Tensor::randn(0f32, 1.0, (b, t, 1536), &dev)?;
    probe("swiglu (1536)", &[g, u], |v| swiglu(&v[0], &v[1]))?;
    let s = Tensor::randn(0f32, 1.0, (b, 9, t, t), &dev)?;
    probe("causal softmax (9 heads)", &[s], |v| {
        causal_softmax(&v[0], 0.125, t, 0, true)
    })?;
    let q = Tensor::randn(0f32, 1.0, (b, t, 9, 64), &dev)?;
    let ang = Tensor::randn(0f32, 1.0, (t, 32), &dev)?;
    let (cos, sin) = (ang.cos()?, ang.sin()?);
    probe("rope (9 heads of 64)", &[q], |v| {
        rope_bthd(&v[0], &cos, &sin, false, true)
    })?;
    Ok(())
}

//! GFLOP/s of candle's CPU matmul and of our packed GEMM (`cahl_engine::model::gemm`) on the
//! shapes of a LoRA training step of the Qwen2.5-0.5B shape (128 rows), best and mean of 30.
//!
//! `cargo run --release -p cahl-engine --example gemm_probe` (`RAYON_NUM_THREADS=1` for one
//! core; `SMALL=1` for cache-resident shapes; `SMOL=1` for SmolLM2-135M's; `PEAK=1` for the FMA peak of one core; `F16=1`
//! for weights stored in f16). Every
//! SIMD path this CPU has (AVX-512, AVX2) is timed on the same data.
use cahl_engine::model::gemm::{gemm_on, WeightLayout};
use cahl_engine::model::kernels::CpuPath;
use candle_core::{Device, Tensor};
use std::time::Instant;

/// Best and mean seconds of `reps` calls of `f`, after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut best = f64::MAX;
    let mut tot = 0.0;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        let e = t.elapsed().as_secs_f64();
        best = best.min(e);
        tot += e;
    }
    (best, tot / reps as f64)
}

fn probe(m: usize, k: usize, n: usize, wt: bool, reps: usize) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
    let (w, lay) = if wt {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        (w, WeightLayout::Transposed)
    } else {
        let w = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
        (w, WeightLayout::Plain)
    };
    let wc = if wt { w.t().unwrap() } else { w.clone() };
    let (best, mean) = time(reps, || {
        x.matmul(&wc).unwrap();
    });
    let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let ws: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let mut out = vec![0f32; m * n];
    let gf = 2.0 * (m * k * n) as f64 / 1e9;
    let mut line = format!(
        "m={m:5} k={k:5} n={n:6} {} candle best {:7.2} mean {:7.2}",
        if wt { "x@W^T" } else { "x@W  " },
        gf / best,
        gf / mean,
    );
    // Each SIMD path this CPU has, one after the other on the same data.
    // F16=1: the weight stored in f16, widened as it is packed (candle's figure stays f32).
    let ws16: Option<Vec<half::f16>> = std::env::var("F16")
        .is_ok()
        .then(|| ws.iter().map(|&v| half::f16::from_f32(v)).collect());
    for path in CpuPath::all_available() {
        if path == CpuPath::Scalar {
            continue;
        }
        let (b, mn) = time(reps, || match &ws16 {
            Some(w16) => gemm_on(path, &xs, m, k, w16, n, lay, &mut out),
            None => gemm_on(path, &xs, m, k, &ws, n, lay, &mut out),
        });
        line.push_str(&format!(
            " | {} best {:7.2} mean {:7.2}",
            path.name(),
            gf / b,
            gf / mn
        ));
    }
    println!("{line}");
}

fn main() {
    // As the binary runs: freed memory kept (no page faults per output), denormals flushed.
    cahl_engine::model::ops::tune_allocator();
    cahl_engine::model::ops::init_cpu_float_mode();
    if std::env::var("PEAK").is_ok() {
        peak();
        return;
    }
    let sh: Vec<(usize, usize, usize)> = if std::env::var("SMALL").is_ok() {
        vec![(126, 256, 256), (126, 256, 1024), (120, 2048, 256)]
    } else if std::env::var("SMOL").is_ok() {
        // SmolLM2-135M's projections at 128 tokens: q/o, k/v, gate/up, down.
        vec![
            (128, 576, 576),
            (128, 576, 192),
            (128, 576, 1536),
            (128, 1536, 576),
        ]
    } else {
        vec![
            (1024, 1024, 1024),
            (128, 896, 896),
            (128, 896, 128),
            (128, 896, 4864),
            (128, 4864, 896),
            (64, 896, 151936),
        ]
    };
    for &(m, k, n) in &sh {
        probe(m, k, n, true, 30);
        // backward: g (m, n) @ W (n, k)
        probe(m, n, k, false, 30);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_peak(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut s = 0.0;
    for v in acc {
        let mut t = [0f32; 8];
        _mm256_storeu_ps(t.as_mut_ptr(), v);
        s += t.iter().sum::<f32>();
    }
    s
}

#[cfg(not(target_arch = "x86_64"))]
fn peak() {
    println!("the FMA peak probe is x86-64 only");
}

#[cfg(target_arch = "x86_64")]
fn peak() {
    for _ in 0..3 {
        let iters = 50_000_000;
        let t = Instant::now();
        if !std::is_x86_feature_detected!("avx2") || !std::is_x86_feature_detected!("fma") {
            println!("this CPU lacks AVX2/FMA");
            return;
        }
        // SAFETY: AVX2 and FMA were detected just above.
        let s = unsafe { fma_peak(iters) };
        let e = t.elapsed().as_secs_f64();
        println!(
            "fma peak one core, AVX2: {:.1} GFLOP/s ({s})",
            (iters * 12 * 16) as f64 / e / 1e9
        );
        if std::is_x86_feature_detected!("avx512f") {
            let t = Instant::now();
            // SAFETY: AVX-512F was detected just above.
            let s = unsafe { fma_peak512(iters) };
            let e = t.elapsed().as_secs_f64();
            println!(
                "fma peak one core, AVX-512: {:.1} GFLOP/s ({s})",
                (iters * 12 * 32) as f64 / e / 1e9
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_peak512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

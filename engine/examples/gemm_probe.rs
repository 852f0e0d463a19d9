//! GFLOP/s of candle's CPU matmul and of our packed GEMM (`cahl_engine::model::gemm`) on the
//! shapes of a LoRA training step of the Qwen2.5-0.5B shape (128 rows), best and mean of 30.
//!
//! `cargo run --release -p cahl-engine --example gemm_probe` (`RAYON_NUM_THREADS=1` for one
//! core; `SMALL=1` for cache-resident shapes; `PEAK=1` for the FMA peak of one core).
use cahl_engine::model::gemm::{gemm, WeightLayout};
use candle_core::{Device, Tensor};
use std::time::Instant;

fn probe(m: usize, k: usize, n: usize, wt: bool, reps: usize) -> f64 {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
    let w = if wt {
        Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap()
    } else {
        Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap()
    };
    let run = || {
        if wt {
            x.matmul(&w.t().unwrap()).unwrap()
        } else {
            x.matmul(&w).unwrap()
        }
    };
    let _ = run();
    let mut best = f64::MAX;
    let mut tot = 0.0;
    for _ in 0..reps {
        let t = Instant::now();
        let _ = run();
        let e = t.elapsed().as_secs_f64();
        best = best.min(e);
        tot += e;
    }
    let gf = 2.0 * (m * k * n) as f64 / 1e9;
    // Ours.
    let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let ws: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let mut out = vec![0f32; m * n];
    let lay = if wt {
        WeightLayout::Transposed
    } else {
        WeightLayout::Plain
    };
    gemm(&xs, m, k, &ws, n, lay, &mut out);
    let (mut best2, mut tot2) = (f64::MAX, 0.0);
    for _ in 0..reps {
        let t = Instant::now();
        gemm(&xs, m, k, &ws, n, lay, &mut out);
        let e = t.elapsed().as_secs_f64();
        best2 = best2.min(e);
        tot2 += e;
    }
    println!(
        "m={m:5} k={k:5} n={n:6} {} candle best {:7.2} mean {:7.2} | ours best {:7.2} mean {:7.2}",
        if wt { "x@W^T" } else { "x@W  " },
        gf / best,
        gf / (tot / reps as f64),
        gf / best2,
        gf / (tot2 / reps as f64)
    );
    tot / reps as f64
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
            "fma peak one core: {:.1} GFLOP/s ({s})",
            (iters * 12 * 16) as f64 / e / 1e9
        );
    }
}

//! Numerical building blocks with correct backward passes, and CPU float-mode setup.
//!
//! candle's fused rope / rms_norm / softmax_last_dim record no backward, and its matmul backward
//! also computes the gradient of the right-hand side. On the CPU in f32/f64 the training path uses
//! the fused ops of [`super::fused`] (each with its own backward); elsewhere it uses the
//! compositions here, which compute the same functions. Every frozen weight goes through
//! [`frozen_matmul`], whose backward returns only the input gradient.
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

/// `x @ w^T` (`t`, the forward of a linear layer: `w` is `(out, in)`) or `x @ w` (not `t`, its
/// input gradient: `w` is `(in, out)`) for a frozen weight; `x` is `(..., in)`. Backward returns
/// the gradient for `x` only; none is computed for `w`. A weight stored in f16 is widened into a
/// per-thread scratch buffer for the call (no fresh allocation, so no page faults per matmul).
struct FrozenMatmul {
    t: bool,
}

thread_local! {
    static WIDE_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl FrozenMatmul {
    /// (m, k, n, output shape) for a contiguous x of shape (.., k).
    fn dims(&self, l1: &Layout, l2: &Layout) -> Result<(usize, usize, usize, Shape)> {
        let xd = l1.shape().dims();
        let (r, c) = l2.shape().dims2()?;
        let (k, n) = if self.t { (c, r) } else { (r, c) };
        let Some(&kx) = xd.last() else {
            candle_core::bail!("frozen_matmul: input is a scalar")
        };
        if kx != k {
            candle_core::bail!("frozen_matmul: input has {kx} features, weight expects {k}");
        }
        if !l1.is_contiguous() {
            candle_core::bail!("frozen_matmul: input must be contiguous");
        }
        let m = xd[..xd.len() - 1].iter().product();
        let mut out = xd.to_vec();
        if let Some(last) = out.last_mut() {
            *last = n;
        }
        Ok((m, k, n, Shape::from(out)))
    }

    /// Our packed GEMM ([`crate::model::gemm`]) for an f32 input and a contiguous f32 or f16
    /// weight on a CPU with AVX2/FMA/F16C; `None` where it does not apply (or is switched off
    /// with `CAHL_GEMM=candle`, for comparisons).
    #[allow(clippy::too_many_arguments)]
    fn packed_gemm(
        &self,
        s1: &CpuStorage,
        off: usize,
        s2: &CpuStorage,
        l2: &Layout,
        m: usize,
        k: usize,
        n: usize,
    ) -> Option<Vec<f32>> {
        use crate::model::gemm::{gemm_new, WeightLayout};
        let (CpuStorage::F32(x), Some((wa, wb))) = (s1, l2.contiguous_offsets()) else {
            return None;
        };
        if !packed_gemm_enabled() {
            return None;
        }
        let x = &x[off..off + m * k];
        let layout = if self.t {
            WeightLayout::Transposed
        } else {
            WeightLayout::Plain
        };
        match s2 {
            CpuStorage::F32(w) => Some(gemm_new(x, m, k, &w[wa..wb], n, layout)),
            CpuStorage::F16(w) => Some(gemm_new(x, m, k, &w[wa..wb], n, layout)),
            _ => None,
        }
    }

    /// The weight's layout as the (k, n) right-hand side.
    fn rhs(&self, wl: &Layout) -> Result<Layout> {
        if self.t {
            wl.transpose(0, 1)
        } else {
            Ok(wl.clone())
        }
    }
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k, n, out_shape) = self.dims(l1, l2)?;
        let (off, _) = l1.contiguous_offsets().unwrap_or((l1.start_offset(), 0));
        if let Some(out) = self.packed_gemm(s1, off, s2, l2, m, k, n) {
            return Ok((CpuStorage::F32(out), out_shape));
        }
        let lhs_l = Layout::contiguous_with_offset((m, k), off);
        if s2.dtype() == s1.dtype() {
            let out = s1.matmul(s2, (1, m, n, k), &lhs_l, &self.rhs(l2)?)?;
            return Ok((out, out_shape));
        }
        let (CpuStorage::F16(v), DType::F32, Some((a, b))) =
            (s2, s1.dtype(), l2.contiguous_offsets())
        else {
            let w = s2.to_dtype(l2, s1.dtype())?;
            let wl = self.rhs(&Layout::contiguous(l2.shape().clone()))?;
            return Ok((s1.matmul(&w, (1, m, n, k), &lhs_l, &wl)?, out_shape));
        };
        // A 16-bit stored weight, widened for this call only (the graph keeps the 16-bit one).
        let mut buf = WIDE_SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
        buf.resize(b - a, 0.0);
        crate::model::kernels::widen_f16_into(&v[a..b], &mut buf);
        let w = CpuStorage::F32(buf);
        let out = s1.matmul(
            &w,
            (1, m, n, k),
            &lhs_l,
            &self.rhs(&Layout::contiguous(l2.shape().clone()))?,
        );
        if let CpuStorage::F32(buf) = w {
            WIDE_SCRATCH.with(|c| *c.borrow_mut() = buf);
        }
        Ok((out?, out_shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (m, k, n, out_shape) = self.dims(l1, l2)?;
        let (off, _) = l1.contiguous_offsets().unwrap_or((l1.start_offset(), 0));
        let lhs_l = Layout::contiguous_with_offset((m, k), off);
        let out = s1.matmul(s2, (1, m, n, k), &lhs_l, &self.rhs(l2)?)?;
        Ok((out, out_shape))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad_res.contiguous()?;
        let back = FrozenMatmul { t: !self.t };
        Ok((Some(g.apply_op2_no_bwd(w, &back)?), None))
    }
}

/// Whether frozen matmuls use [`crate::model::gemm`] (CPU with AVX2/FMA/F16C, unless
/// `CAHL_GEMM=candle` asks for candle's GEMM, for comparisons). Read once.
pub fn packed_gemm_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        crate::model::gemm::supported()
            && std::env::var("CAHL_GEMM").map_or(true, |v| v != "candle")
    })
}

/// `x @ w^T` where `w` (out, in) is frozen. With `track` false this is a plain matmul
/// (inference); with `track` true it records a backward that skips the weight gradient.
pub fn frozen_matmul(x: &Tensor, w: &Tensor, track: bool) -> Result<Tensor> {
    // A base weight made trainable (full-parameter pre-training) is a variable: plain matmul,
    // so its gradient is computed.
    // A weight stored in 16 bits (`Model::store_base_weights`) goes through `FrozenMatmul`,
    // which widens it for the call (the small-m kernel reads it directly).
    if track && x.track_op() && !w.track_op() {
        let x = x.contiguous()?;
        x.apply_op2(w, FrozenMatmul { t: true })
    } else {
        // The small-m kernel records no backward: only where no gradient is wanted.
        if !x.track_op() && !w.track_op() {
            if let Some(y) = crate::model::kernels::small_m_matmul(x, w)? {
                return Ok(y);
            }
        }
        let untracked = !x.track_op() && !w.track_op();
        if w.dtype() != x.dtype() && w.track_op() {
            candle_core::bail!(
                "frozen_matmul: a trainable weight stored in {:?} cannot multiply a {:?} input \
                 (train the base in its compute dtype, without 16-bit storage)",
                w.dtype(),
                x.dtype()
            );
        }
        if w.dtype() != x.dtype()
            || (untracked
                && x.device().is_cpu()
                && x.dtype() == DType::F32
                && packed_gemm_enabled())
        {
            return x
                .contiguous()?
                .apply_op2_no_bwd(w, &FrozenMatmul { t: true });
        }
        matmul_2d(x, &w.t()?)
    }
}

/// `x (..., k) @ m (k, n)` as ONE 2-D matmul over all leading positions. candle's
/// `broadcast_matmul` would run one matmul per leading index (at decode, one GEMV per sequence,
/// each reading the whole weight matrix).
pub fn matmul_2d(x: &Tensor, m: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some(&k) = dims.last() else {
        candle_core::bail!("matmul_2d: input is a scalar")
    };
    let n = m.dim(1)?;
    let y = x.reshape(((), k))?.matmul(m)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    y.reshape(out)
}

/// RMSNorm composed of differentiable ops (computed in f32 for 16-bit inputs).
pub fn rms_norm_train(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    let internal = match dt {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let xf = x.to_dtype(internal)?;
    let ms = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_mul(&(ms + eps)?.sqrt()?.recip()?)?;
    normed.to_dtype(dt)?.broadcast_mul(w)
}

/// Softmax over the last dimension composed of differentiable ops.
pub fn softmax_train(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Log-softmax over the last dimension, differentiable.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let diff = x.broadcast_sub(&max)?;
    let lse = diff.exp()?.sum_keepdim(D::Minus1)?.log()?;
    diff.broadcast_sub(&lse)
}

/// Enable flush-to-zero and denormals-are-zero on the calling thread. Subnormal floats make
/// CPU backward passes up to 30x slower.
pub fn set_flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading and writing MXCSR only changes this thread's SSE float mode; bits 15
    // (FTZ) and 6 (DAZ) are defined on every x86-64 CPU.
    unsafe {
        let mut csr: u32 = 0;
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr as *mut u32, options(nostack));
        csr |= (1 << 15) | (1 << 6);
        core::arch::asm!("ldmxcsr [{}]", in(reg) &csr as *const u32, options(nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: setting FPCR.FZ (bit 24) only changes this thread's float mode.
    unsafe {
        let mut fpcr: u64;
        core::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
        fpcr |= 1 << 24;
        core::arch::asm!("msr fpcr, {}", in(reg) fpcr);
    }
}

/// Whether flush-to-zero is on for the calling thread (x86-64 only; true elsewhere).
pub fn flush_denormals_enabled() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr only reads the float control register into `csr`.
        unsafe {
            core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr as *mut u32, options(nostack));
        }
        csr & (1 << 15) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// Set flush-to-zero on this thread and on every thread of rayon's global pool (which candle's
/// CPU kernels and gemm use). Call once at start-up and at the start of worker threads.
pub fn init_cpu_float_mode() {
    set_flush_denormals();
    rayon::broadcast(|_| set_flush_denormals());
}

/// Run `f` on a thread of rayon's global pool (the pool candle's CPU kernels use).
///
/// Every parallel candle kernel called from outside the pool hands its job to a pool thread
/// and sleeps until it is done: a wake-up and a futex wait per tensor op. For small models that
/// hand-off costs more than the op itself. Called from inside the pool, the same kernels run
/// on the calling thread and the others steal work. The pool's threads have the stack size
/// set in [`init_compute_pool`].
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| {
        set_flush_denormals();
        f()
    })
}

/// Keep freed memory in the process instead of handing it back to the kernel after every tensor.
///
/// glibc serves allocations above its mmap threshold (128 KB at first, adapted up to 32 MB) with
/// fresh `mmap`s and gives heap tops above 128 KB back on `free`, so every activation, gradient
/// and temporary of a training step arrives as new zeroed pages: on the Qwen2.5-0.5B shape a
/// LoRA step spent 21% of its time in page faults (`clear_page_erms`). This fixes the threshold
/// at its maximum (32 MB: larger blocks are still mapped and unmapped) and keeps freed heap
/// memory for reuse. Peak RSS is the high-water mark either way. Skipped when the user set
/// `GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`, and on other C
/// libraries. Returns whether the settings were applied.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = [
            "GLIBC_TUNABLES",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if user_set {
            return false;
        }
        // SAFETY: mallopt only changes allocator parameters; it is called before other threads
        // allocate much, and glibc takes its own lock.
        unsafe {
            let a = libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            let b = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            a == 1 && b == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Fix the thread count candle's CPU matmul asks for on every call. Without `RAYON_NUM_THREADS`
/// candle answers with `num_cpus::get_physical()`, which opens and parses `/proc/cpuinfo` each
/// time (about 80 µs on the 2-core machine of docs/PERFORMANCE.md; a decoded token of a 30-layer
/// model runs some 300 such matmuls). This computes candle's answer once and sets the variable to
/// it, so the matmuls split exactly as before. Returns the size rayon's global pool would have
/// had without the variable (pass it to [`init_compute_pool`]), or 0 when the user set
/// `RAYON_NUM_THREADS` themselves (rayon then reads it as usual). Call it before any other
/// thread exists (it sets an environment variable).
pub fn pin_matmul_threads() -> usize {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return 0;
    }
    let pool = std::thread::available_parallelism().map_or(1, |n| n.get());
    let matmul = candle_core::utils::get_num_threads();
    std::env::set_var("RAYON_NUM_THREADS", matmul.to_string());
    pool
}

/// Build rayon's global pool (once; later calls are no-ops) with large stacks, so that work
/// run by [`on_compute_pool`] has the room of a main thread, and flush-to-zero set on every
/// worker. `threads` 0 keeps rayon's default (`RAYON_NUM_THREADS` or the number of cores).
pub fn init_compute_pool(threads: usize) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(COMPUTE_STACK_BYTES)
        .start_handler(|_| set_flush_denormals())
        .build_global();
    init_cpu_float_mode();
}

/// Stack size of the compute pool's threads (address space; pages are touched only if used).
pub const COMPUTE_STACK_BYTES: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The frozen matmul (our packed GEMM on CPUs that have it) against candle's matmul with
    /// full autograd: same output, same input gradient, no weight gradient.
    #[test]
    fn frozen_matmul_matches_candles_matmul_forward_and_backward() {
        let dev = Device::Cpu;
        for &(m, k, n) in &[
            (1usize, 8usize, 5usize),
            (7, 33, 17),
            (2 * 64, 96, 40),
            (130, 300, 20),
        ] {
            let x0 = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let r = Tensor::randn(0f32, 1.0, (m, n), &dev).unwrap();
            for w in [w.clone(), w.to_dtype(DType::F16).unwrap()] {
                let wf = w.to_dtype(DType::F32).unwrap();
                let x = Var::from_tensor(&x0).unwrap();
                let y = frozen_matmul(x.as_tensor(), &w, true).unwrap();
                let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let gx = grads.get(x.as_tensor()).unwrap();
                assert!(grads.get(&w).is_none(), "a frozen weight got a gradient");
                let xr = Var::from_tensor(&x0).unwrap();
                let yr = xr.as_tensor().matmul(&wf.t().unwrap()).unwrap();
                let gr = (&yr * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let gxr = gr.get(xr.as_tensor()).unwrap();
                let diff = crate::model::kernels::tests::max_abs_diff;
                let tol = 1e-4 * (k.max(n) as f32).sqrt();
                assert!(diff(&y, &yr) < tol, "{m}x{k}x{n} {:?}: forward", w.dtype());
                assert!(
                    diff(gx, gxr) < tol,
                    "{m}x{k}x{n} {:?}: input gradient",
                    w.dtype()
                );
                // Without tracking (inference) the same product.
                let yi = frozen_matmul(&x0, &w, false).unwrap();
                assert!(
                    diff(&yi, &yr) < tol,
                    "{m}x{k}x{n} {:?}: inference",
                    w.dtype()
                );
            }
        }
    }
}

//! Hand-written CPU kernels for the two places where candle's generic paths waste the most time.
//!
//! * [`small_m_matmul`]: `x (m, k) @ w^T` for a frozen weight `w (n, k)` when `m` is small
//!   (decode steps, a handful of rows). The generic GEMM packs the whole right-hand side for
//!   every call, which at decode means copying every weight matrix once per step; this kernel
//!   streams each weight row once and multiplies it with all `m` input rows while it is in L1.
//! * [`token_logprobs`]: log-softmax of a row of logits gathered at one target token, as one
//!   pass per row forward and one pass backward (`g * (onehot - softmax)`), instead of a
//!   composition of a dozen full-vocabulary tensors.
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `e^x` for f32 without a libm call: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, Cephes' degree-6
/// polynomial for `e^r`, and `2^n` built in the exponent bits. Branch-free, so loops over
/// slices vectorize (libm's `expf` was 3–5% of a training step's samples, one scalar call per
/// element). Relative error below 3e-7 on the range checked by its test; inputs under -87.3
/// give ~1e-38 instead of 0 (e.g. `exp(-inf)`), inputs over 88.37 give ~2.6e38 instead of
/// more (or inf): the callers only feed it numbers at most 0 or sigmoid arguments.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by adding and subtracting 1.5 * 2^23 (no rounding instruction needed).
    const SHIFTER: f32 = 12_582_912.0;
    // The top keeps `n <= 127`, so the exponent bits never reach the infinity pattern.
    let x = x.clamp(-87.3, 88.37);
    let n = (x * LOG2E + SHIFTER) - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Which CPU kernels run: the widest instruction set this CPU has, or the one
/// `CAHL_CPU_KERNELS` names (`avx512`, `avx2`, `scalar`; one this CPU lacks is ignored with a
/// warning). Read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuPath {
    /// AVX-512F (with AVX2, FMA and F16C).
    Avx512,
    /// AVX2, FMA and F16C.
    Avx2,
    /// Portable loops.
    Scalar,
}

impl CpuPath {
    /// How `bench` and the docs name it.
    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Avx512 => "avx512",
            CpuPath::Avx2 => "avx2",
            CpuPath::Scalar => "scalar",
        }
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            CpuPath::Scalar => true,
            CpuPath::Avx2 => small_m_supported(),
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512 => small_m_supported() && std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            CpuPath::Avx512 => false,
        }
    }

    /// Every path this CPU can run, widest first.
    pub fn all_available() -> Vec<CpuPath> {
        [CpuPath::Avx512, CpuPath::Avx2, CpuPath::Scalar]
            .into_iter()
            .filter(|p| p.available())
            .collect()
    }
}

/// The kernels' path on this CPU (see [`CpuPath`]).
pub fn cpu_path() -> CpuPath {
    static PATH: std::sync::OnceLock<CpuPath> = std::sync::OnceLock::new();
    *PATH.get_or_init(|| {
        let widest = CpuPath::all_available()[0];
        match std::env::var("CAHL_CPU_KERNELS").as_deref() {
            Err(_) | Ok("") => widest,
            Ok(v) => {
                let asked = match v {
                    "avx512" => Some(CpuPath::Avx512),
                    "avx2" => Some(CpuPath::Avx2),
                    "scalar" => Some(CpuPath::Scalar),
                    _ => None,
                };
                match asked {
                    Some(p) if p.available() => p,
                    _ => {
                        tracing::warn!(
                            "CAHL_CPU_KERNELS={v:?} is not a path this CPU runs (avx512, avx2, \
                             scalar): using {}",
                            widest.name()
                        );
                        widest
                    }
                }
            }
        }
    })
}

/// Largest row count that goes through [`small_m_matmul`] instead of the generic GEMM.
pub const SMALL_M: usize = 16;

/// Whether this CPU has the instructions the small-m kernel needs (AVX2, FMA, and F16C for
/// 16-bit weights).
pub fn small_m_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weight rows per parallel task.
const N_CHUNK: usize = 32;

/// A weight element the small-m kernel reads: f32 as it is, f16 widened to f32 as it is loaded
/// (half the bytes streamed from memory per decode step, f32 arithmetic).
pub trait WeightElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Eight consecutive elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 8` must be readable and the CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// Sixteen consecutive elements from `p` as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 16` must be readable and the CPU must have AVX-512F (and F16C).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        // SAFETY: forwarded from the caller.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        // SAFETY: forwarded from the caller.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
}

impl WeightElem for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: forwarded from the caller: 8 f16 = 16 readable bytes, F16C present.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: forwarded from the caller: 16 f16 = 32 readable bytes, AVX-512F present.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
}

/// `out (m, n) = x (m, k) @ w (n, k)^T`, row-major, f32 inputs and f32 or f16 weights, on the
/// kernel path of [`cpu_path`] (the scalar loop on CPUs without AVX2/FMA/F16C; callers
/// normally check [`small_m_supported`] first).
pub fn small_m_matmul_f32<W: WeightElem>(
    x: &[f32],
    w: &[W],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    small_m_matmul_on(cpu_path(), x, w, m, k, n)
}

/// [`small_m_matmul_f32`] on a given path (tests run every path the CPU has); a path this CPU
/// lacks runs the scalar loop.
pub fn small_m_matmul_on<W: WeightElem>(
    path: CpuPath,
    x: &[f32],
    w: &[W],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let path = if path.available() {
        path
    } else {
        CpuPath::Scalar
    };
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(w.len(), n * k);
    // Computed transposed, (n, m), so each task owns a contiguous block of the output.
    let mut out_t = vec![0f32; n * m];
    out_t
        .par_chunks_mut(N_CHUNK * m.max(1))
        .enumerate()
        .for_each(|(c, block)| {
            let n0 = c * N_CHUNK;
            let rows = block.len() / m.max(1);
            let wb = &w[n0 * k..(n0 + rows) * k];
            #[cfg(target_arch = "x86_64")]
            match path {
                // SAFETY: `path` is available on this CPU (checked above): AVX-512F with AVX2,
                // FMA and F16C.
                CpuPath::Avx512 => return unsafe { avx512::block(x, wb, m, k, rows, block) },
                // SAFETY: as above, AVX2, FMA and F16C.
                CpuPath::Avx2 => return unsafe { avx::block(x, wb, m, k, rows, block) },
                CpuPath::Scalar => {}
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = path;
            scalar_block(x, wb, m, k, rows, block);
        });
    let mut out = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = out_t[j * m + i];
        }
    }
    out
}

fn scalar_block<W: WeightElem>(
    x: &[f32],
    w: &[W],
    m: usize,
    k: usize,
    rows: usize,
    out_t: &mut [f32],
) {
    for r in 0..rows {
        let wr = &w[r * k..(r + 1) * k];
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            out_t[r * m + i] = wr.iter().zip(xr).map(|(a, b)| a.to_f32() * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::WeightElem;
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Dot products of two weight rows with `R` input rows: `acc[a][b] = w_a . x_b`.
    ///
    /// # Safety
    /// Needs AVX2, FMA and F16C; every slice must have at least `k` elements.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<W: WeightElem, const R: usize>(
        w0: &[W],
        w1: &[W],
        xs: [&[f32]; R],
        k: usize,
    ) -> [[f32; R]; 2] {
        let mut a0 = [_mm256_setzero_ps(); R];
        let mut a1 = [_mm256_setzero_ps(); R];
        let k8 = k / 8 * 8;
        let mut p = 0;
        while p < k8 {
            // SAFETY: p + 8 <= k <= every slice's length.
            let v0 = W::load8(w0.as_ptr().add(p));
            let v1 = W::load8(w1.as_ptr().add(p));
            for b in 0..R {
                let xv = _mm256_loadu_ps(xs[b].as_ptr().add(p));
                a0[b] = _mm256_fmadd_ps(v0, xv, a0[b]);
                a1[b] = _mm256_fmadd_ps(v1, xv, a1[b]);
            }
            p += 8;
        }
        let mut out = [[0f32; R]; 2];
        for b in 0..R {
            let mut s0 = hsum(a0[b]);
            let mut s1 = hsum(a1[b]);
            for q in k8..k {
                s0 += w0[q].to_f32() * xs[b][q];
                s1 += w1[q].to_f32() * xs[b][q];
            }
            out[0][b] = s0;
            out[1][b] = s1;
        }
        out
    }

    /// Inputs in groups of `R` against one pair of weight rows, writing `out_t[(r, i)]`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pair_rows<W: WeightElem, const R: usize>(
        x: &[f32],
        w0: &[W],
        w1: &[W],
        i0: usize,
        k: usize,
        m: usize,
        r: usize,
        out_t: &mut [f32],
    ) {
        let xs: [&[f32]; R] = std::array::from_fn(|b| &x[(i0 + b) * k..(i0 + b + 1) * k]);
        let o = tile::<W, R>(w0, w1, xs, k);
        for b in 0..R {
            out_t[r * m + i0 + b] = o[0][b];
            if r + 1 < out_t.len() / m {
                out_t[(r + 1) * m + i0 + b] = o[1][b];
            }
        }
    }

    /// One task's block: weight rows `w (rows, k)` against all `m` inputs.
    ///
    /// # Safety
    /// Needs AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn block<W: WeightElem>(
        x: &[f32],
        w: &[W],
        m: usize,
        k: usize,
        rows: usize,
        out_t: &mut [f32],
    ) {
        let mut r = 0;
        while r < rows {
            let w0 = &w[r * k..(r + 1) * k];
            // An odd last row is paired with itself; its duplicate result is not stored.
            let w1 = if r + 1 < rows {
                &w[(r + 1) * k..(r + 2) * k]
            } else {
                w0
            };
            let mut i = 0;
            while i + 4 <= m {
                pair_rows::<W, 4>(x, w0, w1, i, k, m, r, out_t);
                i += 4;
            }
            match m - i {
                3 => pair_rows::<W, 3>(x, w0, w1, i, k, m, r, out_t),
                2 => pair_rows::<W, 2>(x, w0, w1, i, k, m, r, out_t),
                1 => pair_rows::<W, 1>(x, w0, w1, i, k, m, r, out_t),
                _ => {}
            }
            r += 2;
        }
    }
}

/// The small-m kernel on AVX-512: four weight rows against up to four input rows per tile, 16
/// lanes (16 zmm accumulators of the 32), the same task split as the AVX2 kernel.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::WeightElem;
    use std::arch::x86_64::*;

    /// Weight rows per tile.
    const WR: usize = 4;

    /// Dot products of `WR` weight rows with `R` input rows: `acc[a][b] = w_a . x_b`.
    ///
    /// # Safety
    /// Needs AVX-512F, AVX2, FMA and F16C; every slice must have at least `k` elements.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn tile<W: WeightElem, const R: usize>(
        ws: [&[W]; WR],
        xs: [&[f32]; R],
        k: usize,
    ) -> [[f32; R]; WR] {
        let mut acc = [[_mm512_setzero_ps(); R]; WR];
        let k16 = k / 16 * 16;
        let mut p = 0;
        while p < k16 {
            let mut v = [_mm512_setzero_ps(); WR];
            for (a, va) in v.iter_mut().enumerate() {
                // SAFETY: p + 16 <= k <= every slice's length.
                *va = unsafe { W::load16(ws[a].as_ptr().add(p)) };
            }
            for b in 0..R {
                // SAFETY: as above.
                let xv = unsafe { _mm512_loadu_ps(xs[b].as_ptr().add(p)) };
                for a in 0..WR {
                    acc[a][b] = _mm512_fmadd_ps(v[a], xv, acc[a][b]);
                }
            }
            p += 16;
        }
        let mut out = [[0f32; R]; WR];
        for a in 0..WR {
            for b in 0..R {
                let mut s = _mm512_reduce_add_ps(acc[a][b]);
                for q in k16..k {
                    s += ws[a][q].to_f32() * xs[b][q];
                }
                out[a][b] = s;
            }
        }
        out
    }

    /// Inputs `i0..i0 + R` against the weight rows `r..r + WR` (the last ones repeated past the
    /// block's end), writing `out_t[(r + a, i0 + b)]` for the rows that exist.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn rows_tile<W: WeightElem, const R: usize>(
        x: &[f32],
        ws: [&[W]; WR],
        i0: usize,
        k: usize,
        m: usize,
        r: usize,
        rows: usize,
        out_t: &mut [f32],
    ) {
        let xs: [&[f32]; R] = std::array::from_fn(|b| &x[(i0 + b) * k..(i0 + b + 1) * k]);
        // SAFETY: forwarded from the caller.
        let o = unsafe { tile::<W, R>(ws, xs, k) };
        for (a, oa) in o.iter().enumerate() {
            if r + a < rows {
                for (b, v) in oa.iter().enumerate() {
                    out_t[(r + a) * m + i0 + b] = *v;
                }
            }
        }
    }

    /// One task's block: weight rows `w (rows, k)` against all `m` inputs.
    ///
    /// # Safety
    /// Needs AVX-512F, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn block<W: WeightElem>(
        x: &[f32],
        w: &[W],
        m: usize,
        k: usize,
        rows: usize,
        out_t: &mut [f32],
    ) {
        let mut r = 0;
        while r < rows {
            let ws: [&[W]; WR] = std::array::from_fn(|a| {
                let ra = (r + a).min(rows - 1);
                &w[ra * k..(ra + 1) * k]
            });
            let mut i = 0;
            // SAFETY (each call): forwarded from the caller.
            while i + 4 <= m {
                unsafe { rows_tile::<W, 4>(x, ws, i, k, m, r, rows, out_t) };
                i += 4;
            }
            match m - i {
                3 => unsafe { rows_tile::<W, 3>(x, ws, i, k, m, r, rows, out_t) },
                2 => unsafe { rows_tile::<W, 2>(x, ws, i, k, m, r, rows, out_t) },
                1 => unsafe { rows_tile::<W, 1>(x, ws, i, k, m, r, rows, out_t) },
                _ => {}
            }
            r += WR;
        }
    }
}

/// f16 -> f32 of a whole slice into `out` (same length), in parallel chunks (F16C where the CPU
/// has it): widening a stored base matrix for one matmul costs a memory pass, not a scalar loop.
pub fn widen_f16_into(src: &[half::f16], out: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    out.par_chunks_mut(1 << 15)
        .zip(src.par_chunks(1 << 15))
        .for_each(|(o, s)| s.convert_to_f32_slice(o));
}

/// `x @ w^T` for f32 CPU inputs and f32 or f16 weights through the small-m kernel; `x (..., k)`,
/// `w (n, k)`.
struct SmallM;

impl CustomOp2 for SmallM {
    fn name(&self) -> &'static str {
        "small-m-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = s1 else {
            candle_core::bail!("small-m matmul needs f32 inputs")
        };
        let (Some((xa, xb)), Some((wa, wb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("small-m matmul needs contiguous tensors")
        };
        let (n, k) = l2.shape().dims2()?;
        let xd = l1.shape().dims();
        if xd.last() != Some(&k) {
            candle_core::bail!("small-m matmul: input {xd:?} does not end in {k} features");
        }
        let m = l1.shape().elem_count() / k.max(1);
        let x = &xs[xa..xb];
        let out = match s2 {
            CpuStorage::F32(ws) => small_m_matmul_f32(x, &ws[wa..wb], m, k, n),
            CpuStorage::F16(ws) => small_m_matmul_f32(x, &ws[wa..wb], m, k, n),
            _ => candle_core::bail!("small-m matmul needs f32 or f16 weights"),
        };
        let mut od = xd.to_vec();
        if let Some(last) = od.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(out), Shape::from(od)))
    }
}

/// The row count of `x (..., k)` when `x @ w^T` can go through the small-m kernel (CPU, f32
/// input, f32 or f16 weight `(n, k)`, 1 to [`SMALL_M`] rows, AVX2+FMA+F16C).
fn small_m_rows(x: &Tensor, w: &Tensor) -> Result<Option<usize>> {
    if !x.device().is_cpu()
        || x.dtype() != DType::F32
        || !matches!(w.dtype(), DType::F32 | DType::F16)
        || w.rank() != 2
        || cpu_path() == CpuPath::Scalar
    {
        return Ok(None);
    }
    let m = x.elem_count() / w.dim(1)?.max(1);
    Ok((1..=SMALL_M).contains(&m).then_some(m))
}

/// `x (..., k) @ w (n, k)^T` through the small-m kernel when it applies (CPU, f32 input, f32
/// or f16 weight, at most [`SMALL_M`] rows, AVX2+FMA+F16C); `None` when the caller should use
/// the generic matmul.
pub fn small_m_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    if small_m_rows(x, w)?.is_none() {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(Some(x.apply_op2_no_bwd(&w, &SmallM)?))
}

/// `x @ w^T + scale * (x @ a^T) @ b^T`: a frozen projection `w (n, k)` with a LoRA pair
/// `a (r, k)`, `b (n, r)`, for inference at a few rows. The base product goes through the small-m
/// kernel and the rank-r terms are added in the same pass, so a decode step's adapted
/// projection is one op instead of five (two generic matmuls, a scale, an addition, and the
/// graph the adapter's variables would otherwise record).
struct SmallMLora {
    w: Tensor,
    scale: f32,
}

/// Dot product with eight independent accumulators (vectorisable).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (p, q) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += p[i] * q[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl candle_core::CustomOp3 for SmallMLora {
    fn name(&self) -> &'static str {
        "small-m-lora"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let mut y = {
            let (ws, wl) = self.w.storage_and_layout();
            let candle_core::Storage::Cpu(ws) = &*ws else {
                candle_core::bail!("small-m lora needs a CPU weight")
            };
            SmallM.cpu_fwd(s1, l1, ws, wl)?
        };
        let (CpuStorage::F32(xs), CpuStorage::F32(a_s), CpuStorage::F32(b_s)) = (s1, s2, s3) else {
            candle_core::bail!("small-m lora needs f32 inputs and adapter")
        };
        let (Some((xa, xb)), Some((aa, ab)), Some((ba, bb))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            candle_core::bail!("small-m lora needs contiguous tensors")
        };
        let (r, k) = l2.shape().dims2()?;
        let (n, rb) = l3.shape().dims2()?;
        let (x, a, b) = (&xs[xa..xb], &a_s[aa..ab], &b_s[ba..bb]);
        if rb != r || x.len() % k.max(1) != 0 || y.1.elem_count() != (x.len() / k.max(1)) * n {
            candle_core::bail!("small-m lora: shapes do not match (a {r}x{k}, b {n}x{rb})");
        }
        let CpuStorage::F32(out) = &mut y.0 else {
            candle_core::bail!("small-m lora: unexpected output type")
        };
        let mut low = vec![0f32; r];
        for (xi, yi) in x.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            for (lj, aj) in low.iter_mut().zip(a.chunks_exact(k)) {
                *lj = self.scale * dot(xi, aj);
            }
            for (yj, bj) in yi.iter_mut().zip(b.chunks_exact(r)) {
                *yj += dot(&low, bj);
            }
        }
        Ok(y)
    }
}

/// `x @ w^T + scale * (x @ a^T) @ b^T` without a graph through the small-m kernel when it
/// applies (as [`small_m_matmul`], with an f32 LoRA pair); `None` when the caller should
/// compose it from generic ops.
pub fn small_m_lora(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    if a.dtype() != DType::F32 || b.dtype() != DType::F32 || !a.device().is_cpu() {
        return Ok(None);
    }
    if x.track_op() || small_m_rows(x, w)?.is_none() {
        return Ok(None);
    }
    if a.dims2()?.1 != w.dim(1)? || b.dims2()?.0 != w.dim(0)? {
        return Ok(None);
    }
    let op = SmallMLora {
        w: w.contiguous()?,
        scale: scale as f32,
    };
    let (x, a, b) = (
        x.contiguous()?,
        a.detach().contiguous()?,
        b.detach().contiguous()?,
    );
    Ok(Some(x.apply_op3_no_bwd(&a, &b, &op)?))
}

/// Log-probabilities of target tokens: `out[r] = x[r, t_r]/T - logsumexp(x[r, :]/T)` for logits
/// `x (rows, vocab)` f32 and targets `t (rows,)` u32; differentiable with respect to `x`.
struct TokenLogprobs {
    temperature: f64,
    targets: Vec<u32>,
}

/// Row statistics of `x / T`: (max, log of the sum of exp(x/T - max)).
fn row_lse(row: &[f32], inv_t: f32) -> (f32, f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * inv_t));
    if !max.is_finite() {
        return (max, 0.0);
    }
    let s: f32 = row.iter().map(|&v| exp_f32(v * inv_t - max)).sum();
    (max, s.ln())
}

impl CustomOp1 for TokenLogprobs {
    fn name(&self) -> &'static str {
        "token-logprobs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = s else {
            candle_core::bail!("token-logprobs needs f32 logits")
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("token-logprobs needs contiguous logits")
        };
        let (rows, v) = l.shape().dims2()?;
        if self.targets.len() != rows {
            candle_core::bail!(
                "token-logprobs: {} targets for {rows} rows",
                self.targets.len()
            );
        }
        let xs = &xs[a..b];
        let inv_t = (1.0 / self.temperature) as f32;
        let out: Vec<f32> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let row = &xs[r * v..(r + 1) * v];
                let t = self.targets[r] as usize;
                if t >= v {
                    return f32::NAN;
                }
                let (max, lse) = row_lse(row, inv_t);
                row[t] * inv_t - max - lse
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let op = TokenLogprobsGrad {
            temperature: self.temperature,
            targets: self.targets.clone(),
            grad: g,
        };
        Ok(Some(arg.apply_op1_no_bwd(&op)?))
    }
}

/// Gradient of [`TokenLogprobs`] with respect to the logits:
/// `d x[r, j] = g_r / T * (1[j == t_r] - softmax(x[r]/T)_j)`.
struct TokenLogprobsGrad {
    temperature: f64,
    targets: Vec<u32>,
    grad: Vec<f32>,
}

impl CustomOp1 for TokenLogprobsGrad {
    fn name(&self) -> &'static str {
        "token-logprobs-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = s else {
            candle_core::bail!("token-logprobs-grad needs f32 logits")
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("token-logprobs-grad needs contiguous logits")
        };
        let (rows, v) = l.shape().dims2()?;
        let xs = &xs[a..b];
        let inv_t = (1.0 / self.temperature) as f32;
        let mut out = vec![0f32; rows * v];
        out.par_chunks_mut(v.max(1)).enumerate().for_each(|(r, o)| {
            let g = self.grad[r];
            if g == 0.0 {
                return;
            }
            let row = &xs[r * v..(r + 1) * v];
            let (max, lse) = row_lse(row, inv_t);
            let gs = g * inv_t;
            for (oj, &xj) in o.iter_mut().zip(row) {
                *oj = -gs * exp_f32(xj * inv_t - max - lse);
            }
            let t = self.targets[r] as usize;
            if t < v {
                o[t] += gs;
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Log-probabilities `(rows,)` of `targets` under `softmax(logits / temperature)` for CPU f32
/// logits `(rows, vocab)`, with a fused backward. `None` when it does not apply (other device or
/// dtype), in which case the caller composes the log-softmax from tensor ops.
pub fn token_logprobs(
    logits: &Tensor,
    targets: &[u32],
    temperature: f64,
) -> Result<Option<Tensor>> {
    if !logits.device().is_cpu() || logits.dtype() != DType::F32 || logits.rank() != 2 {
        return Ok(None);
    }
    if temperature.is_nan() || temperature <= 0.0 {
        candle_core::bail!("token_logprobs: temperature must be > 0, got {temperature}");
    }
    let op = TokenLogprobs {
        temperature,
        targets: targets.to_vec(),
    };
    Ok(Some(logits.contiguous()?.apply_op1(op)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn exp_f32_matches_libm_within_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.37 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(88.5).is_finite() && exp_f32(f32::INFINITY).is_finite());
    }
    use candle_core::Device;

    /// Largest absolute difference of two f32 tensors (shared by the model's unit tests).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn det(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + 1.0) * seed).sin()).collect()
    }

    /// Every path this CPU runs, on shapes that cut through both tiles (2 or 4 weight rows,
    /// up to 4 inputs, 8 or 16 lanes): odd row counts, short and ragged `k`.
    #[test]
    fn small_m_matches_generic_matmul_on_odd_shapes() {
        for path in CpuPath::all_available() {
            for (m, k, n) in [
                (1, 7, 3),
                (3, 17, 5),
                (8, 64, 33),
                (5, 40, 70),
                (16, 9, 1),
                (7, 37, 6),
                (2, 576, 31),
            ] {
                let x = Tensor::from_vec(det(m * k, 0.37), (m, k), &Device::Cpu).unwrap();
                let w = Tensor::from_vec(det(n * k, 0.71), (n, k), &Device::Cpu).unwrap();
                let want = x.matmul(&w.t().unwrap()).unwrap();
                let got = Tensor::from_vec(
                    small_m_matmul_on(
                        path,
                        &x.flatten_all().unwrap().to_vec1().unwrap(),
                        &w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        m,
                        k,
                        n,
                    ),
                    (m, n),
                    &Device::Cpu,
                )
                .unwrap();
                let d = max_abs_diff(&want, &got);
                assert!(d < 1e-4, "{} ({m},{k},{n}): max diff {d}", path.name());
            }
        }
    }

    #[test]
    fn small_m_reads_f16_weights_like_their_f32_values() {
        for (m, k, n) in [(1, 7, 3), (3, 17, 5), (8, 64, 33), (16, 40, 9), (5, 48, 7)] {
            let x = det(m * k, 0.37);
            let w16: Vec<half::f16> = det(n * k, 0.71)
                .into_iter()
                .map(half::f16::from_f32)
                .collect();
            let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
            for path in CpuPath::all_available() {
                let a = small_m_matmul_on(path, &x, &w16, m, k, n);
                let b = small_m_matmul_on(path, &x, &w32, m, k, n);
                let d = a
                    .iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{} ({m},{k},{n}): max diff {d}", path.name());
            }
        }
    }

    #[test]
    fn small_m_lora_matches_the_composed_projection() {
        if !small_m_supported() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C, so small_m_lora never applies");
            return;
        }
        let dev = Device::Cpu;
        for (m, k, n, r) in [
            (1, 19, 7, 3),
            (3, 64, 33, 8),
            (16, 40, 9, 8),
            (8, 576, 65, 16),
        ] {
            let x = Tensor::from_vec(det(m * k, 0.37), (m, k), &dev).unwrap();
            let w = Tensor::from_vec(det(n * k, 0.71), (n, k), &dev).unwrap();
            let a = candle_core::Var::from_vec(det(r * k, 0.53), (r, k), &dev).unwrap();
            let b = candle_core::Var::from_vec(det(n * r, 0.29), (n, r), &dev).unwrap();
            let scale = 2.0;
            let low = (x.matmul(&a.as_tensor().t().unwrap()).unwrap() * scale).unwrap();
            let up = low.matmul(&b.as_tensor().t().unwrap()).unwrap();
            for w in [w.clone(), w.to_dtype(DType::F16).unwrap()] {
                // The weight's own values (an f16 weight as the kernel widens it).
                let w32 = w.to_dtype(DType::F32).unwrap();
                let want = (x.matmul(&w32.t().unwrap()).unwrap() + &up).unwrap();
                let got = small_m_lora(&x, &w, a.as_tensor(), b.as_tensor(), scale)
                    .unwrap()
                    .expect("applies: CPU, f32, few rows");
                assert!(!got.track_op(), "inference output records no graph");
                let d = max_abs_diff(&want, &got);
                assert!(d < 1e-3, "({m},{k},{n},{r}) {:?}: max diff {d}", w.dtype());
            }
        }
        // Too many rows, or an input with a graph: the caller composes it.
        let x = Tensor::zeros((SMALL_M + 1, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        let a = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((3, 2), DType::F32, &dev).unwrap();
        assert!(small_m_lora(&x, &w, &a, &b, 1.0).unwrap().is_none());
        let tracked = candle_core::Var::zeros((2, 4), DType::F32, &dev).unwrap();
        assert!(small_m_lora(tracked.as_tensor(), &w, &a, &b, 1.0)
            .unwrap()
            .is_none());
    }

    #[test]
    fn token_logprobs_match_log_softmax_and_gradient() {
        let (rows, v) = (3, 11);
        let x = candle_core::Var::from_vec(det(rows * v, 1.3), (rows, v), &Device::Cpu).unwrap();
        let t = [4u32, 0, 10];
        let temp = 0.7;
        let fused = token_logprobs(x.as_tensor(), &t, temp).unwrap().unwrap();
        let scaled = (x.as_tensor() / temp).unwrap();
        let composed = crate::model::ops::log_softmax(&scaled)
            .unwrap()
            .gather(
                &Tensor::new(&t, &Device::Cpu).unwrap().unsqueeze(1).unwrap(),
                1,
            )
            .unwrap()
            .squeeze(1)
            .unwrap();
        let a: Vec<f32> = fused.to_vec1().unwrap();
        let b: Vec<f32> = composed.to_vec1().unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        let w = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        let g1 = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (composed * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let d = max_abs_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
        assert!(d < 1e-5, "gradient differs by {d}");
    }
}

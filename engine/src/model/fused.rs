//! Fused CPU ops of the decoder, each with its own backward pass.
//!
//! The training path composed RMSNorm, rope, the causal softmax and SwiGLU out of candle's
//! element-wise ops (whose fused versions record no backward). Each composed op allocates its
//! output, and candle's backward adds a zero-filled accumulator and an addition for every input
//! of every op, so a 128-token LoRA step of the Qwen2.5-0.5B shape ran ~20 element-wise ops
//! per norm, ~20 per rope and ~12 per SwiGLU, forward and backward. Here each is one pass
//! forward and one pass backward (its own custom op, recording nothing), over rows in
//! parallel. They serve f32 and f64 tensors on the CPU ([`fused_ok`]); other dtypes and devices
//! keep the compositions in [`super::ops`], which compute the same function (tests compare
//! values and gradients).
//!
//! Each op's per-row (or per-chunk) kernel is written once and compiled for every kernel path
//! (`on_path!`: AVX-512, AVX2 + FMA, portable), run on [`super::kernels::cpu_path`]. Their
//! reductions (sums of squares, dot products, the softmax's maximum and sum) keep 16 partial
//! sums, so the compiler can put them in vector registers; the summation order is the same on
//! every path.
use super::kernels::cpu_path;
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType, D,
};
use num_traits::Float;
use rayon::prelude::*;

/// Work split into parallel tasks of at least this many elements.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// Whether the fused ops serve this tensor (CPU, f32 or f64).
pub fn fused_ok(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

pub(super) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Run `f(row_index, row)` over the rows of length `row` of `out`, in parallel.
fn for_rows<T: Send>(out: &mut [T], row: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let row = row.max(1);
    let min = (PAR_MIN_ELEMS / row).max(1);
    out.par_chunks_mut(row)
        .with_min_len(min)
        .enumerate()
        .for_each(|(i, o)| f(i, o));
}

/// The element types of the CPU kernels (f32, and f64 for the gradient tests).
pub(crate) trait Elem: WithDType + FastExp + Float + Send + Sync {}
impl Elem for f32 {}
impl Elem for f64 {}

/// `a * b + c`, fused where `F` (the paths that have FMA) and plain on the portable path.
#[inline(always)]
pub(crate) fn madd<T: Float, const F: bool>(a: T, b: T, c: T) -> T {
    if F {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `fn $name<T: Elem>(path: CpuPath, args…)`: the kernel `$body::<T, FMA>(args…)` compiled for
/// each path (AVX-512 and AVX2 with fused multiply-adds, and the portable loops) and run on
/// `path`. `$body` must be `#[inline(always)]`, and so must what it calls in its loops, for the
/// wider instructions to reach them; a closure handed to another function (rayon's) is compiled
/// on its own, so the dispatch goes inside such closures, not around them.
macro_rules! on_path {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name<T: $crate::model::fused::Elem>(path: $crate::model::kernels::CpuPath, $($arg: $ty),*) {
            // Callers pass `cpu_path()` or a path of `CpuPath::all_available()`.
            debug_assert!(path.available(), "kernel path {} not available here", path.name());
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide<T: $crate::model::fused::Elem>($($arg: $ty),*) {
                    $body::<T, true>($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                unsafe fn narrow<T: $crate::model::fused::Elem>($($arg: $ty),*) {
                    $body::<T, true>($($arg),*)
                }
                match path {
                    // SAFETY: a path is only chosen where this CPU runs it
                    // (`CpuPath::available`).
                    $crate::model::kernels::CpuPath::Avx512 => return unsafe { wide::<T>($($arg),*) },
                    $crate::model::kernels::CpuPath::Avx2 => return unsafe { narrow::<T>($($arg),*) },
                    $crate::model::kernels::CpuPath::Scalar => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = path;
            $body::<T, false>($($arg),*)
        }
    };
}

pub(crate) use on_path;

macro_rules! dispatch {
    ($op:expr, $s:expr, $f:ident ( $($a:expr),* )) => {
        match $s {
            CpuStorage::F32(_) => $f::<f32>($($a),*),
            CpuStorage::F64(_) => $f::<f64>($($a),*),
            other => candle_core::bail!("{}: unsupported dtype {:?}", $op, other.dtype()),
        }
    };
}

/// Partial sums of the reductions: one AVX-512 register of f32 (two of f64, two AVX2 registers
/// of f32). The summation order is fixed by this, whatever the path; paths differ only in
/// whether products are fused with their additions.
const P: usize = 16;

/// The sum of the partial sums, pairwise.
#[inline(always)]
fn sum_lanes<T: Float>(mut acc: [T; P]) -> T {
    let mut w = P / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] = acc[i] + acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

/// `sum_i a_i b_i` (also the blocked attention's `rowsum(dO O)`).
#[inline(always)]
pub(crate) fn dot<T: Float, const F: bool>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let full = n / P * P;
    let mut acc = [T::zero(); P];
    for (x, y) in a[..full].chunks_exact(P).zip(b[..full].chunks_exact(P)) {
        for i in 0..P {
            acc[i] = madd::<T, F>(x[i], y[i], acc[i]);
        }
    }
    let mut s = sum_lanes(acc);
    for i in full..n {
        s = madd::<T, F>(a[i], b[i], s);
    }
    s
}

/// `sum_i a_i b_i c_i`.
#[inline(always)]
fn dot3<T: Float, const F: bool>(a: &[T], b: &[T], c: &[T]) -> T {
    let n = a.len().min(b.len()).min(c.len());
    let full = n / P * P;
    let mut acc = [T::zero(); P];
    let chunks = a[..full].chunks_exact(P).zip(b[..full].chunks_exact(P));
    for ((x, y), z) in chunks.zip(c[..full].chunks_exact(P)) {
        for i in 0..P {
            acc[i] = madd::<T, F>(x[i] * y[i], z[i], acc[i]);
        }
    }
    let mut s = sum_lanes(acc);
    for i in full..n {
        s = madd::<T, F>(a[i] * b[i], c[i], s);
    }
    s
}

fn last_dim(l: &Layout, op: &str) -> Result<usize> {
    match l.shape().dims().last() {
        Some(&h) if h > 0 => Ok(h),
        _ => candle_core::bail!("{op}: input needs a non-empty last dimension"),
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

struct RmsNorm {
    eps: f64,
}

#[inline(always)]
fn rms_inv<T: Float, const F: bool>(x: &[T], eps: T) -> T {
    let n = T::from(x.len()).unwrap_or_else(T::one);
    (dot::<T, F>(x, x) / n + eps).sqrt().recip()
}

/// One row of RMSNorm: `o = x / rms(x) * w`.
#[inline(always)]
fn rms_row<T: Elem, const F: bool>(x: &[T], w: &[T], eps: T, o: &mut [T]) {
    let inv = rms_inv::<T, F>(x, eps);
    for ((o, &xv), &wv) in o.iter_mut().zip(x).zip(w) {
        *o = xv * inv * wv;
    }
}

on_path!(rms_row_on, rms_row, (x: &[T], w: &[T], eps: T, o: &mut [T]));

/// One row of RMSNorm's input gradient:
/// `dx_k = inv w_k dy_k - x_k inv^3 / h * sum_j w_j dy_j x_j`.
#[inline(always)]
fn rms_bwd_row<T: Elem, const F: bool>(x: &[T], dy: &[T], w: &[T], eps: T, o: &mut [T]) {
    let hn = T::from(x.len()).unwrap_or_else(T::one);
    let inv = rms_inv::<T, F>(x, eps);
    let c = inv * inv * inv * dot3::<T, F>(dy, w, x) / hn;
    for (((o, &xv), &g), &wv) in o.iter_mut().zip(x).zip(dy).zip(w) {
        *o = inv * g * wv - xv * c;
    }
}

on_path!(rms_bwd_row_on, rms_bwd_row, (x: &[T], dy: &[T], w: &[T], eps: T, o: &mut [T]));

fn rms_fwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s1, l1, "rms-norm")?;
    let w = slice::<T>(s2, l2, "rms-norm")?;
    let h = last_dim(l1, "rms-norm")?;
    if w.len() != h {
        candle_core::bail!("rms-norm: weight has {} entries, input rows {h}", w.len());
    }
    let eps = <T as WithDType>::from_f64(eps);
    let path = cpu_path();
    let mut out = vec![T::zero(); x.len()];
    for_rows(&mut out, h, |r, o| {
        rms_row_on(path, &x[r * h..(r + 1) * h], w, eps, o)
    });
    Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s1, rms_fwd(s1, l1, s2, l2, self.eps))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &grad, &RmsNormBwd { eps: self.eps })?;
        // The weight's gradient only where it is trained (full-parameter pre-training).
        let dw = if w.track_op() {
            let h = w.elem_count();
            let xd = x.detach();
            let inv = (xd.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
                .sqrt()?
                .recip()?;
            let normed = xd.broadcast_mul(&inv)?;
            Some((grad * normed)?.reshape(((), h))?.sum(0)?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// Input gradient of RMSNorm: `(x, w, dy) -> dx`.
struct RmsNormBwd {
    eps: f64,
}

#[allow(clippy::too_many_arguments)]
fn rms_bwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
    eps: f64,
) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s1, l1, "rms-norm-bwd")?;
    let w = slice::<T>(s2, l2, "rms-norm-bwd")?;
    let dy = slice::<T>(s3, l3, "rms-norm-bwd")?;
    let h = last_dim(l1, "rms-norm-bwd")?;
    if w.len() != h || dy.len() != x.len() {
        candle_core::bail!("rms-norm-bwd: shapes do not match");
    }
    let eps = <T as WithDType>::from_f64(eps);
    let path = cpu_path();
    let mut out = vec![T::zero(); x.len()];
    for_rows(&mut out, h, |r, o| {
        let rows = r * h..(r + 1) * h;
        rms_bwd_row_on(path, &x[rows.clone()], &dy[rows], w, eps, o)
    });
    Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "fused-rms-norm-bwd"
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
        dispatch!(self.name(), s1, rms_bwd(s1, l1, s2, l2, s3, l3, self.eps))
    }
}

/// RMSNorm over the last dimension times `w`, one op forward and one backward.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: silu(g) * u

struct SwiGlu;

/// `e^x` for the fused ops: [`crate::model::kernels::exp_f32`] in f32 (vectorizable, no libm
/// call), the exact `exp` in f64 (which the gradient tests run in).
pub(crate) trait FastExp: Float {
    fn fast_exp(self) -> Self;
}

impl FastExp for f32 {
    #[inline(always)]
    fn fast_exp(self) -> f32 {
        crate::model::kernels::exp_f32(self)
    }
}

impl FastExp for f64 {
    #[inline(always)]
    fn fast_exp(self) -> f64 {
        self.exp()
    }
}

#[inline(always)]
fn sigmoid<T: FastExp>(v: T) -> T {
    T::one() / (T::one() + (-v).fast_exp())
}

/// `o = silu(g) * u` over a chunk.
#[inline(always)]
fn swiglu_chunk<T: Elem, const F: bool>(g: &[T], u: &[T], o: &mut [T]) {
    for ((o, &gv), &uv) in o.iter_mut().zip(g).zip(u) {
        *o = gv * sigmoid(gv) * uv;
    }
}

on_path!(swiglu_chunk_on, swiglu_chunk, (g: &[T], u: &[T], o: &mut [T]));

/// SwiGLU's gradients over a chunk.
#[inline(always)]
fn swiglu_bwd_chunk<T: Elem, const F: bool>(
    g: &[T],
    u: &[T],
    dy: &[T],
    dg: &mut [T],
    du: &mut [T],
) {
    let it = dg.iter_mut().zip(du.iter_mut());
    for (((dg, du), (&gv, &uv)), &d) in it.zip(g.iter().zip(u)).zip(dy) {
        let s = sigmoid(gv);
        *du = d * gv * s;
        *dg = d * uv * s * (T::one() + gv * (T::one() - s));
    }
}

on_path!(swiglu_bwd_chunk_on, swiglu_bwd_chunk, (g: &[T], u: &[T], dy: &[T], dg: &mut [T], du: &mut [T]));

fn swiglu_fwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let g = slice::<T>(s1, l1, "swiglu")?;
    let u = slice::<T>(s2, l2, "swiglu")?;
    if g.len() != u.len() {
        candle_core::bail!("swiglu: gate and up differ in size");
    }
    let path = cpu_path();
    let mut out = vec![T::zero(); g.len()];
    for_rows(&mut out, PAR_MIN_ELEMS, |c, o| {
        let a = c * PAR_MIN_ELEMS;
        swiglu_chunk_on(path, &g[a..a + o.len()], &u[a..a + o.len()], o)
    });
    Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s1, swiglu_fwd(s1, l1, s2, l2))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // One pass writes both gradients, stacked: (2, ...).
        let both = g.apply_op3_no_bwd(u, &grad, &SwiGluBwd)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// Gradients of SwiGLU: `(g, u, dy) -> stack(dg, du)`.
struct SwiGluBwd;

fn swiglu_bwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
) -> Result<(CpuStorage, Shape)> {
    let g = slice::<T>(s1, l1, "swiglu-bwd")?;
    let u = slice::<T>(s2, l2, "swiglu-bwd")?;
    let dy = slice::<T>(s3, l3, "swiglu-bwd")?;
    let n = g.len();
    if u.len() != n || dy.len() != n {
        candle_core::bail!("swiglu-bwd: shapes do not match");
    }
    let path = cpu_path();
    let mut out = vec![T::zero(); 2 * n];
    let (dg, du) = out.split_at_mut(n);
    dg.par_chunks_mut(PAR_MIN_ELEMS)
        .zip(du.par_chunks_mut(PAR_MIN_ELEMS))
        .enumerate()
        .for_each(|(c, (dg, du))| {
            let r = c * PAR_MIN_ELEMS..c * PAR_MIN_ELEMS + dg.len();
            swiglu_bwd_chunk_on(path, &g[r.clone()], &u[r.clone()], &dy[r], dg, du)
        });
    let mut dims = vec![2];
    dims.extend_from_slice(l1.shape().dims());
    Ok((T::to_cpu_storage_owned(out), Shape::from(dims)))
}

impl CustomOp3 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "fused-swiglu-bwd"
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
        dispatch!(self.name(), s1, swiglu_bwd(s1, l1, s2, l2, s3, l3))
    }
}

/// `silu(g) * u`, one op forward and one backward.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------------------------------------
// Causal softmax of attention scores

/// `softmax(x * scale + causal mask)` over the last dimension of `x` `(.., rows, total)`,
/// where row `r` (counted over all leading dimensions) is query position `offset + r % t` and
/// key `j` is masked when `j > offset + r % t`.
struct CausalSoftmax {
    scale: f64,
    t: usize,
    offset: usize,
}

/// One row of the causal softmax: `o[..keep] = softmax(x[..keep] * scale)` (the rest of `o`
/// stays as it is, zero).
#[inline(always)]
fn softmax_row<T: Elem, const F: bool>(x: &[T], keep: usize, scale: T, o: &mut [T]) {
    let (x, o) = (&x[..keep], &mut o[..keep]);
    let full = keep / P * P;
    let mut mx = [T::neg_infinity(); P];
    for c in x[..full].chunks_exact(P) {
        for i in 0..P {
            mx[i] = Float::max(mx[i], c[i] * scale);
        }
    }
    let m = x[full..].iter().fold(
        mx.into_iter().fold(T::neg_infinity(), Float::max),
        |a, &v| Float::max(a, v * scale),
    );
    let mut acc = [T::zero(); P];
    let neg = -m;
    for (oc, xc) in o[..full].chunks_exact_mut(P).zip(x[..full].chunks_exact(P)) {
        for i in 0..P {
            let e = madd::<T, F>(xc[i], scale, neg).fast_exp();
            oc[i] = e;
            acc[i] += e;
        }
    }
    let mut sum = sum_lanes(acc);
    for (o, &v) in o[full..].iter_mut().zip(&x[full..]) {
        let e = madd::<T, F>(v, scale, neg).fast_exp();
        *o = e;
        sum += e;
    }
    let inv = sum.recip();
    for o in o.iter_mut() {
        *o *= inv;
    }
}

on_path!(softmax_row_on, softmax_row, (x: &[T], keep: usize, scale: T, o: &mut [T]));

/// One row of the softmax backward: `o = scale * y * (dy - sum(dy * y))`.
#[inline(always)]
fn softmax_bwd_row<T: Elem, const F: bool>(y: &[T], dy: &[T], scale: T, o: &mut [T]) {
    let d = dot::<T, F>(y, dy);
    for ((o, &yv), &g) in o.iter_mut().zip(y).zip(dy) {
        *o = scale * yv * (g - d);
    }
}

on_path!(softmax_bwd_row_on, softmax_bwd_row, (y: &[T], dy: &[T], scale: T, o: &mut [T]));

fn softmax_fwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    op: &CausalSoftmax,
) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s1, l1, "causal-softmax")?;
    let n = last_dim(l1, "causal-softmax")?;
    let t = op.t.max(1);
    let scale = <T as WithDType>::from_f64(op.scale);
    let path = cpu_path();
    let mut out = vec![T::zero(); x.len()];
    for_rows(&mut out, n, |r, o| {
        let keep = (op.offset + r % t + 1).min(n);
        softmax_row_on(path, &x[r * n..(r + 1) * n], keep, scale, o)
    });
    Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s, softmax_fwd(s, l, self))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dx = y.apply_op2_no_bwd(&grad, &SoftmaxBwd { scale: self.scale })?;
        Ok(Some(dx))
    }
}

/// `(y, dy) -> dx = scale * y * (dy - sum(dy * y))` per row.
struct SoftmaxBwd {
    scale: f64,
}

fn softmax_bwd<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    scale: f64,
) -> Result<(CpuStorage, Shape)> {
    let y = slice::<T>(s1, l1, "softmax-bwd")?;
    let dy = slice::<T>(s2, l2, "softmax-bwd")?;
    let n = last_dim(l1, "softmax-bwd")?;
    if dy.len() != y.len() {
        candle_core::bail!("softmax-bwd: shapes do not match");
    }
    let scale = <T as WithDType>::from_f64(scale);
    let path = cpu_path();
    let mut out = vec![T::zero(); y.len()];
    for_rows(&mut out, n, |r, o| {
        let rows = r * n..(r + 1) * n;
        softmax_bwd_row_on(path, &y[rows.clone()], &dy[rows], scale, o)
    });
    Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "fused-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        dispatch!(self.name(), s1, softmax_bwd(s1, l1, s2, l2, self.scale))
    }
}

/// Attention probabilities from raw scores `(.., rows, total)`: scaled, causally masked for
/// `t` new positions starting at `offset` (row `r` is position `offset + r % t`), softmaxed.
/// With `track` false no backward is recorded.
pub fn causal_softmax(
    scores: &Tensor,
    scale: f64,
    t: usize,
    offset: usize,
    track: bool,
) -> Result<Tensor> {
    let op = CausalSoftmax { scale, t, offset };
    let s = scores.contiguous()?;
    if track {
        s.apply_op1(op)
    } else {
        s.apply_op1_no_bwd(&op)
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding with the head transpose

/// Rope on `x` `(b, t, h, d)` (as a projection's output is laid out) giving `(b, h, t, d)`
/// contiguous: the transpose, the copy and the rotation in one pass. `cos`/`sin` are `(t, d/2)`
/// for the positions of `x`. `interleaved`: pairs `(2i, 2i+1)` (GGUF Llama); otherwise
/// `(i, i + d/2)` (HF).
struct Rope {
    interleaved: bool,
    /// Backward direction: input `(b, h, t, d)`, output `(b, t, h, d)`, rotation inverted.
    inverse: bool,
}

/// One row of rope: `(a, b) -> (a c - b s, b c + a s)` for each pair, with `s` already signed
/// (negative for the backward's inverse rotation). `interleaved`: pairs `(2i, 2i+1)`;
/// otherwise `(i, i + d/2)`.
#[inline(always)]
fn rope_row<T: Elem, const F: bool>(
    x: &[T],
    c: &[T],
    s: &[T],
    neg: bool,
    interleaved: bool,
    o: &mut [T],
) {
    let half = c.len();
    let sign = if neg { -T::one() } else { T::one() };
    if interleaved {
        for (k, (&cv, &sv)) in c.iter().zip(s).enumerate() {
            let (a, b, sv) = (x[2 * k], x[2 * k + 1], sign * sv);
            o[2 * k] = a * cv - b * sv;
            o[2 * k + 1] = b * cv + a * sv;
        }
    } else {
        let (xa, xb) = x[..2 * half].split_at(half);
        let (oa, ob) = o[..2 * half].split_at_mut(half);
        for (((((oa, ob), &a), &b), &cv), &sv) in
            oa.iter_mut().zip(ob).zip(xa).zip(xb).zip(c).zip(s)
        {
            let sv = sign * sv;
            *oa = a * cv - b * sv;
            *ob = b * cv + a * sv;
        }
    }
}

on_path!(rope_row_on, rope_row, (x: &[T], c: &[T], s: &[T], neg: bool, interleaved: bool, o: &mut [T]));

fn rope_run<T: Elem>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    s3: &CpuStorage,
    l3: &Layout,
    op: &Rope,
) -> Result<(CpuStorage, Shape)> {
    let x = slice::<T>(s1, l1, "rope")?;
    let cos = slice::<T>(s2, l2, "rope")?;
    let sin = slice::<T>(s3, l3, "rope")?;
    let (b, d1, d2, d) = l1.shape().dims4()?;
    // Forward: x is (b, t, h, d); backward: (b, h, t, d).
    let (t, h) = if op.inverse { (d2, d1) } else { (d1, d2) };
    let half = d / 2;
    if d % 2 != 0 || cos.len() != t * half || sin.len() != t * half {
        candle_core::bail!("rope: cos/sin must be ({t}, {half}) for head size {d}");
    }
    let mut out = vec![T::zero(); x.len()];
    let path = cpu_path();
    let out_shape = if op.inverse {
        Shape::from((b, t, h, d))
    } else {
        Shape::from((b, h, t, d))
    };
    for_rows(&mut out, d, |r, o| {
        // Output row r and the input row it reads.
        let (pos, src) = if op.inverse {
            // out (b, t, h): r = (bb * t + i) * h + hh; input (b, h, t).
            let hh = r % h;
            let i = (r / h) % t;
            let bb = r / (h * t);
            (i, ((bb * h + hh) * t + i) * d)
        } else {
            // out (b, h, t): r = (bb * h + hh) * t + i; input (b, t, h).
            let i = r % t;
            let hh = (r / t) % h;
            let bb = r / (t * h);
            (i, ((bb * t + i) * h + hh) * d)
        };
        // Forward rotates (a, b) by +angle, backward by -angle.
        let angles = pos * half..(pos + 1) * half;
        let (c, s) = (&cos[angles.clone()], &sin[angles]);
        rope_row_on(path, &x[src..src + d], c, s, op.inverse, op.interleaved, o)
    });
    Ok((T::to_cpu_storage_owned(out), out_shape))
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
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
        dispatch!(self.name(), s1, rope_run(s1, l1, s2, l2, s3, l3, self))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let back = Rope {
            interleaved: self.interleaved,
            inverse: !self.inverse,
        };
        let dx = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &back)?;
        Ok((Some(dx), None, None))
    }
}

/// Rope for `x` `(b, t, h, d)` at the positions of `cos`/`sin` `(t, d/2)`, returned as
/// `(b, h, t, d)` contiguous. With `track` false no backward is recorded.
pub fn rope_bthd(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
    track: bool,
) -> Result<Tensor> {
    let op = Rope {
        interleaved,
        inverse: false,
    };
    let (x, cos, sin) = (x.contiguous()?, cos.contiguous()?, sin.contiguous()?);
    if track {
        x.apply_op3(&cos, &sin, op)
    } else {
        x.apply_op3_no_bwd(&cos, &sin, &op)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ops::{rms_norm_train, softmax_train};
    use candle_core::{Device, Module, Var};

    /// A deterministic f64 tensor with entries in `[-2, 2)` (shared with the attention tests).
    pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Largest absolute difference, in f64 whatever the tensors' dtype.
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Deterministic values in `[-2, 2)`.
    fn vals(n: usize, seed: u64) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0..2.0)).collect()
    }

    /// The row kernels of every op, on every path this CPU runs, against the formulas written
    /// plainly in f64: lengths below, at and past the 16 partial sums and not a multiple of
    /// them. f64 agrees to rounding; f32 to its precision.
    #[test]
    fn row_kernels_match_the_plain_formulas_on_every_path() {
        fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
            assert_eq!(got.len(), want.len(), "{what}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() <= tol * (1.0 + w.abs()),
                    "{what}[{i}]: {g} vs {w}"
                );
            }
        }
        /// Runs `f` in f64 and in f32 (inputs rounded, outputs widened) on `path`.
        fn both(
            ins: &[Vec<f64>],
            outs: usize,
            f64k: impl Fn(&[&[f64]], &mut [Vec<f64>]),
            f32k: impl Fn(&[&[f32]], &mut [Vec<f32>]),
        ) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
            let n = ins[0].len();
            let a: Vec<&[f64]> = ins.iter().map(|v| v.as_slice()).collect();
            let mut o64 = vec![vec![0.0; n]; outs];
            f64k(&a, &mut o64);
            let i32s: Vec<Vec<f32>> = ins
                .iter()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .collect();
            let b: Vec<&[f32]> = i32s.iter().map(|v| v.as_slice()).collect();
            let mut o32 = vec![vec![0.0f32; n]; outs];
            f32k(&b, &mut o32);
            let w = o32
                .iter()
                .map(|v| v.iter().map(|&x| x as f64).collect())
                .collect();
            (o64, w)
        }
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        for path in crate::model::kernels::CpuPath::all_available() {
            for (case, n) in [1usize, 7, 15, 16, 17, 40, 100].into_iter().enumerate() {
                let seed = 10 * case as u64;
                let (x, y, z) = (vals(n, seed), vals(n, seed + 1), vals(n, seed + 2));
                let at = |what: &str| format!("{} n={n} {what}", path.name());
                let eps = 1e-5;
                // RMSNorm and its input gradient.
                let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
                let want: Vec<f64> = x.iter().zip(&y).map(|(a, w)| a * inv * w).collect();
                let s: f64 = (0..n).map(|k| z[k] * y[k] * x[k]).sum();
                let want_dx: Vec<f64> = (0..n)
                    .map(|k| inv * z[k] * y[k] - x[k] * inv.powi(3) * s / n as f64)
                    .collect();
                let (g64, g32) = both(
                    &[x.clone(), y.clone(), z.clone()],
                    2,
                    |i, o| {
                        rms_row_on(path, i[0], i[1], eps, &mut o[0]);
                        rms_bwd_row_on(path, i[0], i[2], i[1], eps, &mut o[1]);
                    },
                    |i, o| {
                        rms_row_on(path, i[0], i[1], eps as f32, &mut o[0]);
                        rms_bwd_row_on(path, i[0], i[2], i[1], eps as f32, &mut o[1]);
                    },
                );
                for (o, tol, t) in [(&g64, 1e-12, "f64"), (&g32, 2e-5, "f32")] {
                    close(&o[0], &want, tol, &at(&format!("rms {t}")));
                    close(&o[1], &want_dx, tol * 10.0, &at(&format!("rms dx {t}")));
                }
                // SwiGLU and its gradients.
                let want: Vec<f64> = (0..n).map(|k| x[k] * sig(x[k]) * y[k]).collect();
                let want_du: Vec<f64> = (0..n).map(|k| z[k] * x[k] * sig(x[k])).collect();
                let want_dg: Vec<f64> = (0..n)
                    .map(|k| {
                        let s = sig(x[k]);
                        z[k] * y[k] * s * (1.0 + x[k] * (1.0 - s))
                    })
                    .collect();
                let (g64, g32) = both(
                    &[x.clone(), y.clone(), z.clone()],
                    3,
                    |i, o| {
                        swiglu_chunk_on(path, i[0], i[1], &mut o[0]);
                        let (a, b) = o[1..].split_at_mut(1);
                        swiglu_bwd_chunk_on(path, i[0], i[1], i[2], &mut a[0], &mut b[0]);
                    },
                    |i, o| {
                        swiglu_chunk_on(path, i[0], i[1], &mut o[0]);
                        let (a, b) = o[1..].split_at_mut(1);
                        swiglu_bwd_chunk_on(path, i[0], i[1], i[2], &mut a[0], &mut b[0]);
                    },
                );
                for (o, tol, t) in [(&g64, 1e-12, "f64"), (&g32, 2e-5, "f32")] {
                    close(&o[0], &want, tol, &at(&format!("swiglu {t}")));
                    close(&o[1], &want_dg, tol, &at(&format!("swiglu dg {t}")));
                    close(&o[2], &want_du, tol, &at(&format!("swiglu du {t}")));
                }
                // The causal softmax (the first `keep` entries) and its backward.
                // Rows cut short by the mask, whole, and ending on the partial sums' width.
                let mut keeps = vec![n - n / 3, n, 16.min(n)];
                keeps.dedup();
                for keep in keeps {
                    let scale = 0.7;
                    let m = x[..keep].iter().fold(f64::MIN, |a, &v| a.max(v * scale));
                    let e: Vec<f64> = x[..keep].iter().map(|v| (v * scale - m).exp()).collect();
                    let tot: f64 = e.iter().sum();
                    let mut want: Vec<f64> = e.iter().map(|v| v / tot).collect();
                    want.resize(n, 0.0);
                    let d: f64 = (0..n).map(|k| y[k].abs() * z[k]).sum();
                    let want_b: Vec<f64> =
                        (0..n).map(|k| scale * y[k].abs() * (z[k] - d)).collect();
                    let ya: Vec<f64> = y.iter().map(|v| v.abs()).collect();
                    let (g64, g32) = both(
                        &[x.clone(), ya, z.clone()],
                        2,
                        |i, o| {
                            softmax_row_on(path, i[0], keep, scale, &mut o[0]);
                            softmax_bwd_row_on(path, i[1], i[2], scale, &mut o[1]);
                        },
                        |i, o| {
                            softmax_row_on(path, i[0], keep, scale as f32, &mut o[0]);
                            softmax_bwd_row_on(path, i[1], i[2], scale as f32, &mut o[1]);
                        },
                    );
                    for (o, tol, t) in [(&g64, 1e-12, "f64"), (&g32, 2e-5, "f32")] {
                        close(&o[0], &want, tol, &at(&format!("softmax keep={keep} {t}")));
                        close(&o[1], &want_b, tol * 10.0, &at(&format!("softmax bwd {t}")));
                    }
                }
                // Rope on a row of 2n (both pair layouts, both directions).
                let row: Vec<f64> = x.iter().chain(&y).copied().collect();
                for (interleaved, neg) in
                    [(false, false), (false, true), (true, false), (true, true)]
                {
                    let sign = if neg { -1.0 } else { 1.0 };
                    let mut want = vec![0.0; 2 * n];
                    for (k, angle) in z.iter().enumerate() {
                        let (ia, ib) = if interleaved {
                            (2 * k, 2 * k + 1)
                        } else {
                            (k, k + n)
                        };
                        let (c, s) = (angle.cos(), sign * angle.sin());
                        want[ia] = row[ia] * c - row[ib] * s;
                        want[ib] = row[ib] * c + row[ia] * s;
                    }
                    let cs: Vec<f64> = z.iter().map(|v| v.cos()).collect();
                    let sn: Vec<f64> = z.iter().map(|v| v.sin()).collect();
                    let mut o64 = vec![0.0; 2 * n];
                    rope_row_on(path, &row, &cs, &sn, neg, interleaved, &mut o64);
                    let r32: Vec<f32> = row.iter().map(|&v| v as f32).collect();
                    let c32: Vec<f32> = cs.iter().map(|&v| v as f32).collect();
                    let s32: Vec<f32> = sn.iter().map(|&v| v as f32).collect();
                    let mut o32 = vec![0.0f32; 2 * n];
                    rope_row_on(path, &r32, &c32, &s32, neg, interleaved, &mut o32);
                    let o32: Vec<f64> = o32.iter().map(|&v| v as f64).collect();
                    let what = format!("rope interleaved={interleaved} inverse={neg}");
                    close(&o64, &want, 1e-12, &at(&what));
                    close(&o32, &want, 2e-5, &at(&what));
                }
            }
        }
    }

    /// Value and gradients (w.r.t. the listed inputs) of `sum(f(inputs) * probe)`.
    fn value_and_grads(
        inputs: &[Tensor],
        probe: &Tensor,
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        let loss = (&y * probe).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = ts.iter().map(|t| grads.get(t).unwrap().clone()).collect();
        (y, g)
    }

    #[test]
    fn fused_rms_norm_matches_the_composition_in_value_and_gradients() {
        let x = rand(&[2, 3, 8], 1);
        let w = rand(&[8], 2);
        let probe = rand(&[2, 3, 8], 3);
        let (y1, g1) = value_and_grads(&[x.clone(), w.clone()], &probe, |t| {
            rms_norm(&t[0], &t[1], 1e-5)
        });
        let (y2, g2) = value_and_grads(&[x, w], &probe, |t| rms_norm_train(&t[0], &t[1], 1e-5));
        assert!(max_diff(&y1, &y2) < 1e-12);
        assert!(max_diff(&g1[0], &g2[0]) < 1e-10, "dx");
        assert!(max_diff(&g1[1], &g2[1]) < 1e-10, "dw");
    }

    #[test]
    fn fused_rms_norm_gives_no_gradient_to_a_frozen_weight() {
        let x = Var::from_tensor(&rand(&[4, 8], 1)).unwrap();
        let w = rand(&[8], 2);
        let y = rms_norm(x.as_tensor(), &w, 1e-6).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&w).is_none());
    }

    #[test]
    fn fused_swiglu_matches_the_composition_in_value_and_gradients() {
        let g = rand(&[3, 40_000], 4);
        let u = rand(&[3, 40_000], 5);
        let probe = rand(&[3, 40_000], 6);
        let (y1, g1) = value_and_grads(&[g.clone(), u.clone()], &probe, |t| swiglu(&t[0], &t[1]));
        let (y2, g2) = value_and_grads(&[g, u], &probe, |t| {
            candle_nn::Activation::Silu.forward(&t[0])? * &t[1]
        });
        assert!(max_diff(&y1, &y2) < 1e-12);
        assert!(max_diff(&g1[0], &g2[0]) < 1e-10, "dg");
        assert!(max_diff(&g1[1], &g2[1]) < 1e-10, "du");
    }

    #[test]
    fn fused_causal_softmax_matches_scale_mask_and_softmax() {
        // 2 KV heads x (rep 3 * t 4) rows, 6 keys: offset 2 (a cached prefix of 2).
        let (rep, t, offset) = (3usize, 4usize, 2usize);
        let total = offset + t;
        let x = rand(&[1, 2, rep * t, total], 7);
        let probe = rand(&[1, 2, rep * t, total], 8);
        let scale = 0.35;
        let (y1, g1) = value_and_grads(std::slice::from_ref(&x), &probe, |a| {
            causal_softmax(&a[0], scale, t, offset, true)
        });
        let (y2, g2) = value_and_grads(&[x], &probe, |a| {
            let mask: Vec<f64> = (0..rep * t)
                .flat_map(|row| {
                    (0..total).map(move |j| {
                        if j > offset + row % t {
                            f64::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (rep * t, total), &Device::Cpu)?;
            softmax_train(&(&a[0] * scale)?.broadcast_add(&mask)?)
        });
        assert!(max_diff(&y1, &y2) < 1e-12);
        assert!(max_diff(&g1[0], &g2[0]) < 1e-12);
        // Masked positions are exactly zero.
        let v: Vec<f64> = y1.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[total - 1], 0.0);
    }

    #[test]
    fn fused_rope_matches_candles_rope_with_the_transpose() {
        for interleaved in [false, true] {
            let (b, t, h, d) = (2, 5, 3, 8);
            let x = rand(&[b, t, h, d], 9);
            let cos = rand(&[t, d / 2], 10);
            let sin = rand(&[t, d / 2], 11);
            let probe = rand(&[b, h, t, d], 12);
            let (y1, g1) = value_and_grads(std::slice::from_ref(&x), &probe, |a| {
                rope_bthd(&a[0], &cos, &sin, interleaved, true)
            });
            let (y2, g2) = value_and_grads(&[x], &probe, |a| {
                let xt = a[0].transpose(1, 2)?;
                if interleaved {
                    candle_nn::rotary_emb::rope_i_slow(&xt, &cos, &sin)
                } else {
                    candle_nn::rotary_emb::rope_slow(&xt, &cos, &sin)
                }
            });
            assert_eq!(y1.dims(), &[b, h, t, d]);
            assert!(max_diff(&y1, &y2) < 1e-12, "interleaved {interleaved}");
            assert!(
                max_diff(&g1[0], &g2[0]) < 1e-12,
                "interleaved {interleaved}"
            );
        }
    }

    #[test]
    fn fused_ops_compute_in_f32_too() {
        let x = rand(&[4, 16], 13).to_dtype(DType::F32).unwrap();
        let w = rand(&[16], 14).to_dtype(DType::F32).unwrap();
        let a = rms_norm(&x, &w, 1e-6).unwrap();
        let b = rms_norm_train(&x, &w, 1e-6).unwrap();
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(!fused_ok(&x.to_dtype(DType::F16).unwrap()));
        assert!(fused_ok(&x));
    }
}

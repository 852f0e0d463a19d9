//! Row-blocked causal attention: `softmax(scale * q k^T + causal mask) v` without the score
//! matrix.
//!
//! The matrix path (`q.matmul(k^T)`, [`super::fused::causal_softmax`], `matmul(v)`) keeps two
//! `(heads, t, t)` tensors per layer alive for the backward pass (the scores, input of the
//! softmax, and the probabilities), so training memory grows with the square of the sequence:
//! 75 MB per layer of SmolLM2-135M at 1,024 tokens. Here one op computes the output a block of
//! [`QB`] query rows at a time, with that block's scores in a scratch strip (`QB x keys`), and
//! keeps nothing but its inputs and output. Its backward recomputes the scores in two passes
//! that each write disjoint outputs (so results do not depend on the thread schedule):
//!
//! - pass A, over query-row blocks: probabilities, `dP = dO v^T`, `dS = P (dP - rowsum(dO O))`,
//!   `dq = scale dS k`; it also keeps each row's log-sum-exp and `rowsum(dO O)` (two numbers per
//!   row);
//! - pass B, over blocks of [`L`] keys: the probabilities and `dS` of every query row that sees
//!   those keys, from the saved row statistics, then `dv = P^T dO` and `dk = scale dS^T q`.
//!
//! Layout is the decoder's grouped-query fold: `q` is `(b, kv_heads, rep * t, d)` where row `r`
//! of a head group is the new position `offset + r % t`; `k`, `v` are `(b, kv_heads, total, d)`
//! and row `r` sees keys `0..=offset + r % t`. The kernels are written once, generic over the
//! element type, and compiled three times (AVX-512, AVX2 + FMA, portable) with the path chosen
//! at run time ([`crate::model::kernels::cpu_path`]); lanes run over keys for the score strips
//! (from a transposed copy of `k` and `v`) and over the head dimension for the weighted sums,
//! so no inner loop needs a horizontal sum.
use super::fused::{dot, madd, on_path, slice, Elem};
use super::kernels::{cpu_path, CpuPath};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use num_traits::Float;
use rayon::prelude::*;

/// The op's name, also in its errors.
const NAME: &str = "blocked-causal-attention";

/// Query rows per block.
const QB: usize = 4;
/// Lanes of the accumulators (one AVX-512 register of f32).
const L: usize = 16;

/// Sequences at least this long (keys, cached prefix included) go through the blocked path by
/// default; shorter ones keep the matrix path. On SmolLM2-135M (session 15, PERFORMANCE.md) the
/// blocked LoRA step was 7–12% slower at 128 and 256 tokens and 13–21% faster at 512 and
/// 1,024, with less memory at every length; prefill was level at 128–256 and faster beyond.
pub const DEFAULT_MIN_KEYS: usize = 384;

/// The model's default length for the blocked path: [`DEFAULT_MIN_KEYS`], or what
/// `CAHL_ATTENTION` says for benchmarks (`blocked`: every sequence of two or more new tokens;
/// `matrix`: none; `auto`: the default). Read once; `Model::set_blocked_attention_min_keys`
/// overrides it per model.
pub fn default_min_keys() -> usize {
    static ENV: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| match std::env::var("CAHL_ATTENTION").as_deref() {
        Ok("blocked") => 0,
        Ok("matrix") => usize::MAX,
        Err(_) | Ok("") | Ok("auto") => DEFAULT_MIN_KEYS,
        Ok(v) => {
            tracing::warn!("CAHL_ATTENTION={v:?} is not blocked, matrix or auto: using auto");
            DEFAULT_MIN_KEYS
        }
    })
}

/// Whether a sequence of `total` keys with `t` new positions uses the blocked path, given the
/// model's setting (`min_keys`; `usize::MAX` turns it off, 0 forces it).
pub fn use_blocked(t: usize, total: usize, min_keys: usize) -> bool {
    t >= 2 && total >= min_keys
}

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// The shape of one call.
#[derive(Clone, Copy, Debug)]
struct Geo {
    /// Head groups (`b * kv_heads`).
    groups: usize,
    /// Query rows per group (`rep * t`).
    rows: usize,
    /// New positions per sequence.
    t: usize,
    /// Position of the first new token.
    offset: usize,
    /// Keys per group.
    total: usize,
    /// Width of the transposed keys: `total` rounded up to [`L`] (zero padded).
    w: usize,
    /// Head size.
    d: usize,
}

impl Geo {
    fn new(q: &[usize], k: &[usize], v: &[usize], t: usize, offset: usize) -> Result<Geo> {
        let (b, h, rows, d) = match *q {
            [b, h, r, d] => (b, h, r, d),
            _ => candle_core::bail!("blocked attention: q must be (b, kv_heads, rep * t, d)"),
        };
        let total = match *k {
            [kb, kh, n, kd] if kb == b && kh == h && kd == d => n,
            _ => candle_core::bail!("blocked attention: k {k:?} does not match q {q:?}"),
        };
        if k != v {
            candle_core::bail!("blocked attention: v {v:?} does not match k {k:?}");
        }
        if t == 0 || rows == 0 || rows % t != 0 || offset + t > total || d == 0 {
            candle_core::bail!(
                "blocked attention: {rows} query rows, {t} new positions at offset {offset}, \
                 {total} keys, head size {d} do not fit"
            );
        }
        Ok(Geo {
            groups: b * h,
            rows,
            t,
            offset,
            total,
            w: round_up(total, L),
            d,
        })
    }

    /// Keys that query row `r` sees.
    #[inline(always)]
    fn keep(&self, r: usize) -> usize {
        (self.offset + r % self.t + 1).min(self.total)
    }

    /// The (up to [`QB`]) rows of the block starting at `r0` of `n` rows, the last repeated to
    /// fill the block, and the keys each sees.
    #[inline(always)]
    fn block(&self, r0: usize, n: usize) -> ([usize; QB], [usize; QB]) {
        let rows: [usize; QB] = std::array::from_fn(|i| r0 + i.min(n - 1));
        (rows, rows.map(|r| self.keep(r)))
    }

    /// The keys a block's strip covers (the most any of its rows sees) and the strip's row
    /// width (that rounded up to [`L`]).
    #[inline(always)]
    fn strip_width(keeps: &[usize; QB]) -> (usize, usize) {
        let kmax = keeps.iter().copied().max().unwrap_or(0);
        (kmax, round_up(kmax, L))
    }
}

/// `v` as `len` zeros, reusing its allocation.
#[inline(always)]
fn zeroed<T: Elem>(v: &mut Vec<T>, len: usize) {
    v.clear();
    v.resize(len, T::zero());
}

/// `(total, d)` rows of every group to `(d, w)`, zero padded: lanes then run over keys.
fn transpose<T: Elem>(x: &[T], g: &Geo) -> Vec<T> {
    let (d, w, total) = (g.d, g.w, g.total);
    let mut out = vec![T::zero(); g.groups * d * w];
    out.par_chunks_mut(d * w).enumerate().for_each(|(gi, o)| {
        let x = &x[gi * total * d..(gi + 1) * total * d];
        for (j, row) in x.chunks_exact(d).enumerate() {
            for (c, &val) in row.iter().enumerate() {
                o[c * w + j] = val;
            }
        }
    });
    out
}

/// `strip[i][j] = a_{rows[i]} . b_j` for keys `j < wk` (a multiple of [`L`]), with `bt` the
/// transposed `(d, w)` keys (or values).
#[inline(always)]
fn strip_dots<T: Elem, const F: bool>(
    a: &[T],
    rows: &[usize; QB],
    bt: &[T],
    g: &Geo,
    wk: usize,
    strip: &mut [T],
) {
    let (d, w) = (g.d, g.w);
    let ar: [&[T]; QB] = rows.map(|r| &a[r * d..(r + 1) * d]);
    for jb in (0..wk).step_by(L) {
        let mut acc = [[T::zero(); L]; QB];
        for c in 0..d {
            let bv = &bt[c * w + jb..c * w + jb + L];
            for i in 0..QB {
                let x = ar[i][c];
                for l in 0..L {
                    acc[i][l] = madd::<T, F>(x, bv[l], acc[i][l]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            strip[i * wk + jb..i * wk + jb + L].copy_from_slice(acc);
        }
    }
}

/// `out[i] = sum_j p[i][j] b_j` over keys `j < kmax` for the first `n` rows, with `b` row-major
/// `(total, d)`: lanes run over the head dimension.
#[inline(always)]
fn weighted_rows<T: Elem, const F: bool>(
    p: &[T],
    wk: usize,
    kmax: usize,
    b: &[T],
    d: usize,
    out: &mut [T],
    n: usize,
) {
    let mut c = 0;
    while c + L <= d {
        let mut acc = [[T::zero(); L]; QB];
        for j in 0..kmax {
            let bv = &b[j * d + c..j * d + c + L];
            for i in 0..QB {
                let x = p[i * wk + j];
                for l in 0..L {
                    acc[i][l] = madd::<T, F>(x, bv[l], acc[i][l]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(n) {
            out[i * d + c..i * d + c + L].copy_from_slice(acc);
        }
        c += L;
    }
    for c in c..d {
        for i in 0..n {
            let mut s = T::zero();
            for j in 0..kmax {
                s = madd::<T, F>(p[i * wk + j], b[j * d + c], s);
            }
            out[i * d + c] = s;
        }
    }
}

/// Scaled, softmaxed row in place (`keep` keys; the rest set to 0); returns its log-sum-exp
/// (of the scaled scores).
#[inline(always)]
fn softmax_row<T: Elem>(row: &mut [T], keep: usize, scale: T) -> T {
    let mut m = T::neg_infinity();
    for x in &mut row[..keep] {
        *x *= scale;
        m = Float::max(m, *x);
    }
    let mut sum = T::zero();
    for x in &mut row[..keep] {
        *x = (*x - m).fast_exp();
        sum += *x;
    }
    let inv = sum.recip();
    for x in &mut row[..keep] {
        *x *= inv;
    }
    for x in &mut row[keep..] {
        *x = T::zero();
    }
    m + sum.ln()
}

/// Inputs of one group, shared by the block kernels.
struct Group<'a, T> {
    q: &'a [T],
    /// Row-major `(total, d)`.
    k: &'a [T],
    v: &'a [T],
    /// Transposed `(d, w)`.
    kt: &'a [T],
    vt: &'a [T],
}

/// Output rows `r0..r0 + n` (`out` is `n x d`).
#[inline(always)]
fn fwd_block<T: Elem, const F: bool>(
    g: &Geo,
    scale: T,
    x: &Group<'_, T>,
    r0: usize,
    out: &mut [T],
    strip: &mut Vec<T>,
) {
    let n = out.len() / g.d;
    let (rows, keeps) = g.block(r0, n);
    let (kmax, wk) = Geo::strip_width(&keeps);
    zeroed(strip, QB * wk);
    strip_dots::<T, F>(x.q, &rows, x.kt, g, wk, strip);
    for (i, &keep) in keeps.iter().enumerate() {
        softmax_row(&mut strip[i * wk..(i + 1) * wk], keep, scale);
    }
    weighted_rows::<T, F>(strip, wk, kmax, x.v, g.d, out, n);
}

/// Backward pass A for rows `r0..r0 + n`: `dq` rows (`n x d`) and each row's statistics
/// (`[lse, rowsum(dO O)]`, `n x 2`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dq_block<T: Elem, const F: bool>(
    g: &Geo,
    scale: T,
    x: &Group<'_, T>,
    o: &[T],
    dout: &[T],
    r0: usize,
    dq: &mut [T],
    stats: &mut [T],
    strips: &mut (Vec<T>, Vec<T>),
) {
    let d = g.d;
    let n = dq.len() / d;
    let (rows, keeps) = g.block(r0, n);
    let (kmax, wk) = Geo::strip_width(&keeps);
    let (p, ds) = strips;
    zeroed(p, QB * wk);
    zeroed(ds, QB * wk);
    strip_dots::<T, F>(x.q, &rows, x.kt, g, wk, p);
    strip_dots::<T, F>(dout, &rows, x.vt, g, wk, ds);
    for (i, (&r, &keep)) in rows.iter().zip(&keeps).enumerate() {
        let lse = softmax_row(&mut p[i * wk..(i + 1) * wk], keep, scale);
        let dd = dot::<T, F>(&o[r * d..(r + 1) * d], &dout[r * d..(r + 1) * d]);
        for (dsv, &pv) in ds[i * wk..(i + 1) * wk]
            .iter_mut()
            .zip(&p[i * wk..(i + 1) * wk])
        {
            *dsv = pv * (*dsv - dd) * scale;
        }
        if i < n {
            stats[2 * i] = lse;
            stats[2 * i + 1] = dd;
        }
    }
    weighted_rows::<T, F>(ds, wk, kmax, x.k, d, dq, n);
}

/// Backward pass B for keys `j0..j0 + jn` (`jn <= L`): their `dk` and `dv` rows (`jn x d`),
/// from every query row that sees them. `acc` is scratch of `2 * d * L`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dkv_block<T: Elem, const F: bool>(
    g: &Geo,
    scale: T,
    x: &Group<'_, T>,
    dout: &[T],
    stats: &[T],
    j0: usize,
    dk: &mut [T],
    dv: &mut [T],
    acc: &mut Vec<T>,
) {
    let (d, w) = (g.d, g.w);
    let jn = dk.len() / d;
    zeroed(acc, 2 * d * L);
    let (dkt, dvt) = acc.split_at_mut(d * L);
    // Query rows see key j0 from the new position j0 - offset on, in each of the rep segments.
    let first = j0.saturating_sub(g.offset);
    for seg in 0..g.rows / g.t {
        let mut r0 = seg * g.t + first;
        let end = (seg + 1) * g.t;
        while r0 < end {
            let n = QB.min(end - r0);
            let (rows, keeps) = g.block(r0, n);
            let mut s = [[T::zero(); L]; QB];
            let mut dp = [[T::zero(); L]; QB];
            for c in 0..d {
                let kv = &x.kt[c * w + j0..c * w + j0 + L];
                let vv = &x.vt[c * w + j0..c * w + j0 + L];
                for i in 0..QB {
                    let qx = x.q[rows[i] * d + c];
                    let gx = dout[rows[i] * d + c];
                    for l in 0..L {
                        s[i][l] = madd::<T, F>(qx, kv[l], s[i][l]);
                        dp[i][l] = madd::<T, F>(gx, vv[l], dp[i][l]);
                    }
                }
            }
            // s becomes P, dp becomes dS (scaled); padding rows and unseen keys give 0.
            for i in 0..QB {
                let (lse, dd) = if i < n {
                    (stats[2 * rows[i]], stats[2 * rows[i] + 1])
                } else {
                    (T::zero(), T::zero())
                };
                for l in 0..L {
                    let p = if i < n && j0 + l < keeps[i] {
                        (s[i][l] * scale - lse).fast_exp()
                    } else {
                        T::zero()
                    };
                    s[i][l] = p;
                    dp[i][l] = p * (dp[i][l] - dd) * scale;
                }
            }
            for c in 0..d {
                let mut ak = [T::zero(); L];
                let mut av = [T::zero(); L];
                ak.copy_from_slice(&dkt[c * L..(c + 1) * L]);
                av.copy_from_slice(&dvt[c * L..(c + 1) * L]);
                for i in 0..QB {
                    let qx = x.q[rows[i] * d + c];
                    let gx = dout[rows[i] * d + c];
                    for l in 0..L {
                        ak[l] = madd::<T, F>(qx, dp[i][l], ak[l]);
                        av[l] = madd::<T, F>(gx, s[i][l], av[l]);
                    }
                }
                dkt[c * L..(c + 1) * L].copy_from_slice(&ak);
                dvt[c * L..(c + 1) * L].copy_from_slice(&av);
            }
            r0 += n;
        }
    }
    for l in 0..jn {
        for c in 0..d {
            dk[l * d + c] = dkt[c * L + l];
            dv[l * d + c] = dvt[c * L + l];
        }
    }
}

on_path!(fwd_on, fwd_block, (g: &Geo, scale: T, x: &Group<'_, T>, r0: usize, out: &mut [T], strip: &mut Vec<T>));
on_path!(dq_on, dq_block, (g: &Geo, scale: T, x: &Group<'_, T>, o: &[T], dout: &[T], r0: usize, dq: &mut [T], stats: &mut [T], strips: &mut (Vec<T>, Vec<T>)));
on_path!(dkv_on, dkv_block, (g: &Geo, scale: T, x: &Group<'_, T>, dout: &[T], stats: &[T], j0: usize, dk: &mut [T], dv: &mut [T], acc: &mut Vec<T>));

fn group<'a, T>(
    g: &Geo,
    gi: usize,
    q: &'a [T],
    k: &'a [T],
    v: &'a [T],
    kt: &'a [T],
    vt: &'a [T],
) -> Group<'a, T> {
    let (qn, kn, tn) = (g.rows * g.d, g.total * g.d, g.d * g.w);
    Group {
        q: &q[gi * qn..(gi + 1) * qn],
        k: &k[gi * kn..(gi + 1) * kn],
        v: &v[gi * kn..(gi + 1) * kn],
        kt: &kt[gi * tn..(gi + 1) * tn],
        // The forward pass has no transposed values.
        vt: if vt.is_empty() {
            vt
        } else {
            &vt[gi * tn..(gi + 1) * tn]
        },
    }
}

fn forward<T: Elem>(path: CpuPath, g: &Geo, scale: f64, q: &[T], k: &[T], v: &[T]) -> Vec<T> {
    let scale = T::from_f64(scale);
    let kt = transpose(k, g);
    let d = g.d;
    let mut out = vec![T::zero(); g.groups * g.rows * d];
    out.par_chunks_mut(g.rows * d)
        .enumerate()
        .for_each(|(gi, og)| {
            let x = group(g, gi, q, k, v, &kt, &[]);
            og.par_chunks_mut(QB * d)
                .enumerate()
                .for_each_init(Vec::new, |strip, (bi, ob)| {
                    fwd_on(path, g, scale, &x, bi * QB, ob, strip)
                });
        });
    out
}

/// `(dq, dk, dv)` of the blocked attention with output `o` and its gradient `dout`.
#[allow(clippy::too_many_arguments)]
fn backward<T: Elem>(
    path: CpuPath,
    g: &Geo,
    scale: f64,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    dout: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let scale = T::from_f64(scale);
    let kt = transpose(k, g);
    let vt = transpose(v, g);
    let d = g.d;
    let (qn, kn) = (g.rows * d, g.total * d);
    let mut dq = vec![T::zero(); g.groups * qn];
    let mut stats = vec![T::zero(); g.groups * g.rows * 2];
    dq.par_chunks_mut(qn)
        .zip(stats.par_chunks_mut(g.rows * 2))
        .enumerate()
        .for_each(|(gi, (dqg, sg))| {
            let x = group(g, gi, q, k, v, &kt, &vt);
            let (og, gg) = (&o[gi * qn..(gi + 1) * qn], &dout[gi * qn..(gi + 1) * qn]);
            dqg.par_chunks_mut(QB * d)
                .zip(sg.par_chunks_mut(QB * 2))
                .enumerate()
                .for_each_init(
                    || (Vec::new(), Vec::new()),
                    |strips, (bi, (dqb, sb))| {
                        dq_on(path, g, scale, &x, og, gg, bi * QB, dqb, sb, strips)
                    },
                );
        });
    let mut dk = vec![T::zero(); g.groups * kn];
    let mut dv = vec![T::zero(); g.groups * kn];
    dk.par_chunks_mut(kn)
        .zip(dv.par_chunks_mut(kn))
        .enumerate()
        .for_each(|(gi, (dkg, dvg))| {
            let x = group(g, gi, q, k, v, &kt, &vt);
            let gg = &dout[gi * qn..(gi + 1) * qn];
            let sg = &stats[gi * g.rows * 2..(gi + 1) * g.rows * 2];
            dkg.par_chunks_mut(L * d)
                .zip(dvg.par_chunks_mut(L * d))
                .enumerate()
                .for_each_init(Vec::new, |acc, (bi, (dkb, dvb))| {
                    dkv_on(path, g, scale, &x, gg, sg, bi * L, dkb, dvb, acc)
                });
        });
    (dq, dk, dv)
}

struct Blocked {
    scale: f64,
    t: usize,
    offset: usize,
    path: CpuPath,
}

fn fwd_typed<T: Elem>(
    op: &Blocked,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let g = Geo::new(l1.dims(), l2.dims(), l3.dims(), op.t, op.offset)?;
    let out = forward(
        op.path,
        &g,
        op.scale,
        slice::<T>(s1, l1, NAME)?,
        slice::<T>(s2, l2, NAME)?,
        slice::<T>(s3, l3, NAME)?,
    );
    Ok((T::to_cpu_storage_owned(out), l1.shape().clone()))
}

fn bwd_typed<T: Elem>(
    op: &Blocked,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    dout: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let g = Geo::new(q.dims(), k.dims(), v.dims(), op.t, op.offset)?;
    let flat = |x: &Tensor| -> Result<Vec<T>> { x.flatten_all()?.to_vec1::<T>() };
    let (dq, dk, dv) = backward(
        op.path,
        &g,
        op.scale,
        &flat(q)?,
        &flat(k)?,
        &flat(v)?,
        &flat(o)?,
        &flat(dout)?,
    );
    let dev = q.device();
    Ok((
        Some(Tensor::from_vec(dq, q.shape(), dev)?),
        Some(Tensor::from_vec(dk, k.shape(), dev)?),
        Some(Tensor::from_vec(dv, v.shape(), dev)?),
    ))
}

impl CustomOp3 for Blocked {
    fn name(&self) -> &'static str {
        NAME
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
        let a = ((s1, l1), (s2, l2), (s3, l3));
        match s1.dtype() {
            DType::F32 => fwd_typed::<f32>(self, a.0, a.1, a.2),
            DType::F64 => fwd_typed::<f64>(self, a.0, a.1, a.2),
            other => candle_core::bail!("blocked attention: unsupported dtype {other:?}"),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        o: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match q.dtype() {
            DType::F32 => bwd_typed::<f32>(self, q, k, v, o, dout),
            DType::F64 => bwd_typed::<f64>(self, q, k, v, o, dout),
            other => candle_core::bail!("blocked attention: unsupported dtype {other:?}"),
        }
    }
}

/// Causal attention output `(b, kv_heads, rep * t, d)` for `q` in the decoder's grouped-query
/// fold and `k`, `v` `(b, kv_heads, total, d)`, CPU f32/f64 (see the module docs). With `track`
/// the backward pass is recorded (inputs are made contiguous first).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    t: usize,
    offset: usize,
    track: bool,
) -> Result<Tensor> {
    causal_attention_on(cpu_path(), q, k, v, scale, t, offset, track)
}

/// [`causal_attention`] on a given kernel path (tests run every path the CPU has).
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_on(
    path: CpuPath,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    t: usize,
    offset: usize,
    track: bool,
) -> Result<Tensor> {
    if !path.available() {
        candle_core::bail!(
            "blocked attention: this CPU does not run the {} path",
            path.name()
        );
    }
    let op = Blocked {
        scale,
        t,
        offset,
        path,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    if track {
        q.apply_op3(&k, &v, op)
    } else {
        q.apply_op3_no_bwd(&k, &v, &op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fused::causal_softmax;
    use crate::model::fused::tests::{max_diff, rand};
    use candle_core::Var;

    /// Output and `(dq, dk, dv)` of `sum(attention(q, k, v) * probe)`.
    fn run(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        probe: &Tensor,
        f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = [q, k, v]
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let y = f(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        )
        .unwrap();
        let grads = (&y * probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g = vars
            .iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().clone())
            .collect();
        (y, g)
    }

    /// The decoder's matrix path: scores, the fused causal softmax, the weighted sum.
    fn matrix(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        t: usize,
        offset: usize,
    ) -> Result<Tensor> {
        let s = q.matmul(&k.t()?)?;
        causal_softmax(&s, scale, t, offset, true)?.matmul(v)
    }

    /// Values and gradients equal the matrix path's, in f64, on every kernel path this CPU
    /// runs, for shapes that cut through the blocks: rows not a multiple of the 4-row block,
    /// keys not a multiple of the 16 lanes, a head size with a 16-lane tail, a cached prefix,
    /// several groups and sequences.
    #[test]
    fn blocked_attention_equals_the_matrix_path_in_value_and_gradients() {
        // (b, kv heads, rep, t, offset, d)
        let shapes = [
            (1, 1, 1, 1, 0, 4),
            (2, 2, 3, 5, 2, 20),
            (1, 3, 2, 37, 0, 16),
            (1, 1, 1, 18, 15, 33),
            (2, 1, 4, 9, 0, 8),
        ];
        for (si, &(b, h, rep, t, offset, d)) in shapes.iter().enumerate() {
            let total = offset + t;
            let seed = 10 * si as u64;
            let q = rand(&[b, h, rep * t, d], seed);
            let k = rand(&[b, h, total, d], seed + 1);
            let v = rand(&[b, h, total, d], seed + 2);
            let probe = rand(&[b, h, rep * t, d], seed + 3);
            let scale = 1.0 / (d as f64).sqrt();
            let (y0, g0) = run(&q, &k, &v, &probe, |q, k, v| {
                matrix(q, k, v, scale, t, offset)
            });
            for path in CpuPath::all_available() {
                let (y1, g1) = run(&q, &k, &v, &probe, |q, k, v| {
                    causal_attention_on(path, q, k, v, scale, t, offset, true)
                });
                let what = format!("shape {si} on {}", path.name());
                assert!(max_diff(&y0, &y1) < 1e-12, "output, {what}");
                for (name, a, b) in [
                    ("dq", &g0[0], &g1[0]),
                    ("dk", &g0[1], &g1[1]),
                    ("dv", &g0[2], &g1[2]),
                ] {
                    assert!(max_diff(a, b) < 1e-11, "{name}, {what}: {}", max_diff(a, b));
                }
                // Without tracking: the same output.
                let y2 = causal_attention_on(path, &q, &k, &v, scale, t, offset, false).unwrap();
                assert!(max_diff(&y0, &y2) < 1e-12, "untracked, {what}");
            }
        }
    }

    #[test]
    fn blocked_attention_in_f32_is_close_to_f64() {
        let (b, h, rep, t, d) = (1, 2, 3, 70, 64);
        let q = rand(&[b, h, rep * t, d], 1);
        let k = rand(&[b, h, t, d], 2);
        let v = rand(&[b, h, t, d], 3);
        let y64 = causal_attention(&q, &k, &v, 0.125, t, 0, false).unwrap();
        let f = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
        let y32 = causal_attention(&f(&q), &f(&k), &f(&v), 0.125, t, 0, false).unwrap();
        assert!(max_diff(&y64.to_dtype(DType::F32).unwrap(), &y32) < 1e-4);
    }

    #[test]
    fn blocked_attention_refuses_shapes_that_do_not_fit() {
        let q = rand(&[1, 1, 6, 4], 1);
        let k = rand(&[1, 1, 3, 4], 2);
        // 6 rows of t = 4 do not fold; 4 new positions do not fit 3 keys.
        assert!(causal_attention(&q, &k, &k, 0.5, 4, 0, false).is_err());
        // No query rows.
        let q0 = rand(&[1, 1, 0, 4], 4);
        assert!(causal_attention(&q0, &k, &k, 0.5, 3, 0, false).is_err());
        let k5 = rand(&[1, 1, 3, 5], 3);
        assert!(causal_attention(&q, &k5, &k5, 0.5, 3, 0, false).is_err());
        assert!(
            causal_attention(&q.to_dtype(DType::F16).unwrap(), &k, &k, 0.5, 3, 0, false).is_err()
        );
    }

    #[test]
    fn the_blocked_path_is_for_long_sequences_of_more_than_one_new_token() {
        assert!(!use_blocked(1, 10_000, 0));
        assert!(use_blocked(2, 2, 0));
        assert!(use_blocked(400, 400, DEFAULT_MIN_KEYS));
        assert!(!use_blocked(100, 100, DEFAULT_MIN_KEYS));
        assert!(!use_blocked(300, 300, usize::MAX));
        if std::env::var("CAHL_ATTENTION").is_err() {
            assert_eq!(default_min_keys(), DEFAULT_MIN_KEYS);
        }
    }

    /// The f32 backward (fast exp, P rebuilt from the saved log-sum-exp in pass B) stays close
    /// to the f64 one on the edge shapes.
    #[test]
    fn blocked_attention_gradients_in_f32_are_close_to_f64() {
        for (si, &(b, h, rep, t, offset, d)) in [
            (2, 2, 3, 5, 2, 20),
            (1, 3, 2, 37, 0, 16),
            (1, 1, 1, 18, 15, 33),
        ]
        .iter()
        .enumerate()
        {
            let total = offset + t;
            let seed = 100 + 10 * si as u64;
            let q = rand(&[b, h, rep * t, d], seed);
            let k = rand(&[b, h, total, d], seed + 1);
            let v = rand(&[b, h, total, d], seed + 2);
            let probe = rand(&[b, h, rep * t, d], seed + 3);
            let scale = 1.0 / (d as f64).sqrt();
            let f32_ = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
            for path in CpuPath::all_available() {
                let att = |q: &Tensor, k: &Tensor, v: &Tensor| {
                    causal_attention_on(path, q, k, v, scale, t, offset, true)
                };
                let (y64, g64) = run(&q, &k, &v, &probe, att);
                let (y32, g32) = run(&f32_(&q), &f32_(&k), &f32_(&v), &f32_(&probe), att);
                let what = format!("shape {si} on {}", path.name());
                assert!(max_diff(&f32_(&y64), &y32) < 1e-4, "output, {what}");
                for (name, a, b) in [
                    ("dq", &g64[0], &g32[0]),
                    ("dk", &g64[1], &g32[1]),
                    ("dv", &g64[2], &g32[2]),
                ] {
                    let d = max_diff(&f32_(a), b);
                    assert!(d < 1e-3, "{name}, {what}: {d}");
                }
            }
        }
    }
}

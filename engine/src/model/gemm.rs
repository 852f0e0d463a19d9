//! A packed f32 GEMM for products with a frozen weight: `C (m, n) = A (m, k) @ B (k, n)` where
//! `A` is an activation (f32, row-major) and `B` is a stored weight read either as `w^T`
//! (`w (n, k)`, a linear layer's forward) or as `w` (`w (k, n)`, its input gradient), in f32
//! or f16.
//!
//! Why our own: a training step at a few hundred rows is GEMM-bound, and on this CPU the
//! `gemm` crate behind candle reached 80–110 GFLOP/s on the step's shapes where PyTorch's BLAS
//! reached 100–150 (`engine/examples/gemm_probe.rs`, docs/PERFORMANCE.md, session 8).
//!
//! The layout follows Goto/BLIS for `B`: each `KC x NR` block of the weight is packed
//! (transposed for `w^T`, widened for f16) into a small aligned buffer that stays in L1 while
//! every `MR`-row panel of `A` runs against it through an `MR x NR` register tile. `A` is not
//! packed: the tile broadcasts from its `MR` rows in place (packing it cost more than it saved
//! at these row counts). Each weight element is read from memory once per call. Tasks own
//! disjoint column ranges of `C`.
//!
//! Two register tiles, chosen at run time by [`crate::model::kernels::cpu_path`]: AVX2 + FMA
//! (6 x 16: two 8-lane vectors per row, 12 accumulators of 16 registers) and AVX-512
//! (12 x 32: two 16-lane vectors per row, 24 accumulators of 32 registers, each broadcast folded
//! into its FMA). The driver, the packing and the prefetching are shared; the driver takes the
//! tile as a function pointer (called once per tile, outside the `k` loop).
use rayon::prelude::*;

use crate::model::kernels::{cpu_path, CpuPath, WeightElem};

/// Rows of the AVX2 register tile.
pub const MR: usize = 6;
/// Columns of the AVX2 register tile (two 8-lane vectors).
pub const NR: usize = 16;
/// Rows of the AVX-512 register tile.
pub const MR512: usize = 12;
/// Columns of the AVX-512 register tile (two 16-lane vectors).
pub const NR512: usize = 32;
/// Length of a slice of `k` packed at a time.
const KC: usize = 256;
/// Most cache lines one tile prefetches for the next packed block.
const MAX_PF: usize = 512;

/// How the weight holds `B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `w (n, k)`: `B = w^T` (a linear layer's forward, `x @ w^T`).
    Transposed,
    /// `w (k, n)`: `B = w` (the input gradient of a linear layer, `g @ w`).
    Plain,
}

/// Whether the packed kernel runs here: the CPU has AVX2, FMA and F16C (AVX-512 is used when
/// present) and `CAHL_CPU_KERNELS` does not ask for the scalar path.
pub fn supported() -> bool {
    cpu_path() != CpuPath::Scalar
}

/// The register tile `gemm` uses on this CPU: AVX-512 or AVX2 (else the reference loop).
pub fn path() -> CpuPath {
    cpu_path()
}

/// Raw output pointer shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint column ranges of the output (see `run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `a (m, k) @ B` into a new vector, `B` from `w` as `layout` says. The vector is not
/// zero-filled first (every element is written by the kernel): a step's largest output, the
/// logits, would otherwise be cleared twice (by the OS and by a memset) before being written.
pub fn gemm_new<W: WeightElem>(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    layout: WeightLayout,
) -> Vec<f32> {
    if k == 0 || m == 0 || n == 0 || !supported() {
        let mut out = vec![0f32; m * n];
        gemm(a, m, k, w, n, layout, &mut out);
        return out;
    }
    check_lens(a, m, k, w, n);
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: `out` has room for `m * n` floats; `run` writes every one of them (each row
    // panel and column panel is a tile whose first slice of `k` stores, not adds) before
    // `set_len` exposes them, and reads none first.
    unsafe {
        run(cpu_path(), a, m, k, w, n, layout, OutPtr(out.as_mut_ptr()));
        out.set_len(m * n);
    }
    out
}

fn check_lens<W>(a: &[f32], m: usize, k: usize, w: &[W], n: usize) {
    assert_eq!(
        a.len(),
        m * k,
        "gemm: a has {} elements, not {m} x {k}",
        a.len()
    );
    assert_eq!(
        w.len(),
        k * n,
        "gemm: w has {} elements, not {k} x {n}",
        w.len()
    );
}

/// `out (m, n) = a (m, k) @ B`, `B` from `w` as `layout` says. `out` is overwritten.
///
/// Panics if the slice lengths do not match the dimensions (callers check shapes first).
pub fn gemm<W: WeightElem>(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    layout: WeightLayout,
    out: &mut [f32],
) {
    gemm_on(cpu_path(), a, m, k, w, n, layout, out)
}

/// [`gemm`] through the register tile of `path` (tests and benchmarks compare the paths); a
/// path this CPU lacks runs the reference loop.
#[allow(clippy::too_many_arguments)]
pub fn gemm_on<W: WeightElem>(
    path: CpuPath,
    a: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    layout: WeightLayout,
    out: &mut [f32],
) {
    check_lens(a, m, k, w, n);
    assert_eq!(
        out.len(),
        m * n,
        "gemm: out has {} elements, not {m} x {n}",
        out.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || path == CpuPath::Scalar || !path.available() {
        reference(a, m, k, w, n, layout, out);
        return;
    }
    // SAFETY: `out` holds `m * n` floats (checked above); the path is available.
    unsafe { run(path, a, m, k, w, n, layout, OutPtr(out.as_mut_ptr())) };
}

/// The parallel driver: tasks over disjoint column ranges.
///
/// # Safety
/// `path` is available and not scalar, `k > 0`, lengths checked, and `optr` points at
/// `m * n` writable floats.
#[allow(clippy::too_many_arguments)]
unsafe fn run<W: WeightElem>(
    path: CpuPath,
    a: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    layout: WeightLayout,
    optr: OutPtr,
) {
    let nr = if path == CpuPath::Avx512 { NR512 } else { NR };
    let panels = n.div_ceil(nr);
    // A few tasks per thread so a thread held up elsewhere does not hold the call, with the
    // panels spread evenly (sizes differ by one at most): a narrow output (SmolLM2's 192-wide
    // key/value projections are 6 panels of the AVX-512 tile) split into tasks of
    // `ceil(panels / tasks)` panels left one thread with twice the other's work.
    let tasks = (rayon::current_num_threads() * 4).clamp(1, panels);
    (0..tasks).into_par_iter().for_each(move |t| {
        let p0 = t * panels / tasks;
        let p1 = (t + 1) * panels / tasks;
        if p0 >= p1 {
            return;
        }
        // Moved in whole: a closure capturing only the field would hold a bare `*mut f32`,
        // which is not `Send`.
        let optr = optr;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked the path's instructions; this task writes only columns
        // `p0 * nr .. min(p1 * nr, n)` of `out`, which no other task touches; the slices'
        // lengths were checked above.
        unsafe {
            if path == CpuPath::Avx512 {
                avx::columns::<W, MR512, NR512>(
                    avx::AVX512_TILE,
                    avx::pack_avx512::<W, NR512>,
                    a,
                    m,
                    k,
                    w,
                    n,
                    layout,
                    p0,
                    p1,
                    optr.0,
                )
            } else {
                avx::columns::<W, MR, NR>(
                    avx::AVX2_TILE,
                    avx::pack_avx2::<W, NR>,
                    a,
                    m,
                    k,
                    w,
                    n,
                    layout,
                    p0,
                    p1,
                    optr.0,
                )
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (optr, p0, p1, path);
    });
}

/// The plain triple loop (f64 accumulation): CPUs without AVX2/FMA/F16C, and the tests'
/// reference.
pub fn reference<W: WeightElem>(
    a: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    layout: WeightLayout,
    out: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                let b = match layout {
                    WeightLayout::Transposed => w[j * k + p],
                    WeightLayout::Plain => w[p * n + j],
                };
                s += a[i * k + p] as f64 * b.to_f32() as f64;
            }
            out[i * n + j] = s as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{WeightLayout, KC, MAX_PF, MR, MR512, NR, NR512};
    use crate::model::kernels::WeightElem;
    use std::arch::x86_64::*;

    thread_local! {
        static B_PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A register tile (`tile`, `tile512`): `C[i][j] (+)= sum_p a[i * lda + p] * bp[p * NR + j]`
    /// for `i < mr`, `j < nr`, `p < kc`; `first` overwrites; `pf` are lines to prefetch meanwhile.
    /// Arguments: `a, lda, bp, kc, c, ldc, mr, nr, first, pf`.
    pub type TileFn = unsafe fn(
        *const f32,
        usize,
        &[f32],
        usize,
        *mut f32,
        usize,
        usize,
        usize,
        bool,
        &[*const i8],
    );

    /// The AVX2 + FMA tile (6 x 16).
    pub const AVX2_TILE: TileFn = tile;
    /// The AVX-512 tile (12 x 32).
    pub const AVX512_TILE: TileFn = tile512;

    /// Packs with AVX2 into a block `NRP` wide (8-column groups).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn pack_avx2<W: WeightElem, const NRP: usize>(
        layout: WeightLayout,
        w: &[W],
        n: usize,
        k: usize,
        k0: usize,
        kc: usize,
        j0: usize,
        nr: usize,
        bp: &mut [f32],
    ) {
        // SAFETY: forwarded; the block lies inside `w`.
        unsafe {
            match layout {
                WeightLayout::Plain => pack_b_plain::<W, NRP>(w, n, k0, kc, j0, nr, bp),
                WeightLayout::Transposed => pack_b_t::<W, NRP>(w, k, k0, kc, j0, nr, bp),
            }
        }
    }

    /// Packs with AVX-512 into a block `NRP` wide (a multiple of 16): a plain block's whole
    /// rows are copied (and f16 widened) 16 lanes at a time; a transposed block keeps the
    /// 8 x 8 register transposes of [`pack_avx2`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub unsafe fn pack_avx512<W: WeightElem, const NRP: usize>(
        layout: WeightLayout,
        w: &[W],
        n: usize,
        k: usize,
        k0: usize,
        kc: usize,
        j0: usize,
        nr: usize,
        bp: &mut [f32],
    ) {
        match layout {
            WeightLayout::Plain if nr == NRP && NRP.is_multiple_of(16) => {
                for p in 0..kc {
                    let src = &w[(k0 + p) * n + j0..(k0 + p) * n + j0 + NRP];
                    let dst = &mut bp[p * NRP..(p + 1) * NRP];
                    for q in (0..NRP).step_by(16) {
                        // SAFETY: NRP readable source elements, NRP writable destination
                        // floats, AVX-512F present.
                        unsafe {
                            _mm512_storeu_ps(
                                dst.as_mut_ptr().add(q),
                                W::load16(src.as_ptr().add(q)),
                            )
                        };
                    }
                }
            }
            // SAFETY: forwarded; the block lies inside `w`; AVX-512 implies what these need.
            _ => unsafe { pack_avx2::<W, NRP>(layout, w, n, k, k0, kc, j0, nr, bp) },
        }
    }

    /// A packing routine: `pack_avx2` or `pack_avx512` for one tile width.
    pub type PackFn<W> =
        unsafe fn(WeightLayout, &[W], usize, usize, usize, usize, usize, usize, &mut [f32]);

    /// Column panels `p0..p1` (of `NRT` columns) of the output: for each `KC` slice of `k`,
    /// pack each panel's block of `B` through `pack` and run every row panel of `A` against it
    /// through `tile`, an `MRT x NRT` register tile.
    ///
    /// # Safety
    /// `tile`'s and `pack`'s instructions are available; `w` holds `k * n` elements, `a`
    /// holds the `(m, k)` input, `out` points at `m * n` writable floats of which this call
    /// owns columns `p0 * NRT .. min(p1 * NRT, n)`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn columns<W: WeightElem, const MRT: usize, const NRT: usize>(
        tile: TileFn,
        pack: PackFn<W>,
        a: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        n: usize,
        layout: WeightLayout,
        p0: usize,
        p1: usize,
        out: *mut f32,
    ) {
        let row_panels = m.div_ceil(MRT);
        let mut buf = B_PANEL.with(|c| std::mem::take(&mut *c.borrow_mut()));
        // A 64-byte aligned block, so no load of a packed row straddles two cache lines.
        buf.resize(KC * NRT + 16, 0.0);
        let skip = buf.as_ptr().align_offset(64).min(16);
        let bp = &mut buf[skip..skip + KC * NRT];
        let mut pf = [std::ptr::null::<i8>(); MAX_PF];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            for panel in p0..p1 {
                let j0 = panel * NRT;
                let nr = NRT.min(n - j0);
                // The block packed next: this slice's next panel, else the next slice's first.
                let next = if panel + 1 < p1 {
                    Some((k0, kc, panel + 1))
                } else if k0 + kc < k {
                    Some((k0 + kc, KC.min(k - k0 - kc), p0))
                } else {
                    None
                };
                let ahead = next.map(|(nk0, nkc, np)| Ahead {
                    k0: nk0,
                    kc: nkc,
                    j0: np * NRT,
                    nr: NRT.min(n - np * NRT),
                });
                let lines = ahead.map_or(0, |b| b.lines::<W>(layout));
                let per_tile = lines.div_ceil(row_panels).min(MAX_PF);
                // SAFETY: forwarded; the block lies inside `w`.
                unsafe { pack(layout, w, n, k, k0, kc, j0, nr, bp) }
                for rp in 0..row_panels {
                    let i0 = rp * MRT;
                    let mr = MRT.min(m - i0);
                    // Pull the next block of the weight toward L2 while this one computes:
                    // packing reads a row per `k` index, too scattered for the hardware
                    // prefetcher to hide (a third of the time went there without this).
                    // The tile spreads them over its `k` loop: issued in one burst, they
                    // stalled on the miss buffers.
                    let mut cnt = 0;
                    if let Some(b) = ahead {
                        for line in rp * per_tile..((rp + 1) * per_tile).min(lines) {
                            pf[cnt] = b.line_ptr(w, n, k, layout, line);
                            cnt += 1;
                        }
                    }
                    // SAFETY: rows `i0..i0 + mr` and columns `j0..j0 + nr` are inside `out`
                    // and in this task's columns.
                    unsafe {
                        tile(
                            a.as_ptr().add(i0 * k + k0),
                            k,
                            bp,
                            kc,
                            out.add(i0 * n + j0),
                            n,
                            mr,
                            nr,
                            k0 == 0,
                            &pf[..cnt],
                        )
                    };
                }
            }
            k0 += kc;
        }
        B_PANEL.with(|c| *c.borrow_mut() = buf);
    }

    /// A block of the weight about to be packed: `k` indices `k0..k0 + kc`, columns
    /// `j0..j0 + nr` of `B`.
    #[derive(Clone, Copy)]
    struct Ahead {
        k0: usize,
        kc: usize,
        j0: usize,
        nr: usize,
    }

    impl Ahead {
        /// How many cache lines to touch to bring the block in.
        fn lines<W>(&self, layout: WeightLayout) -> usize {
            match layout {
                // Each `k` index's `nr` elements span at most two lines.
                WeightLayout::Plain => 2 * self.kc,
                // Each of `nr` rows holds `kc` consecutive elements.
                WeightLayout::Transposed => self.nr * Self::lines_per_row::<W>(self.kc),
            }
        }

        /// Lines a run of `kc` consecutive elements can touch (one more for misalignment).
        fn lines_per_row<W>(kc: usize) -> usize {
            (kc * std::mem::size_of::<W>()).div_ceil(64) + 1
        }

        /// A pointer into the `line`-th line of the block (`line < self.lines()`).
        fn line_ptr<W>(
            &self,
            w: &[W],
            n: usize,
            k: usize,
            layout: WeightLayout,
            line: usize,
        ) -> *const i8 {
            let idx = match layout {
                WeightLayout::Plain => {
                    let (p, last) = (line / 2, line % 2 == 1);
                    (self.k0 + p) * n + self.j0 + if last { self.nr - 1 } else { 0 }
                }
                WeightLayout::Transposed => {
                    let per_row = Self::lines_per_row::<W>(self.kc);
                    let (c, q) = (line / per_row, line % per_row);
                    let off = (q * 64 / std::mem::size_of::<W>()).min(self.kc - 1);
                    (self.j0 + c) * k + self.k0 + off
                }
            };
            w[idx.min(w.len() - 1)..].as_ptr() as *const i8
        }
    }

    /// `bp[p * NRP + c] = w[(k0 + p) * n + j0 + c]` (zero past `nr`).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack_b_plain<W: WeightElem, const NRP: usize>(
        w: &[W],
        n: usize,
        k0: usize,
        kc: usize,
        j0: usize,
        nr: usize,
        bp: &mut [f32],
    ) {
        for p in 0..kc {
            let src = &w[(k0 + p) * n + j0..(k0 + p) * n + j0 + nr];
            let dst = &mut bp[p * NRP..(p + 1) * NRP];
            if nr == NRP {
                for q in (0..NRP).step_by(8) {
                    // SAFETY: NRP readable source elements, NRP writable destination floats.
                    unsafe {
                        _mm256_storeu_ps(dst.as_mut_ptr().add(q), W::load8(src.as_ptr().add(q)))
                    };
                }
            } else {
                for c in 0..NRP {
                    dst[c] = if c < nr { src[c].to_f32() } else { 0.0 };
                }
            }
        }
    }

    /// `bp[p * NRP + c] = w[(j0 + c) * k + k0 + p]` (zero past `nr`): a transposed block, by
    /// 8 x 8 register transposes where an 8-column group is whole.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pack_b_t<W: WeightElem, const NRP: usize>(
        w: &[W],
        k: usize,
        k0: usize,
        kc: usize,
        j0: usize,
        nr: usize,
        bp: &mut [f32],
    ) {
        let k8 = kc / 8 * 8;
        for group in 0..NRP / 8 {
            let c0 = group * 8;
            if c0 + 8 <= nr {
                let mut p = 0;
                while p < k8 {
                    // SAFETY: rows j0 + c0 .. + 8 exist (c0 + 8 <= nr) and columns
                    // k0 + p .. + 8 lie inside each row (p + 8 <= kc).
                    unsafe {
                        let base = w.as_ptr().add((j0 + c0) * k + k0 + p);
                        let r: [__m256; 8] = std::array::from_fn(|q| W::load8(base.add(q * k)));
                        let t = transpose8(r);
                        for (q, v) in t.iter().enumerate() {
                            _mm256_storeu_ps(bp.as_mut_ptr().add((p + q) * NRP + c0), *v);
                        }
                    }
                    p += 8;
                }
                for p in k8..kc {
                    for c in c0..c0 + 8 {
                        bp[p * NRP + c] = w[(j0 + c) * k + k0 + p].to_f32();
                    }
                }
            } else {
                for p in 0..kc {
                    for c in c0..c0 + 8 {
                        bp[p * NRP + c] = if c < nr {
                            w[(j0 + c) * k + k0 + p].to_f32()
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }

    /// Transpose of an 8 x 8 block held as eight rows.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: register-only intrinsics; the caller has AVX.
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ]
        }
    }

    /// The register tile: `C[i][j] (+)= sum_p a[i * lda + p] * bp[p * NR + j]` for `i < mr`,
    /// `j < nr`, `p < kc`, where `C` starts at `c` with row stride `ldc`; `first` overwrites.
    /// `A`'s rows are read in place (each broadcast comes from one of `mr` sequential
    /// streams), so the activation is never packed.
    ///
    /// # Safety
    /// AVX2/FMA; rows `0..mr` of `a` hold `kc` readable floats at stride `lda`; `bp` holds
    /// `kc * NR`; the `mr x nr` block at `c` is writable.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile(
        a: *const f32,
        lda: usize,
        bp: &[f32],
        kc: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        first: bool,
        pf: &[*const i8],
    ) {
        debug_assert!(bp.len() >= kc * NR && (1..=MR).contains(&mr));
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        // Rows past `mr` repeat the last one; their results are not stored.
        // SAFETY: each row pointer is one of the caller's `mr` rows.
        let rows: [*const f32; MR] = std::array::from_fn(|r| unsafe { a.add(r.min(mr - 1) * lda) });
        let mut b = bp.as_ptr();
        let mut step = |p: usize| {
            // SAFETY: the callers pass `p < kc`, inside every row and inside `bp`.
            unsafe {
                let b0 = _mm256_load_ps(b);
                let b1 = _mm256_load_ps(b.add(8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*rows[r].add(p));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
                b = b.add(NR);
            }
        };
        // One group of prefetches per 8 steps.
        let blocks = kc / 8;
        let per = pf.len().div_ceil(blocks.max(1));
        for blk in 0..blocks {
            for q in 0..8 {
                step(blk * 8 + q);
            }
            for &line in pf.iter().skip(blk * per).take(per) {
                _mm_prefetch::<_MM_HINT_T1>(line);
            }
        }
        for p in blocks * 8..kc {
            step(p);
        }
        if blocks == 0 {
            for &line in pf {
                _mm_prefetch::<_MM_HINT_T1>(line);
            }
        }
        if mr == MR && nr == NR {
            for (r, row) in acc.iter().enumerate() {
                // SAFETY: a whole tile inside the caller's columns and rows.
                unsafe {
                    let p = c.add(r * ldc);
                    let (v0, v1) = if first {
                        (row[0], row[1])
                    } else {
                        (
                            _mm256_add_ps(row[0], _mm256_loadu_ps(p)),
                            _mm256_add_ps(row[1], _mm256_loadu_ps(p.add(8))),
                        )
                    };
                    _mm256_storeu_ps(p, v0);
                    _mm256_storeu_ps(p.add(8), v1);
                }
            }
        } else {
            let mut tmp = [0f32; MR * NR];
            for (r, row) in acc.iter().enumerate() {
                // SAFETY: a local array of MR x NR floats.
                unsafe {
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(r * NR), row[0]);
                    _mm256_storeu_ps(tmp.as_mut_ptr().add(r * NR + 8), row[1]);
                }
            }
            for r in 0..mr {
                for j in 0..nr {
                    // SAFETY: (r, j) with r < mr, j < nr lies inside the caller's tile.
                    unsafe {
                        let p = c.add(r * ldc + j);
                        *p = if first {
                            tmp[r * NR + j]
                        } else {
                            *p + tmp[r * NR + j]
                        };
                    }
                }
            }
        }
    }

    /// The AVX-512 register tile (12 x 32): as [`tile`], with two 16-lane vectors per row and
    /// each row's broadcast folded into its FMAs.
    ///
    /// # Safety
    /// AVX-512F; rows `0..mr` of `a` hold `kc` readable floats at stride `lda`; `bp` holds
    /// `kc * NR512`, 64-byte aligned; the `mr x nr` block at `c` is writable.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn tile512(
        a: *const f32,
        lda: usize,
        bp: &[f32],
        kc: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        first: bool,
        pf: &[*const i8],
    ) {
        debug_assert!(bp.len() >= kc * NR512 && (1..=MR512).contains(&mr));
        let mut acc = [[_mm512_setzero_ps(); 2]; MR512];
        // Rows past `mr` repeat the last one; their results are not stored.
        // SAFETY: each row pointer is one of the caller's `mr` rows.
        let rows: [*const f32; MR512] =
            std::array::from_fn(|r| unsafe { a.add(r.min(mr - 1) * lda) });
        let mut b = bp.as_ptr();
        let mut step = |p: usize| {
            // SAFETY: the callers pass `p < kc`, inside every row and inside `bp` (unaligned
            // loads: as fast on the 64-byte aligned buffer, and sound whatever it is).
            unsafe {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*rows[r].add(p));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
                b = b.add(NR512);
            }
        };
        // One group of prefetches per 8 steps.
        let blocks = kc / 8;
        let per = pf.len().div_ceil(blocks.max(1));
        for blk in 0..blocks {
            for q in 0..8 {
                step(blk * 8 + q);
            }
            for &line in pf.iter().skip(blk * per).take(per) {
                _mm_prefetch::<_MM_HINT_T1>(line);
            }
        }
        for p in blocks * 8..kc {
            step(p);
        }
        if blocks == 0 {
            for &line in pf {
                _mm_prefetch::<_MM_HINT_T1>(line);
            }
        }
        // Column masks of the two vectors (all ones for a whole tile).
        let lanes = |cols: usize| -> __mmask16 {
            if cols >= 16 {
                0xFFFF
            } else {
                ((1u32 << cols) - 1) as __mmask16
            }
        };
        let (m0, m1) = (lanes(nr), lanes(nr.saturating_sub(16)));
        for (r, row) in acc.iter().enumerate().take(mr) {
            // SAFETY: row r < mr of the caller's block; the masks cover columns < nr only, and
            // the second vector's pointer is formed only when that vector has columns
            // (`nr > 16`), so it stays inside the block.
            unsafe {
                let p = c.add(r * ldc);
                let v0 = if first {
                    row[0]
                } else {
                    _mm512_add_ps(row[0], _mm512_maskz_loadu_ps(m0, p))
                };
                _mm512_mask_storeu_ps(p, m0, v0);
                if nr > 16 {
                    let q = p.add(16);
                    let v1 = if first {
                        row[1]
                    } else {
                        _mm512_add_ps(row[1], _mm512_maskz_loadu_ps(m1, q))
                    };
                    _mm512_mask_storeu_ps(q, m1, v1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn check<W: WeightElem>(
        m: usize,
        k: usize,
        n: usize,
        layout: WeightLayout,
        w: &[W],
        a: &[f32],
    ) {
        let mut want = vec![0f32; m * n];
        reference(a, m, k, w, n, layout, &mut want);
        let tol = 1e-5 * (k as f32).sqrt().max(1.0);
        // Every path this CPU runs, forced, against the f64 triple loop.
        for path in CpuPath::all_available() {
            let mut got = vec![f32::NAN; m * n];
            gemm_on(path, a, m, k, w, n, layout, &mut got);
            for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() <= tol,
                    "{m}x{k}x{n} {layout:?} {}: element {idx} is {g}, expected {e}",
                    path.name()
                );
            }
            // The unfilled-allocation entry point (the default path) writes every element.
            if path == cpu_path() {
                assert_eq!(
                    gemm_new(a, m, k, w, n, layout),
                    got,
                    "{m}x{k}x{n} {layout:?}: gemm_new"
                );
            }
        }
    }

    #[test]
    fn the_paths_this_cpu_has_are_tested() {
        let paths = CpuPath::all_available();
        eprintln!(
            "gemm paths tested here: {:?} (default {})",
            paths.iter().map(|p| p.name()).collect::<Vec<_>>(),
            cpu_path().name()
        );
        assert!(paths.contains(&CpuPath::Scalar));
        assert!(paths[0].available());
    }

    #[test]
    fn matches_the_triple_loop_on_edge_shapes() {
        if !supported() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C, so gemm runs its reference loop");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Edges of both tiles (6 x 16 and 12 x 32) and of the k slice (256).
        let shapes = [
            (1, 1, 1),
            (5, 7, 15),
            (6, 8, 16),
            (7, 9, 17),
            (11, 31, 31),
            (12, 32, 32),
            (13, 255, 33),
            (12, 256, 32),
            (20, 257, 40),
            (25, 100, 64),
            (24, 513, 95),
            (31, 600, 50),
            (64, 130, 8),
        ];
        for &(m, k, n) in &shapes {
            let a = rand_vec(m * k, &mut rng);
            let w = rand_vec(k * n, &mut rng);
            for layout in [WeightLayout::Transposed, WeightLayout::Plain] {
                check(m, k, n, layout, &w, &a);
                let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
                check(m, k, n, layout, &w16, &a);
            }
        }
    }

    #[test]
    fn the_output_is_overwritten_not_accumulated() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let (m, k, n) = (9, 300, 21);
        let a = rand_vec(m * k, &mut rng);
        let w = rand_vec(k * n, &mut rng);
        let mut first = vec![0f32; m * n];
        gemm(&a, m, k, &w, n, WeightLayout::Plain, &mut first);
        let mut again = vec![1e6f32; m * n];
        gemm(&a, m, k, &w, n, WeightLayout::Plain, &mut again);
        assert_eq!(first, again);
    }
}

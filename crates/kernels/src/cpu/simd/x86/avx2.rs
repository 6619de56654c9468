//! AVX2 + FMA + F16C: hand-written int8 products (`avx2_int8`, `avx2_qgemm`), attention
//! (`avx2_attention`) and f32 panels, and elsewhere the portable
//! bodies compiled with these features, which LLVM vectorises 8 wide. Hand-written
//! intrinsics can replace any of them without touching callers.

use super::super::{Fmt, GemmPanel, PvBlock, portable};
use super::avx2_attention::hsum;
pub use super::avx2_attention::{
    pv_t, scores_t, scores_widening, silu_mul, softmax_row, softmax_step,
};
pub use super::avx2_int8::{dot_row_q, dot_rows_q};

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    portable::dot(a, b)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    portable::axpy(a, x, y)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn widen(fmt: &Fmt<'_>, src: &[u8], out: &mut [f32]) {
    match fmt {
        // (the loader's codec is compiled for the baseline CPU, a scalar loop with a call
        // per block's scale: 8% of a q8_0 prefill's samples)
        Fmt::Q8_0 => unsafe { widen_q8_0::<false>(src, out) },
        _ => portable::widen(fmt, src, out),
    }
}

/// Q8_0 blocks (an f16 scale and 32 bytes) widened to f32, `q * d` as the loader's codec;
/// with `BF16`, each product rounded to bf16 (to nearest even, in the integer bits: the
/// products are finite), as the 8-bit latent cache's readers take it.
#[inline(always)]
pub(super) unsafe fn widen_q8_0<const BF16: bool>(src: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = src.len() / 34;
    assert!(src.len().is_multiple_of(34) && out.len() == blocks * 32);
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    // SAFETY: block b reads bytes 34b..34b + 34 of src and writes 32b..32b + 32 of out.
    unsafe {
        for b in 0..blocks {
            let blk = s.add(34 * b);
            let bits = (blk as *const u16).read_unaligned();
            let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))));
            for i in 0..4 {
                let q = _mm_loadl_epi64(blk.add(2 + 8 * i) as *const __m128i);
                let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
                if BF16 {
                    let x = _mm256_castps_si256(v);
                    let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(1));
                    let x = _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
                    let top = _mm256_set1_epi32(0xffff_0000u32 as i32);
                    v = _mm256_castsi256_ps(_mm256_and_si256(x, top));
                }
                _mm256_storeu_ps(o.add(32 * b + 8 * i), v);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_row(fmt: &Fmt<'_>, src: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    // (the portable body widened each 256 values into a buffer and summed them there: the
    // router's f32 rows ran at 0.8 values a cycle, 6 GB/s from memory, 2% of a q4_k_m
    // decode step)
    unsafe {
        match fmt {
            Fmt::F32 => {
                assert!(src.len() >= 4 * n);
                dot_wide::<4>(src.as_ptr(), x.as_ptr(), n)
            }
            Fmt::F16 => {
                assert!(src.len() >= 2 * n);
                dot_wide::<2>(src.as_ptr(), x.as_ptr(), n)
            }
            _ => portable::dot_row(fmt, src, x),
        }
    }
}

/// Eight f32 or f16 (`SIZE` 4 or 2) values from `p` as f32.
#[inline(always)]
unsafe fn load8<const SIZE: usize>(p: *const u8) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    unsafe {
        if SIZE == 4 {
            _mm256_loadu_ps(p as *const f32)
        } else {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
    }
}

/// A row of `n` f32 or f16 values · `x`: four sums (an FMA's latency covered), the row's
/// lines asked for ahead.
#[inline(always)]
unsafe fn dot_wide<const SIZE: usize>(w: *const u8, x: *const f32, n: usize) -> f32 {
    use std::arch::x86_64::*;
    unsafe {
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i + 32 <= n {
            let p = w.add(i * SIZE);
            super::prefetch_ahead(p, 32 * SIZE);
            a0 = _mm256_fmadd_ps(load8::<SIZE>(p), _mm256_loadu_ps(x.add(i)), a0);
            a1 = _mm256_fmadd_ps(
                load8::<SIZE>(p.add(8 * SIZE)),
                _mm256_loadu_ps(x.add(i + 8)),
                a1,
            );
            a2 = _mm256_fmadd_ps(
                load8::<SIZE>(p.add(16 * SIZE)),
                _mm256_loadu_ps(x.add(i + 16)),
                a2,
            );
            a3 = _mm256_fmadd_ps(
                load8::<SIZE>(p.add(24 * SIZE)),
                _mm256_loadu_ps(x.add(i + 24)),
                a3,
            );
            i += 32;
        }
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(
                load8::<SIZE>(w.add(i * SIZE)),
                _mm256_loadu_ps(x.add(i)),
                a0,
            );
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        while i < n {
            let v = if SIZE == 4 {
                (w.add(4 * i) as *const f32).read_unaligned()
            } else {
                half::f16::from_bits((w.add(2 * i) as *const u16).read_unaligned()).to_f32()
            };
            s += v * *x.add(i);
            i += 1;
        }
        s
    }
}

/// `R` panel rows against `T` tokens, R*T accumulators in registers: each step of 8 values
/// loads T activation vectors and R weight vectors for R*T FMAs. (Three by three: with the
/// loads that is 13 of the 16 ymm registers; the autovectorised portable body, one dot per
/// row and token, loaded two vectors per FMA and ran at about a third of this.)
#[inline(always)]
unsafe fn tile<const R: usize, const T: usize>(
    w: *const f32,
    x: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut i = 0;
        while i + 8 <= k {
            let mut xv = [_mm256_setzero_ps(); T];
            for (t, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(x.add(t * k + i));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let wv = _mm256_loadu_ps(w.add(r * k + i));
                for (a, &v) in row.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(wv, v, *a);
                }
            }
            i += 8;
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let mut s = hsum(acc[r][t]);
                for j in i..k {
                    s += *w.add(r * k + j) * *x.add(t * k + j);
                }
                out[r][t] = s;
            }
        }
        out
    }
}

#[inline(always)]
unsafe fn tile_into<const R: usize, const T: usize>(
    g: &GemmPanel<'_>,
    r: usize,
    t: usize,
    y: *mut f32,
) {
    let k = g.k;
    let v = unsafe { tile::<R, T>(g.panel.as_ptr().add(r * k), g.x.as_ptr().add(t * k), k) };
    for (i, row) in v.iter().enumerate() {
        for (j, &s) in row.iter().enumerate() {
            unsafe { *y.add((t + j) * g.m + g.r0 + r + i) = s };
        }
    }
}

/// Panel rows taken at a time: the matmul's panels are 16 rows, but attention passes a
/// block of cached positions as one panel (thousands of rows, megabytes); in blocks of 48
/// each block stays in L2 while every token passes over it, where whole it came from L3
/// once per three tokens.
const ROW_BLOCK: usize = 48;

/// `simd::gemm_panel16`: a matmul's panel (at most 16 rows), transposed once into a
/// thread's scratch, then the rows in the lanes of two registers against six tokens at a
/// time (`rows_in_lanes`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_panel16(g: &GemmPanel<'_>, y: *mut f32) {
    PANEL_T.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < 16 * g.k {
            p.resize(16 * g.k, 0.0);
        }
        // SAFETY: p holds 16 * k values; the caller vouches for y.
        unsafe {
            // (a panel of 8 rows or fewer is read as one half: the second is not written)
            transpose_lanes(g.panel, g.rows, g.k, 16, g.rows.div_ceil(8).max(1), &mut p);
            gemm_t(g, &p, y);
        }
    });
}

/// Tokens three at a time (their rows stay in L1) over a block of panel rows three at a
/// time (the block stays in L2). (Attention's blocks of cached positions take this: there
/// a transposed block per chunk of query rows ran a prefill at depth 4096 13% slower.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemm_panel(g: &GemmPanel<'_>, y: *mut f32) {
    let mut r0 = 0;
    while r0 < g.rows {
        let r_end = (r0 + ROW_BLOCK).min(g.rows);
        let mut t = 0;
        while t < g.n {
            let tn = (g.n - t).min(3);
            let mut r = r0;
            while r < r_end {
                let rn = (r_end - r).min(3);
                unsafe {
                    match (rn, tn) {
                        (3, 3) => tile_into::<3, 3>(g, r, t, y),
                        (3, 2) => tile_into::<3, 2>(g, r, t, y),
                        (3, _) => tile_into::<3, 1>(g, r, t, y),
                        (2, 3) => tile_into::<2, 3>(g, r, t, y),
                        (2, 2) => tile_into::<2, 2>(g, r, t, y),
                        (2, _) => tile_into::<2, 1>(g, r, t, y),
                        (_, 3) => tile_into::<1, 3>(g, r, t, y),
                        (_, 2) => tile_into::<1, 2>(g, r, t, y),
                        _ => tile_into::<1, 1>(g, r, t, y),
                    }
                }
                r += rn;
            }
            t += tn;
        }
        r0 = r_end;
    }
}

thread_local! {
    /// A panel transposed, `[k][16]` (grown to the largest k, then reused).
    static PANEL_T: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[c * lanes + r] = src[r * k + c]` for `r < rows`, and 0 for the rows past them up to
/// the end of the first `groups` groups of 8 lanes: 8x8 blocks by shuffles, the columns past
/// the last 8 one by one. (`gemm_panel16`'s panels, and `simd::transpose_queries`: by single
/// values, at depth 32, the 16 query rows of 544 took a fifth of a decode step's attention,
/// 35 KB read a value a line apart, from L2.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn transpose_lanes(
    src: &[f32],
    rows: usize,
    k: usize,
    lanes: usize,
    groups: usize,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(rows <= 8 * groups && 8 * groups <= lanes);
    assert!(src.len() >= rows * k && dst.len() >= lanes * k);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let whole = k / 8 * 8;
    // SAFETY: every index is below rows * k in src and lanes * k in dst (asserted above).
    unsafe {
        let mut c = 0;
        while c < whole {
            for h in 0..groups {
                let mut v = [_mm256_setzero_si256(); 8];
                for (i, v) in v.iter_mut().enumerate() {
                    let r = 8 * h + i;
                    if r < rows {
                        *v = _mm256_castps_si256(_mm256_loadu_ps(s.add(r * k + c)));
                    }
                }
                let t = super::avx2_qgemm::transpose8(&v);
                for (j, t) in t.iter().enumerate() {
                    _mm256_storeu_ps(d.add((c + j) * lanes + 8 * h), _mm256_castsi256_ps(*t));
                }
            }
            c += 8;
        }
        for c in whole..k {
            for r in 0..8 * groups {
                *d.add(c * lanes + r) = if r < rows { *s.add(r * k + c) } else { 0.0 };
            }
        }
    }
}

/// Tokens six at a time against the transposed panel `wt` (`[k][16]`), its rows in the
/// lanes: per value, two loads and six broadcasts for twelve FMAs, and the sums leave as
/// whole rows of `y` (no horizontal sums). Panels of at most 8 rows take one register.
/// (The dot-shaped tiles before loaded a weight vector per 3 FMAs from L2 and ran at about
/// half the FMA peak.)
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_t(g: &GemmPanel<'_>, wt: &[f32], y: *mut f32) {
    assert!(g.rows <= 16 && wt.len() >= 16 * g.k && g.x.len() >= g.n * g.k);
    let mut t = 0;
    while t < g.n {
        let tn = (g.n - t).min(6);
        // SAFETY: wt and x are checked above; the caller vouches for y.
        unsafe {
            macro_rules! tiles {
                ($h:literal) => {
                    match tn {
                        6 => rows_in_lanes::<6, $h>(g, wt, t, y),
                        5 => rows_in_lanes::<5, $h>(g, wt, t, y),
                        4 => rows_in_lanes::<4, $h>(g, wt, t, y),
                        3 => rows_in_lanes::<3, $h>(g, wt, t, y),
                        2 => rows_in_lanes::<2, $h>(g, wt, t, y),
                        _ => rows_in_lanes::<1, $h>(g, wt, t, y),
                    }
                };
            }
            if g.rows > 8 { tiles!(2) } else { tiles!(1) }
        }
        t += tn;
    }
}

/// Tokens `t0..t0 + T` by the panel's first `8 H` rows.
#[inline(always)]
unsafe fn rows_in_lanes<const T: usize, const H: usize>(
    g: &GemmPanel<'_>,
    wt: &[f32],
    t0: usize,
    y: *mut f32,
) {
    use std::arch::x86_64::*;
    let k = g.k;
    unsafe {
        let (w, x) = (wt.as_ptr(), g.x.as_ptr().add(t0 * k));
        let mut acc = [[_mm256_setzero_ps(); H]; T];
        for c in 0..k {
            let mut wv = [_mm256_setzero_ps(); H];
            for (h, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(w.add(c * 16 + 8 * h));
            }
            for (t, a) in acc.iter_mut().enumerate() {
                let b = _mm256_broadcast_ss(&*x.add(t * k + c));
                for h in 0..H {
                    a[h] = _mm256_fmadd_ps(wv[h], b, a[h]);
                }
            }
        }
        store_halves(&acc, g.rows, y.add(t0 * g.m + g.r0), g.m);
    }
}

/// `acc[t][h]` (rows `8h..8h + 8` of token t's sums) to `y[t * ld + 8h..]`, only the first
/// `rows` of each token: a full half by a plain store, a partial one masked (on Zen 3 a
/// masked store is far slower).
#[inline(always)]
pub(super) unsafe fn store_halves<const T: usize, const H: usize>(
    acc: &[[std::arch::x86_64::__m256; H]; T],
    rows: usize,
    y: *mut f32,
    ld: usize,
) {
    use std::arch::x86_64::*;
    for h in 0..H {
        let live = rows.saturating_sub(8 * h).min(8);
        // SAFETY: the caller vouches for y's first `rows` values of each token.
        unsafe {
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(live as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            for (t, a) in acc.iter().enumerate() {
                let out = y.add(t * ld + 8 * h);
                if live == 8 {
                    _mm256_storeu_ps(out, a[h]);
                } else {
                    _mm256_maskstore_ps(out, mask, a[h]);
                }
            }
        }
    }
}

/// Positions `pv_accumulate` takes at a time: their value rows (a prefill's expanded
/// rows are 1.3 KB) stay in L2 while every query row passes over them.
const PV_POSITIONS: usize = 128;

/// `out[i, c] += Σ_j p[i, j0 + j] · v[j, c]`: per block of positions, six query rows by 16
/// columns at a time with the sums in registers across the block (2 loads and 6 broadcasts
/// for 12 FMAs per position, where the portable `axpy` per position and row loaded and
/// stored the output row).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn pv_accumulate(b: &PvBlock<'_>, out: &mut [f32]) {
    let whole = b.width / 16 * 16;
    let mut j = 0;
    while j < b.nj {
        let nj = (b.nj - j).min(PV_POSITIONS);
        let blk = PvBlock {
            v: &b.v[j * b.ld_v..],
            j0: b.j0 + j,
            nj,
            ..*b
        };
        let mut i = 0;
        while i < b.n {
            let rn = (b.n - i).min(6);
            let mut c = 0;
            while c < whole {
                // SAFETY: the wrapper checked p's, v's and out's bounds.
                unsafe {
                    match rn {
                        6 => pv_tile::<6>(&blk, i, c, out),
                        5 => pv_tile::<5>(&blk, i, c, out),
                        4 => pv_tile::<4>(&blk, i, c, out),
                        3 => pv_tile::<3>(&blk, i, c, out),
                        2 => pv_tile::<2>(&blk, i, c, out),
                        _ => pv_tile::<1>(&blk, i, c, out),
                    }
                }
                c += 16;
            }
            i += rn;
        }
        j += nj;
    }
    if whole < b.width {
        // columns past the last 16
        for i in 0..b.n {
            for j in 0..b.nj {
                let pij = b.p[i * b.ld_p + b.j0 + j];
                let v = &b.v[j * b.ld_v + whole..j * b.ld_v + b.width];
                portable::axpy(pij, v, &mut out[i * b.width + whole..(i + 1) * b.width]);
            }
        }
    }
}

#[inline(always)]
unsafe fn pv_tile<const R: usize>(b: &PvBlock<'_>, i0: usize, c: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    unsafe {
        let op = out.as_mut_ptr();
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for (i, a) in acc.iter_mut().enumerate() {
            for (q, v) in a.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(op.add((i0 + i) * b.width + c + 8 * q));
            }
        }
        let pp = b.p.as_ptr().add(i0 * b.ld_p + b.j0);
        let vp = b.v.as_ptr().add(c);
        for j in 0..b.nj {
            let v0 = _mm256_loadu_ps(vp.add(j * b.ld_v));
            let v1 = _mm256_loadu_ps(vp.add(j * b.ld_v + 8));
            for (i, a) in acc.iter_mut().enumerate() {
                let s = _mm256_set1_ps(*pp.add(i * b.ld_p + j));
                a[0] = _mm256_fmadd_ps(s, v0, a[0]);
                a[1] = _mm256_fmadd_ps(s, v1, a[1]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (q, v) in a.iter().enumerate() {
                _mm256_storeu_ps(op.add((i0 + i) * b.width + c + 8 * q), *v);
            }
        }
    }
}

/// 8 e4m3 codes to f32 at 2^-8 of their value: sign and magnitude bits put where an f16's
/// go, widened exactly by `vcvtph2ps` (as AVX-512's `fp8_f16_lanes`).
#[inline(always)]
unsafe fn fp8_f16_8(p: *const u8) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    unsafe {
        let b = _mm_cvtepi8_epi16(_mm_loadl_epi64(p as *const __m128i));
        _mm256_cvtph_ps(_mm_and_si128(
            _mm_slli_epi16::<7>(b),
            _mm_set1_epi16(0xbf80u16 as i16),
        ))
    }
}

/// `out[j] = row j · x` over a run of FP8 rows with block scales (`block[1]` a multiple of
/// 8), four at a time from four streams (rows i, q + i, 2q + i, 3q + i): each load of x
/// serves four rows, a row's sum over a scale block is scaled once, and the last values of
/// a row short of 8 are summed one by one. (The portable row widened each code alone.)
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_fp8(run: &super::super::Fp8Run<'_>, x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (n, k) = (out.len(), x.len());
    let bc = run.block[1];
    if n == 0 {
        return;
    }
    assert!(bc.is_multiple_of(8) && run.bytes.len() >= (n - 1) * run.rb + k);
    let q = n.div_ceil(4);
    let px = x.as_ptr();
    unsafe {
        for i in 0..q {
            let rows = super::four_streams(n, i);
            let w = rows.map(|r| run.bytes.as_ptr().add(r * run.rb));
            let sc = rows.map(|r| run.scales(r).as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut tail = [0f32; 4];
            let (mut c0, mut b) = (0, 0);
            while c0 < k {
                let end = (c0 + bc).min(k);
                let mut part = [_mm256_setzero_ps(); 4];
                for &w in &w {
                    super::prefetch_ahead(w.add(c0), bc);
                }
                let mut c = c0;
                while c + 8 <= end {
                    let xv = _mm256_loadu_ps(px.add(c));
                    for (a, &w) in part.iter_mut().zip(&w) {
                        *a = _mm256_fmadd_ps(fp8_f16_8(w.add(c)), xv, *a);
                    }
                    c += 8;
                }
                for s in 0..4 {
                    let scale = *sc[s].add(b);
                    acc[s] = _mm256_fmadd_ps(part[s], _mm256_set1_ps(scale * 256.0), acc[s]);
                    let mut t = 0f32;
                    for (j, &xj) in x.iter().enumerate().take(end).skip(c) {
                        t += loader::fp8_e4m3_to_f32(*w[s].add(j)) * xj;
                    }
                    tail[s] += t * scale;
                }
                c0 = end;
                b += 1;
            }
            let mut s4 = [0f32; 4];
            _mm_storeu_ps(s4.as_mut_ptr(), super::avx2_int8::hsum4(acc));
            for (s, (&v, &t)) in s4.iter().zip(&tail).enumerate() {
                let r = s * q + i;
                if r < n {
                    out[r] = v + t;
                }
            }
        }
    }
}

/// `out[j] = row j · x` for the bf16 rows stored `rb` bytes apart from `src`, four at a time
/// from four streams (rows i, q + i, 2q + i, 3q + i, as the int8 kernels take them): each
/// load of `pairs` serves four rows, and one horizontal sum four sums. The row-at-a-time
/// kernel above, called per row, paid a call, its `pairs` loads and a sum for each.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_rows_bf16_pairs(
    src: &[u8],
    rb: usize,
    x: &[f32],
    pairs: &[f32],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (n, k) = (out.len(), x.len());
    let full = k / 32 * 32;
    if n == 0 {
        return;
    }
    assert!(rb >= 2 * k && src.len() >= (n - 1) * rb + 2 * k && pairs.len() >= full);
    let q = n.div_ceil(4);
    let p = pairs.as_ptr();
    unsafe {
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        for i in 0..q {
            let w = super::four_streams(n, i).map(|r| src.as_ptr().add(r * rb));
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            let mut c = 0;
            while c < full {
                let pe = [_mm256_loadu_ps(p.add(c)), _mm256_loadu_ps(p.add(c + 8))];
                let po = [
                    _mm256_loadu_ps(p.add(c + 16)),
                    _mm256_loadu_ps(p.add(c + 24)),
                ];
                for (a, &w) in acc.iter_mut().zip(&w) {
                    super::prefetch_ahead(w.add(2 * c), 64);
                    for h in 0..2 {
                        let v = _mm256_loadu_si256(w.add(2 * c + 32 * h) as *const __m256i);
                        let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
                        let odd = _mm256_castsi256_ps(_mm256_and_si256(v, high));
                        a[0] = _mm256_fmadd_ps(even, pe[h], a[0]);
                        a[1] = _mm256_fmadd_ps(odd, po[h], a[1]);
                    }
                }
                c += 32;
            }
            let sums = [
                _mm256_add_ps(acc[0][0], acc[0][1]),
                _mm256_add_ps(acc[1][0], acc[1][1]),
                _mm256_add_ps(acc[2][0], acc[2][1]),
                _mm256_add_ps(acc[3][0], acc[3][1]),
            ];
            let mut s4 = [0f32; 4];
            _mm_storeu_ps(s4.as_mut_ptr(), super::avx2_int8::hsum4(sums));
            for (s, &v) in s4.iter().enumerate() {
                let r = s * q + i;
                if r < n {
                    out[r] = if full < k {
                        let row = &src[r * rb + 2 * full..r * rb + 2 * k];
                        v + portable::dot_row(&Fmt::BF16, row, &x[full..])
                    } else {
                        v
                    };
                }
            }
        }
    }
}

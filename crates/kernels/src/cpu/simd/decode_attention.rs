//! The decode attention's products over one tile of cached positions (the split path of
//! `cpu::attention::decode`): scores with the query rows in lanes, the online softmax's
//! step, and the probabilities times the latents; plus a prefill's `softmax_row`.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use super::wasm;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{has_bf16_dot, portable};
use crate::backend::KvRows;
use crate::cpu::dispatch::Level;

/// Decode attention with the query rows in vector lanes (see `attention.rs`): `q` is
/// `[rows, k]`, `kv[offs[j]..offs[j] + k]` is cached row `j` of the tile, and the scores
/// come out transposed, one group of `lanes` (a multiple of 16, at least `rows`) per
/// position: `s[j * lanes + i] = q[i] · kv[offs[j]..]` for `i < rows` and `j <
/// offs.len()`, which must be a multiple of 8 (callers pad by repeating a row). Padding
/// lanes are left as they were.
pub struct ScoresTile<'a> {
    pub q: &'a [f32],
    pub rows: usize,
    pub lanes: usize,
    pub k: usize,
    pub kv: KvRows<'a>,
    pub offs: &'a [usize],
    /// Where [`has_bf16_dot`] and the cache is bf16: `q` as bf16 bits (whose values `q` must
    /// already hold, rounded) in pairs along k, with the rows in lanes:
    /// `q16[d / 2 * lanes + i]` holds `q[i * k + d]` in its low half for even `d`, its high
    /// half for odd (0 past k and in the padding lanes), which the kernel then multiplies
    /// as bf16 pairs; else empty.
    pub q16: &'a [u32],
    /// Where [`has_scores_qt`]: `q` transposed, `[k][lanes]`, zero in the padding lanes
    /// (which the kernel then may overwrite); else empty.
    pub qt: &'a [f32],
    /// Rows to fetch ahead into cache while this tile computes (the next tile's). A hint:
    /// kernels may ignore it.
    pub prefetch: Ahead<'a>,
}

/// Cached rows to fetch ahead, as bytes (the kernels ask for lines, whatever the rows'
/// type).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ahead<'a> {
    /// The cache's bytes as stored.
    pub bytes: &'a [u8],
    /// The rows' offsets, in values (as `MlaAttention::row_offset` gives them).
    pub offs: &'a [usize],
    /// Bytes a value takes, and values a row holds.
    pub value_bytes: usize,
    pub row_values: usize,
}

impl<'a> Ahead<'a> {
    /// Rows `offs` (`row_values` long) of a bf16 or f32 cache; none of an 8-bit one (its
    /// tiles are converted first, and the conversion asks for its rows itself: fetching
    /// them a tile ahead as well was neutral, 0.94-1.01x a decode step's time).
    pub fn of(kv: &KvRows<'a>, offs: &'a [usize], row_values: usize) -> Ahead<'a> {
        let (bytes, value_bytes) = match *kv {
            KvRows::Bf16(kv) => (super::u16_bytes(kv), 2),
            KvRows::F32(kv) => (super::f32_bytes(kv), 4),
            KvRows::Q8(_) => return Ahead::default(),
        };
        Ahead {
            bytes,
            offs,
            value_bytes,
            row_values,
        }
    }

    /// The same rows' `range`.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Ahead<'a> {
        Ahead {
            offs: &self.offs[range],
            ..*self
        }
    }

    /// Group `g`'s share when the rows are spread over `groups` groups of a tile's work
    /// (a whole share each but the last).
    pub fn share(&self, g: usize, groups: usize) -> Ahead<'a> {
        let all = self.offs.len();
        let per = all.div_ceil(groups.max(1));
        let a = (per * g).min(all);
        self.rows(a..(a + per).min(all))
    }

    /// Where row `i` starts (an address to prefetch: possibly past the bytes, which a
    /// prefetch may be).
    pub fn row(&self, i: usize) -> *const u8 {
        self.bytes
            .as_ptr()
            .wrapping_add(self.offs[i] * self.value_bytes)
    }

    /// Lines a row touches at most (one more than its length where it starts mid-line).
    pub fn lines(&self) -> usize {
        (self.row_values * self.value_bytes).div_ceil(64) + 1
    }
}

/// One row of attention scores: the first `visible` scaled by `scale` and replaced by
/// their softmax, the rest zeroed. Returns the scaled scores' maximum `m` and the sum `l` of
/// `e^(x - m)` (-inf and 0 where nothing is visible), so rows softmaxed a block of
/// positions at a time can be merged. The x86 levels take `e^x` from the attention's
/// polynomial (within a few ulp); the others call libm's.
pub fn softmax_row(level: Level, s: &mut [f32], visible: usize, scale: f32) -> (f32, f32) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a level is only ever selected when `Level::supported` said so.
        Level::Avx512 | Level::Avx512Vnni | Level::Amx => unsafe {
            x86::avx512::softmax_row(s, visible, scale)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { x86::avx2::softmax_row(s, visible, scale) },
        _ => {
            let visible = visible.min(s.len());
            for v in &mut s[..visible] {
                *v *= scale;
            }
            let ml = crate::cpu::norm::softmax(&mut s[..visible]);
            s[visible..].fill(0.0);
            ml
        }
    }
}

/// Whether this level's decode scores want the queries transposed (`ScoresTile::qt`) and
/// a bf16 tile widened to f32 ([`scores_widening`]). AVX2 has no bf16 dot: it widens each
/// cached value once for all query rows (the dot per query row and position widened it
/// once per pair of rows), then multiplies it, broadcast, by 16 query rows at a time, with
/// no horizontal sums. Decode attention over a bf16 cache at depth 4096 took 17.2 ms a
/// token before and 14.6 after (`examples/attention`, 12 layers, Zen 3).
///
/// The AVX-512 levels take an f32 cache's scores so too (16 query rows a vector, a
/// broadcast and an FMA per value and position), where the dot along each row spent `R +
/// 4` loads on `4R` FMAs and sixteen horizontal sums a step; a bf16 cache they take in
/// pairs (`ScoresTile::q16`) or widened along the row.
pub fn has_scores_qt(level: Level, kv: &KvRows<'_>) -> bool {
    match level {
        Level::Avx2 => true,
        Level::Avx512 | Level::Avx512Vnni | Level::Amx => matches!(kv, KvRows::F32(_)),
        _ => false,
    }
}

/// `qt[d * lanes + i] = q[i * k + d]` for `i < rows`, `d < k`, and 0 in lanes `rows..lanes`:
/// the queries as [`ScoresTile::qt`] holds them.
pub fn transpose_queries(
    level: Level,
    q: &[f32],
    rows: usize,
    k: usize,
    lanes: usize,
    qt: &mut [f32],
) {
    assert!(rows <= lanes && q.len() >= rows * k && qt.len() >= k * lanes);
    #[cfg(target_arch = "x86_64")]
    if level != Level::Scalar && lanes.is_multiple_of(8) {
        // SAFETY: every level above Scalar has AVX2, FMA and F16C; bounds as asserted.
        unsafe { x86::avx2::transpose_lanes(q, rows, k, lanes, lanes / 8, qt) };
        return;
    }
    let _ = level;
    // in store order: by rows, each store went a line apart
    for (d, dst) in qt[..k * lanes].chunks_exact_mut(lanes).enumerate() {
        for (i, t) in dst.iter_mut().enumerate() {
            *t = if i < rows { q[i * k + d] } else { 0.0 };
        }
    }
}

/// `q16[d / 2 * lanes + i]` = row `i`'s values `d` and `d + 1` as a bf16 pair (low half,
/// high half; 0 past `k`), for `i < rows` and even `d < k`: the queries as
/// [`ScoresTile::q16`] holds them. `q`'s values must already be bf16 (their top halves are
/// then exact); lanes `rows..lanes` are left as they are.
pub fn pair_queries(level: Level, q: &[f32], rows: usize, k: usize, lanes: usize, q16: &mut [u32]) {
    assert!(rows <= lanes && q.len() >= rows * k && q16.len() >= k.div_ceil(2) * lanes);
    #[cfg(target_arch = "x86_64")]
    if matches!(level, Level::Avx512 | Level::Avx512Vnni | Level::Amx) {
        // SAFETY: a level is only ever selected when `Level::supported` said so; bounds as
        // asserted.
        unsafe { x86::avx512::pair_queries(q, rows, k, lanes, q16) };
        return;
    }
    let _ = level;
    for (i, qi) in q.chunks_exact(k).take(rows).enumerate() {
        for (d2, pair) in qi.chunks(2).enumerate() {
            let hi = pair.get(1).map_or(0, |v| v.to_bits() >> 16);
            q16[d2 * lanes + i] = pair[0].to_bits() >> 16 | hi << 16;
        }
    }
}

/// [`scores_t`] over a bf16 tile, where [`has_scores_qt`]: the tile's rows are widened
/// (exactly) to f32 as the scores reach them, and left in `wide` one after another
/// (`wide[j * k..]` holds row `offs[j]`) for the output's product.
pub fn scores_widening(level: Level, t: &ScoresTile<'_>, s: &mut [f32], wide: &mut [f32]) {
    assert!(matches!(t.kv, KvRows::Bf16(_)) && wide.len() >= t.offs.len() * t.k);
    assert!(has_scores_qt(level, &t.kv) && t.qt.len() >= t.k * t.lanes);
    assert!(t.lanes.is_multiple_of(16) && t.rows <= t.lanes && t.offs.len().is_multiple_of(8));
    assert!(s.len() >= t.offs.len() * t.lanes);
    assert!(t.offs.iter().all(|&o| o + t.k <= t.kv.len()));
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a level is only ever selected when `Level::supported` said so; the
        // bounds are checked above.
        Level::Avx2 => unsafe { x86::avx2::scores_widening(t, s, wide) },
        _ => unreachable!("only AVX2 takes the queries transposed"),
    }
}

pub fn scores_t(level: Level, t: &ScoresTile<'_>, s: &mut [f32]) {
    assert!(t.lanes.is_multiple_of(16) && t.rows <= t.lanes && t.offs.len().is_multiple_of(8));
    assert!(t.q.len() >= t.rows * t.k && s.len() >= t.offs.len() * t.lanes);
    assert!(t.q16.is_empty() || (t.q16.len() >= t.k.div_ceil(2) * t.lanes && has_bf16_dot(level)));
    assert!(t.qt.is_empty() || (t.qt.len() >= t.k * t.lanes && has_scores_qt(level, &t.kv)));
    assert!(t.offs.iter().all(|&o| o + t.k <= t.kv.len()));
    assert!(
        !matches!(t.kv, KvRows::Q8(_)),
        "an 8-bit cache's tile is converted first"
    );
    dispatch!(level, scores_t(t, s))
}

/// One tile's step of the online softmax, per lane `i` (one query row): scores of
/// positions `j0..j0 + nj` are scaled, masked from position `visible[i]` on, and replaced by
/// `exp(score - m)` with `m` the running maximum, which is updated; `alpha[i]` is what the
/// row's earlier sums must be multiplied by (`exp(m_old - m_new)`), and `l` the running
/// sum of the exponentials, already rescaled.
pub struct SoftmaxStep<'a> {
    pub nj: usize,
    pub lanes: usize,
    pub j0: usize,
    pub scale: f32,
    pub visible: &'a [u32],
    pub m: &'a mut [f32],
    pub l: &'a mut [f32],
    pub alpha: &'a mut [f32],
}

pub fn softmax_step(level: Level, s: &mut [f32], st: &mut SoftmaxStep<'_>) {
    let n = st.lanes;
    assert!(n.is_multiple_of(16) && s.len() >= st.nj * n && st.visible.len() >= n);
    assert!(st.m.len() >= n && st.l.len() >= n && st.alpha.len() >= n);
    dispatch!(level, softmax_step(s, st))
}

/// `o[i * width + c] += Σ_j p[j * lanes + i] · kv[offs[j] + c]` for `i < rows`, `c < width`,
/// `j < offs.len()`: a tile's probabilities times its cached latents.
pub struct PvTile<'a> {
    pub p: &'a [f32],
    pub lanes: usize,
    pub rows: usize,
    pub kv: KvRows<'a>,
    pub offs: &'a [usize],
    pub width: usize,
    /// Multiply bf16 pairs (`vdpbf16ps`): the probabilities rounded to bf16, as the AMX
    /// path multiplies them, against a bf16 tile's latents two positions at a time. Only
    /// where [`has_bf16_dot`], over a bf16 tile, with `lanes` a multiple of 16.
    pub bf16_dot: bool,
}

pub fn pv_t(level: Level, t: &PvTile<'_>, o: &mut [f32]) {
    assert!(t.rows <= t.lanes && t.p.len() >= t.offs.len() * t.lanes);
    assert!(
        !t.bf16_dot
            || (has_bf16_dot(level)
                && matches!(t.kv, KvRows::Bf16(_))
                && t.lanes.is_multiple_of(16))
    );
    assert!(o.len() >= t.rows * t.width);
    assert!(t.offs.iter().all(|&o| o + t.width <= t.kv.len()));
    assert!(
        !matches!(t.kv, KvRows::Q8(_)),
        "an 8-bit cache's tile is converted first"
    );
    dispatch!(level, pv_t(t, o))
}

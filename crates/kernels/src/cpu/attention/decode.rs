//! Decode attention, flash-decoding style (see the parent module's doc): tiles of cached
//! positions over threads, query rows in vector lanes, each thread's partial softmax merged
//! by maxima and sums at the end.

use std::cell::RefCell;

use super::super::dispatch::Level;
use super::super::pool::{Disjoint, ThreadPool};
use super::super::simd::{self, PvTile, ScoresTile, SoftmaxStep};
use crate::backend::{KvRows, MlaAttention};

/// What the split path keeps between calls (grown once, then reused).
struct Split {
    /// Per chunk, `[rows * r | m | l]`: its partial outputs, maxima and sums.
    partial: Vec<f32>,
    /// Per lane, how many positions that query row sees (0 for padding lanes).
    visible: Vec<u32>,
    /// The queries as bf16 pairs along k with the rows in lanes (`ScoresTile::q16`), where
    /// the scores are bf16 products.
    q16: Vec<u32>,
    /// The queries packed as AMX tiles' B side, where the scores run on tiles.
    qpack: Vec<u16>,
    /// The queries transposed, `[k][lanes]`, where the level's scores take them so.
    qt: Vec<f32>,
}

impl Split {
    const fn new() -> Split {
        Split {
            partial: Vec::new(),
            visible: Vec::new(),
            q16: Vec::new(),
            qpack: Vec::new(),
            qt: Vec::new(),
        }
    }
}

/// Cached positions per tile of the split path: 64 rows of 576 f32 are 147 KB, which stay
/// in L2 between the two products.
const TILE: usize = 64;
/// The same on AMX tiles over a bf16 cache: 128 rows of 576 are 147 KB too, and each of
/// the output product's tiles is loaded and stored once for twice the positions.
const AMX_TILE: usize = simd::AMX_PV_POSITIONS;
// a tile's offsets live in arrays of AMX_TILE
const _: () = assert!(AMX_TILE >= TILE);

thread_local! {
    /// The split path's buffers.
    static SPLIT: RefCell<Split> = const { RefCell::new(Split::new()) };
    /// A decode tile's probabilities packed for `simd::amx_pv`.
    static PV_TILES: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// A decode tile of an 8-bit cache, converted to bf16 rows.
    static CONVERTED: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// A decode tile of a bf16 (or converted 8-bit) cache widened to f32, where the level's
    /// scores take the queries transposed (`simd::has_scores_qt`).
    static WIDENED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A decode tile of an 8-bit cache widened to f32 rows in one pass, where the level's
    /// scores take the queries transposed.
    static WIDENED_Q8: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The flash-decoding form (see the module's doc): tiles of positions over threads, query
/// rows in lanes.
pub(super) fn split_positions(
    level: Level,
    pool: &ThreadPool,
    a: &MlaAttention<'_>,
    q: &[f32],
    out: &mut [f32],
) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let row = r + p;
    let rows = q.len() / row;
    let tokens = rows / h;
    let lanes = rows.next_multiple_of(16);
    let len = a.start_pos + tokens;
    // Over a bf16 cache with AMX, the scores run on tiles whose A side is 16 cached rows as
    // they lie and whose B side is the queries, packed once here. Rows of whole steps of 32
    // values, and blocks of whole groups of 16 positions: a tile's groups start at
    // multiples of 16, so each group's rows lie one after another. An 8-bit cache's tiles
    // are converted to bf16 rows one after another first (exactly), and attended over as
    // a bf16 cache's.
    let q8 = match a.kv {
        KvRows::Q8(f) => Some(f),
        _ => None,
    };
    let amx = simd::has_amx(level)
        && row.is_multiple_of(32)
        && match a.kv {
            KvRows::Bf16(_) => a.block_size.is_multiple_of(16),
            KvRows::Q8(_) => true,
            KvRows::F32(_) => false,
        };
    let tile = if amx {
        AMX_TILE
    } else {
        // a short cache in a tile for each thread, so that none sits idle (at depth 64 on
        // two threads, `examples/attention` over 12 layers, runs alternated: 0.42-0.65 ms
        // a token in two tiles, 0.49-0.78 in one)
        TILE.min(len.div_ceil(pool.threads()).next_multiple_of(16))
    };
    let tiles = len.div_ceil(tile);
    // two chunks a thread, so a thread the host slows down leaves less behind
    let chunks = (pool.threads() * 2).min(tiles).max(1);
    let per_chunk = rows * r + 2 * lanes;
    SPLIT.with(|sp| {
        let mut sp = sp.borrow_mut();
        let Split {
            partial: buf,
            visible: vis,
            q16,
            qpack,
            qt,
        } = &mut *sp;
        // and the output's product too where the query rows fill whole tiles (o holds
        // exactly the rows) and the latents whole steps of 32 (the pair packing)
        let amx_pv = amx && rows.is_multiple_of(16) && r.is_multiple_of(32);
        qpack.clear();
        if amx {
            qpack.resize(lanes * row, 0);
            simd::amx_pack_acts(level, q, row, qpack);
        }
        let qpack = &qpack[..];
        q16.clear();
        if !amx && !matches!(a.kv, KvRows::F32(_)) && simd::has_bf16_dot(level) {
            // the queries are already rounded to bf16: their top halves are exact
            q16.resize(row.div_ceil(2) * lanes, 0);
            simd::pair_queries(level, q, rows, row, lanes, q16);
        }
        let q16 = &q16[..];
        // without a bf16 dot (AVX2), each tile is widened to f32 once for every query row,
        // and the scores broadcast its values against the queries transposed
        let transposed = !amx && simd::has_scores_qt(level, &a.kv);
        if transposed {
            qt.resize(row * lanes, 0.0);
            simd::transpose_queries(level, q, rows, row, lanes, qt);
        } else {
            qt.clear();
        }
        let qt = &qt[..];
        // padding lanes see nothing
        vis.clear();
        vis.extend((0..lanes).map(|i| {
            if i < rows {
                (a.start_pos + i / h + 1) as u32
            } else {
                0
            }
        }));
        let visible = &vis[..];
        if buf.len() < chunks * per_chunk {
            buf.resize(chunks * per_chunk, 0.0);
        }
        let dst = Disjoint::new(&mut buf[..]);
        pool.for_chunks_scratch(chunks, tile * lanes + lanes, &|c, scratch| {
            let (s, alpha) = scratch.split_at_mut(tile * lanes);
            // SAFETY: chunk c's region of the partials is written by this chunk alone.
            let part = unsafe { dst.slice(c * per_chunk, per_chunk) };
            let (o, ml) = part.split_at_mut(rows * r);
            let (m, l) = ml.split_at_mut(lanes);
            o.fill(0.0);
            m.fill(f32::NEG_INFINITY);
            l.fill(0.0);
            // cached-row offsets of this tile and of the next (fetched ahead)
            let mut offs = [0usize; AMX_TILE];
            let mut next = [0usize; AMX_TILE];
            // the first rows of this tile's groups of 16 positions, and of the next's
            let (mut firsts, mut ahead_firsts) = ([0usize; AMX_TILE / 16], [0usize; AMX_TILE / 16]);
            let fill = |t: usize, offs: &mut [usize; AMX_TILE]| -> usize {
                let j0 = t * tile;
                let nj = tile.min(len - j0);
                // a block's rows lie one after another: one lookup (and division) a block,
                // not a position (49k a token at depth 4096 on 12 layers)
                let mut j = 0;
                while j < nj {
                    let first = a.row_offset(j0 + j);
                    let run = (a.block_size - (j0 + j) % a.block_size).min(nj - j);
                    for (i, off) in offs[j..j + run].iter_mut().enumerate() {
                        *off = first + i * row;
                    }
                    j += run;
                }
                // the score kernel takes whole groups of 8: repeat the last row
                let last = offs[nj - 1];
                offs[nj..nj.next_multiple_of(8)].fill(last);
                nj
            };
            let (first, end) = (tiles * c / chunks, tiles * (c + 1) / chunks);
            let mut nj = if first < end {
                fill(first, &mut offs)
            } else {
                0
            };
            // an 8-bit cache's converted tile, and its rows' offsets there: bf16 rows, or
            // f32 rows where the scores multiply f32 (AVX2)
            let mut conv = match q8 {
                Some(_) if !transposed => CONVERTED.with(|c| std::mem::take(&mut *c.borrow_mut())),
                _ => Vec::new(),
            };
            let mut conv32 = Vec::new();
            if q8.is_some() && transposed {
                conv32 = WIDENED_Q8.with(|c| std::mem::take(&mut *c.borrow_mut()));
                // (padded to whole groups of 8, as the offsets are)
                conv32.resize(tile.next_multiple_of(8) * row, 0.0);
            }
            // a widened tile's rows, one after another
            let mut wide = Vec::new();
            let mut wide_offs = [0usize; AMX_TILE];
            // (and an 8-bit tile's f32 rows lie there as a widened tile's do)
            for (j, o) in wide_offs.iter_mut().enumerate() {
                *o = j * row;
            }
            if transposed && matches!(a.kv, KvRows::Bf16(_)) {
                wide = WIDENED.with(|w| std::mem::take(&mut *w.borrow_mut()));
                // (padded to whole groups of 8, as the offsets are)
                wide.resize(tile.next_multiple_of(8) * row, 0.0);
            }
            let mut local = [0usize; AMX_TILE];
            for t in first..end {
                let j0 = t * tile;
                let ahead = if t + 1 < end {
                    fill(t + 1, &mut next)
                } else {
                    0
                };
                // an 8-bit cache's tile as bf16 rows, and where they lie
                let (tkv, toffs, tnext) = match q8 {
                    Some(f) if transposed => {
                        // whole groups of 8 (the score kernel's), the padding repeating
                        // the last row as `fill`'s offsets do
                        let n8 = nj.next_multiple_of(8);
                        simd::q8_rows_to_f32(level, &f, &offs[..n8], &mut conv32[..n8 * row]);
                        (KvRows::F32(&conv32[..]), &wide_offs, &next[..0])
                    }
                    Some(f) => {
                        if conv.len() < tile * row {
                            conv.resize(tile * row, 0);
                        }
                        simd::q8_rows_to_bf16(level, &f, &offs[..nj], &mut conv[..nj * row]);
                        for (j, o) in local.iter_mut().enumerate() {
                            // groups of 8 past the end repeat the last row, as `fill`'s do
                            *o = j.min(nj - 1) * row;
                        }
                        (KvRows::Bf16(&conv[..]), &local, &next[..0])
                    }
                    None => (a.kv, &offs, &next[..ahead]),
                };
                // the next tile's rows, for the scores to fetch ahead (none of an 8-bit
                // cache: see `simd::Ahead::of`)
                let prefetch = simd::Ahead::of(&a.kv, tnext, row);
                let widened = transposed && matches!(tkv, KvRows::Bf16(_));
                if let (true, KvRows::Bf16(kv)) = (amx, tkv) {
                    let groups = nj.div_ceil(16);
                    for (g, f) in firsts[..groups].iter_mut().enumerate() {
                        *f = toffs[16 * g];
                    }
                    let ahead_groups = tnext.len().div_ceil(16);
                    for (g, f) in ahead_firsts[..ahead_groups].iter_mut().enumerate() {
                        *f = tnext[16 * g];
                    }
                    let g = simd::AmxScores {
                        kv,
                        row,
                        firsts: &firsts[..groups],
                        k: row,
                        q: qpack,
                        lanes,
                        ahead: &ahead_firsts[..ahead_groups],
                    };
                    simd::amx_scores(level, &g, s);
                } else {
                    let sc = ScoresTile {
                        q,
                        rows,
                        lanes,
                        k: row,
                        kv: tkv,
                        offs: &toffs[..nj.next_multiple_of(8)],
                        q16,
                        qt,
                        prefetch,
                    };
                    if widened {
                        // the tile's rows widened as the scores reach them, for the
                        // output's product too
                        simd::scores_widening(level, &sc, s, &mut wide);
                    } else {
                        simd::scores_t(level, &sc, s);
                    }
                }
                let mut st = SoftmaxStep {
                    nj,
                    lanes,
                    j0,
                    scale: a.scale,
                    visible,
                    m,
                    l,
                    alpha,
                };
                simd::softmax_step(level, s, &mut st);
                for (oi, &al) in o.chunks_exact_mut(r).zip(alpha.iter()) {
                    if al != 1.0 {
                        oi.iter_mut().for_each(|v| *v *= al);
                    }
                }
                if let (true, KvRows::Bf16(kv)) = (amx_pv, tkv) {
                    // the probabilities packed as the tiles' A side, then the latents
                    // as they lie, 32 columns at a time, the sums kept in o
                    PV_TILES.with(|t| {
                        let mut p16 = t.borrow_mut();
                        p16.resize(lanes * tile, 0);
                        simd::amx_pack_probs(level, s, lanes, rows, nj, &mut p16);
                        let g = simd::AmxPv {
                            kv,
                            offs: &toffs[..nj],
                            p: &p16,
                            rows,
                            r,
                        };
                        simd::amx_pv(level, &g, o);
                    });
                } else {
                    let pv = PvTile {
                        p: s,
                        lanes,
                        rows,
                        kv: if widened { KvRows::F32(&wide) } else { tkv },
                        offs: if widened {
                            &wide_offs[..nj]
                        } else {
                            &toffs[..nj]
                        },
                        width: r,
                        // where the scores take bf16 pairs (a bf16 tile, or an 8-bit
                        // one converted to bf16), so does this
                        bf16_dot: !q16.is_empty(),
                    };
                    simd::pv_t(level, &pv, o);
                }
                std::mem::swap(&mut offs, &mut next);
                nj = ahead;
            }
            if !conv.is_empty() {
                CONVERTED.with(|c| *c.borrow_mut() = conv);
            }
            if !conv32.is_empty() {
                WIDENED_Q8.with(|c| *c.borrow_mut() = conv32);
            }
            if !wide.is_empty() {
                WIDENED.with(|w| *w.borrow_mut() = wide);
            }
        });
        // merge: each chunk's sums scaled to the overall maximum of its row
        let parts = &buf[..chunks * per_chunk];
        for i in 0..rows {
            let mc = |c: usize| parts[c * per_chunk + rows * r + i];
            let lc = |c: usize| parts[c * per_chunk + rows * r + lanes + i];
            let top = (0..chunks).map(mc).fold(f32::NEG_INFINITY, f32::max);
            let w = |c: usize| {
                if mc(c) == f32::NEG_INFINITY {
                    0.0
                } else {
                    (mc(c) - top).exp()
                }
            };
            let total: f32 = (0..chunks).map(|c| w(c) * lc(c)).sum();
            let oi = &mut out[i * r..(i + 1) * r];
            oi.fill(0.0);
            for c in 0..chunks {
                let f = w(c) / total;
                if f != 0.0 {
                    let src = &parts[c * per_chunk + i * r..c * per_chunk + (i + 1) * r];
                    oi.iter_mut().zip(src).for_each(|(o, &v)| *o += f * v);
                }
            }
        }
    });
}

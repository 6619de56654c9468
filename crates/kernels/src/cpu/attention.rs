//! Absorbed multi-head latent attention (DeepSeek-V2 paper, §2.1.2, "absorb" form): every
//! head attends over the same cached latent rows, so the cache holds 576 values per token
//! for V3 instead of 128 heads of K and V.
//!
//! Because all heads share the keys, attention is two matrix products per block of query
//! rows (a query row is one (token, head) pair, `[q_latent | q_pe]`, matching the cached
//! `[c_kv | k_pe]` rows): scores = Q · KVᵀ through the same register-tiled panel kernel as
//! the weights (a cache block is already a contiguous f32 panel), then O = P · C_kv with an
//! outer-product kernel. Each cache block is read once per query block rather than once
//! per head.
//!
//! Decode (and any step with few query rows) splits the *positions* across threads instead,
//! as flash-decoding does: each thread walks its tiles of 64 cached rows once, computing
//! the tile's scores for every query row, an online-softmax step and the tile's share of
//! the output while the tile is in L1/L2; the threads' partial outputs are merged by
//! their maxima and sums at the end. A tile's scores are stored with the query rows in
//! vector lanes (one vector per position), so the softmax runs lane-wise with a vectorised
//! exp. The two-pass form read the whole cache twice per query block and ran libm's exp
//! per score; at depth 4096 it was ~3x slower. The scalar level keeps the two-pass form: it
//! is the oracle the others are tested against.

use std::cell::RefCell;

use super::dispatch::Level;
use super::pool::{Disjoint, ThreadPool};
use super::simd::{self, GemmPanel, PvBlock, PvTile, ScoresTile, SoftmaxStep};
use crate::backend::{KvRows, MlaAttention};

thread_local! {
    /// The caller's `[q_latent | q_pe]` rows.
    static QUERY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The split path's buffers.
    static SPLIT: RefCell<Split> = const { RefCell::new(Split::new()) };
    /// A prefill's rows of an 8-bit cache as bf16, and their offsets.
    static FLAT: RefCell<(Vec<u16>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// A bf16 cache widened for the two-pass form, and its one-block table.
    static WIDE: RefCell<(Vec<f32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// What the split path keeps between calls (grown once, then reused).
struct Split {
    /// Per chunk, `[rows * r | m | l]`: its partial outputs, maxima and sums.
    partial: Vec<f32>,
    /// Per lane, how many positions that query row sees (0 for padding lanes).
    visible: Vec<u32>,
    /// The queries as bf16 bits, where the scores are bf16 products.
    q16: Vec<u16>,
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

/// At most this many query rows (tokens x heads) take the split-positions path: a decode
/// step of V3's 128 heads, or two tokens of a speculative check.
const SPLIT_ROWS: usize = 256;
/// Cached positions per tile of the split path: 64 rows of 576 f32 are 147 KB, which stay
/// in L2 between the two products.
const TILE: usize = 64;
/// The same on AMX tiles over a bf16 cache: 128 rows of 576 are 147 KB too, and each of
/// the output product's tiles is loaded and stored once for twice the positions.
const AMX_TILE: usize = simd::AMX_PV_POSITIONS;
// a tile's offsets live in arrays of AMX_TILE
const _: () = assert!(AMX_TILE >= TILE);

pub fn mla_attention(level: Level, pool: &ThreadPool, a: &MlaAttention<'_>, out: &mut [f32]) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let row = r + p;
    let tokens = a.q_pe.len() / (h * p);
    let rows = tokens * h;
    assert!(out.len() >= rows * r && a.q_latent.len() >= rows * r);
    if rows == 0 {
        return;
    }
    if let KvRows::Q8(f) = a.kv
        && simd::has_amx(level)
        && rows > SPLIT_ROWS
    {
        // a prefill over an 8-bit cache on AMX: the sequence's rows converted to bf16 once
        // (what a decode step does a tile at a time), then attended over as a bf16 cache
        return FLAT.with(|fl| {
            let mut fl = fl.borrow_mut();
            let (rows16, offs) = &mut *fl;
            let len = a.start_pos + tokens;
            offs.clear();
            offs.extend((0..len).map(|j| a.row_offset(j)));
            rows16.resize(len * row, 0);
            simd::q8_rows_to_bf16(level, &f, offs, rows16);
            let flat = MlaAttention {
                kv: KvRows::Bf16(rows16),
                blocks: &[0],
                block_size: len,
                ..*a
            };
            mla_attention(level, pool, &flat, out)
        });
    }
    QUERY.with(|q| {
        let mut q = q.borrow_mut();
        if q.len() < rows * row {
            q.resize((rows * row).next_power_of_two(), 0.0);
        }
        // a bf16 (or 8-bit) cache's scores are bf16 products, as the bf16 dot instruction
        // makes them: every level rounds the queries alike, so all agree to f32 rounding
        let round = !matches!(a.kv, KvRows::F32(_));
        let fill = |i0: usize, q: &mut [f32]| {
            for (i, qi) in (i0..).zip(q.chunks_exact_mut(row)) {
                qi[..r].copy_from_slice(&a.q_latent[i * r..(i + 1) * r]);
                qi[r..].copy_from_slice(&a.q_pe[i * p..(i + 1) * p]);
                if round {
                    qi.iter_mut()
                        .for_each(|v| *v = f32::from_bits((crate::bf16_bits(*v) as u32) << 16));
                }
            }
        };
        let q = &mut q[..rows * row];
        if rows < 64 {
            fill(0, q);
        } else {
            // a prefill's rows over the pool (one thread filled them while the rest waited)
            let dst = Disjoint::new(q);
            pool.for_ranges(rows, 1, &|rg| {
                // SAFETY: rows rg are this range's alone.
                fill(rg.start, unsafe {
                    dst.slice(rg.start * row, rg.len() * row)
                })
            });
        }
        let q = &q[..];
        if level != Level::Scalar && rows <= SPLIT_ROWS {
            return split_positions(level, pool, a, q, out);
        }
        if simd::has_amx(level) && matches!(a.kv, KvRows::Bf16(_)) && r.is_multiple_of(16) {
            return amx_prefill(level, pool, a, q, out);
        }
        match a.kv {
            KvRows::F32(kv) => two_pass(level, pool, a, kv, q, out),
            // the two-pass form reads f32 panels: widen this sequence's rows once, in
            // position order
            KvRows::Bf16(_) | KvRows::Q8(_) => WIDE.with(|w| {
                let mut w = w.borrow_mut();
                let (wide, ids) = &mut *w;
                let len = a.start_pos + tokens;
                wide.resize(len * row, 0.0);
                if let KvRows::Q8(f) = a.kv {
                    // an 8-bit cache's rows straight to f32, by vector where there is one
                    FLAT.with(|fl| {
                        let offs = &mut fl.borrow_mut().1;
                        offs.clear();
                        offs.extend((0..len).map(|j| a.row_offset(j)));
                        simd::q8_rows_to_f32(level, &f, offs, wide);
                    });
                } else {
                    for (j, dst) in wide.chunks_exact_mut(row).enumerate() {
                        a.kv.read(a.row_offset(j), dst);
                    }
                }
                ids.clear();
                ids.push(0);
                let flat = MlaAttention {
                    kv: KvRows::F32(wide),
                    blocks: ids,
                    block_size: len,
                    ..*a
                };
                two_pass(level, pool, &flat, wide, q, out)
            }),
        }
    });
}

/// The AMX prefill's operands (see [`amx_prefill`]).
struct Tiles {
    /// The queries as bf16 rows, padded to 32 values and to whole tiles of 16 rows.
    q16: Vec<u16>,
    /// A block of cached rows as the tiles' B side of the scores:
    /// `[positions / 16][k / 2][16][2]`.
    keys: Vec<u16>,
    /// Their latent part as the B side of the output: `[r / 16][positions / 2][16][2]`.
    values: Vec<u16>,
    /// Per query row, the running maximum and sum of its softmax over the blocks so far.
    ml: Vec<f32>,
}

thread_local! {
    static TILES: RefCell<Tiles> = const {
        RefCell::new(Tiles {
            q16: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            ml: Vec::new(),
        })
    };
    /// A query block's probabilities as bf16 rows.
    static P16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
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

/// Query rows a chunk of the AMX prefill takes: two tiles of 16, so each key tile loaded
/// serves two tile products.
const AMX_QUERY_ROWS: usize = 32;

/// Cached positions the AMX prefill packs at a time (a multiple of 32): their keys and
/// values as tiles take 1.1 MB at V3's widths, whatever the context's length.
const AMX_KV_BLOCK: usize = 512;

/// Prefill attention over a bf16 cache on AMX tiles (`Level::Amx`): the two products of
/// the two-pass form as bf16 tile products, the scores with the query rows as the tiles' A
/// side and the cached rows packed as B, the output with the probabilities (rounded to
/// bf16) as A and the latents packed as B. A bf16 cache already rounds keys and values, and
/// its scores are bf16 products at every level; this path also rounds the probabilities,
/// as llama.cpp's f16 attention does.
///
/// The cache is packed [`AMX_KV_BLOCK`] positions at a time, and every query block that
/// sees a block attends over it before the next is packed (so what is packed stays in L2
/// and its size does not grow with the context): each block's softmax is merged into the
/// rows' outputs by its maximum and sum, as flash attention does. Per query block, only
/// the positions its last row sees are scored.
fn amx_prefill(level: Level, pool: &ThreadPool, a: &MlaAttention<'_>, q: &[f32], out: &mut [f32]) {
    let (h, r, p) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
    let KvRows::Bf16(kv) = a.kv else {
        unreachable!("amx_prefill takes a bf16 cache")
    };
    let row = r + p;
    let rows = q.len() / row;
    let tokens = rows / h;
    let len = a.start_pos + tokens;
    let kp = row.next_multiple_of(32);
    let kb = AMX_KV_BLOCK;
    let rows16 = rows.next_multiple_of(16);
    TILES.with(|t| {
        let t = &mut *t.borrow_mut();
        // the queries are already rounded to bf16: their top halves are exact
        t.q16.clear();
        t.q16.resize(rows16 * kp, 0);
        let qd = Disjoint::new(&mut t.q16[..]);
        pool.for_ranges(rows, 1, &|rg| {
            // SAFETY: rows rg are this range's alone.
            let q16 = unsafe { qd.slice(rg.start * kp, rg.len() * kp) };
            for (dst, src) in q16
                .chunks_exact_mut(kp)
                .zip(q[rg.start * row..].chunks_exact(row))
            {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (v.to_bits() >> 16) as u16;
                }
            }
        });
        // every value of both is written per block below (zeros past the context's end)
        t.keys.resize(kb * kp, 0);
        t.values.resize(r * kb, 0);
        t.ml.clear();
        t.ml.resize(2 * rows, 0.0);
        let dst = Disjoint::new(out);
        let qb = AMX_QUERY_ROWS;
        for b0 in (0..len).step_by(kb) {
            let bn = kb.min(len - b0);
            let (kd, vd) = (
                Disjoint::new(&mut t.keys[..]),
                Disjoint::new(&mut t.values[..]),
            );
            pool.for_chunks(kb / 32, &|c| {
                let group = simd::KvGroup {
                    rows: std::array::from_fn(|i| {
                        let j = 32 * c + i;
                        (j < bn).then(|| &kv[a.row_offset(b0 + j)..a.row_offset(b0 + j) + row])
                    }),
                    r,
                    kp,
                    kb,
                };
                // SAFETY: positions 32c..32c + 32's places are this chunk's alone, inside
                // the buffers sized above.
                unsafe {
                    simd::amx_pack_kv(
                        level,
                        &group,
                        kd.ptr().add(32 * c * kp),
                        vd.ptr().add(16 * 32 * c),
                    )
                };
            });
            let (q16, keys, values) = (&t.q16[..], &t.keys[..], &t.values[..]);
            let mld = Disjoint::new(&mut t.ml[..]);
            pool.for_chunks_scratch(rows.div_ceil(qb), qb * (kb + r), &|c, scratch| {
                let (q0, qn) = (c * qb, qb.min(rows - c * qb));
                let qn16 = qn.next_multiple_of(16);
                // the positions of this block the chunk's last row sees
                let seen = (a.start_pos + (q0 + qn - 1) / h + 1).saturating_sub(b0);
                if seen == 0 {
                    return;
                }
                let sn = seen.min(bn);
                let (n16, n32) = (sn.next_multiple_of(16), sn.next_multiple_of(32));
                let (s, staged) = scratch.split_at_mut(qb * kb);
                let scores = simd::AmxBf16Gemm {
                    w: simd::u16_bytes(&q16[q0 * kp..(q0 + qn16) * kp]),
                    rb: 2 * kp,
                    rows: qn16,
                    k: kp,
                    acts: keys,
                    acts_k: kp,
                    n: n16,
                    m: n32,
                    r0: 0,
                    rows_out: true,
                };
                // SAFETY: s holds qn16 rows of n32 scores.
                unsafe { simd::amx_bf16_gemm(level, &scores, s.as_mut_ptr()) };
                // SAFETY: rows q0..q0 + qn's maxima and sums are this chunk's alone.
                let ml = unsafe { mld.slice(2 * q0, 2 * qn) };
                // per row, what its outputs so far and this block's are weighed by
                let mut weights = [(0f32, 0f32); AMX_QUERY_ROWS];
                for (i, (mli, w)) in ml.chunks_exact_mut(2).zip(&mut weights).enumerate() {
                    let visible = (a.start_pos + (q0 + i) / h + 1).saturating_sub(b0).min(sn);
                    let si = &mut s[i * n32..(i + 1) * n32];
                    let (mb, lb) = simd::softmax_row(level, si, visible, a.scale);
                    if visible == 0 {
                        // nothing of this block is visible to the row: keep what it has
                        *w = (1.0, 0.0);
                        continue;
                    }
                    // every row sees position 0, so its first block starts the sums
                    let (m, l) = if b0 == 0 { (mb, 0.0) } else { (mli[0], mli[1]) };
                    let top = m.max(mb);
                    let (old, new) = (l * (m - top).exp(), lb * (mb - top).exp());
                    let total = old + new;
                    (mli[0], mli[1]) = (top, total);
                    *w = (old / total, new / total);
                }
                P16.with(|p16| {
                    let mut p16 = p16.borrow_mut();
                    p16.clear();
                    simd::round_bf16(level, &s[..qn * n32], &mut p16);
                    p16.resize(qn16 * n32, 0);
                    let o = simd::AmxBf16Gemm {
                        w: simd::u16_bytes(&p16),
                        rb: 2 * n32,
                        rows: qn16,
                        k: n32,
                        acts: values,
                        acts_k: kb,
                        n: r,
                        m: r,
                        r0: 0,
                        rows_out: true,
                    };
                    // SAFETY: staged holds qn16 rows of r outputs.
                    unsafe { simd::amx_bf16_gemm(level, &o, staged.as_mut_ptr()) };
                });
                // SAFETY: query rows q0..q0 + qn are this chunk's alone.
                let o = unsafe { dst.slice(q0 * r, qn * r) };
                for ((oi, si), &(wo, wn)) in o
                    .chunks_exact_mut(r)
                    .zip(staged.chunks_exact(r))
                    .zip(&weights)
                {
                    if b0 == 0 {
                        // the first block overwrites (out is uninitialised)
                        oi.copy_from_slice(si);
                    } else if wn != 0.0 {
                        oi.iter_mut()
                            .zip(si)
                            .for_each(|(o, &v)| *o = wo * *o + wn * v);
                    }
                }
            });
        }
    });
}

/// Query blocks over threads, each attending with [`attend`] over the whole cache.
fn two_pass(
    level: Level,
    pool: &ThreadPool,
    a: &MlaAttention<'_>,
    kv: &[f32],
    q: &[f32],
    out: &mut [f32],
) {
    let (h, r) = (a.n_heads, a.kv_lora_rank);
    let row = r + a.rope_dim;
    let rows = q.len() / row;
    let tokens = rows / h;
    // Query blocks: one per thread for a decode step (each block reads the whole
    // cache once, so fewer is better), a whole number of 4-row tiles, at most 64 rows.
    let per = rows
        .div_ceil(pool.threads())
        .clamp(4, 64)
        .next_multiple_of(4);
    let dst = Disjoint::new(out);
    // scores of one chunk: `per` rows by every position the sequence's blocks hold,
    // rounded up so a sequence growing a token per step re-sizes once per doubling
    let len = a.start_pos + tokens;
    let scratch = (per * len.max(a.blocks.len() * a.block_size)).next_power_of_two();
    pool.for_chunks_scratch(rows.div_ceil(per), scratch, &|c, scores| {
        let qr = c * per..((c + 1) * per).min(rows);
        // SAFETY: query rows qr's outputs belong to this chunk alone.
        let o = unsafe { dst.slice(qr.start * r, qr.len() * r) };
        attend(
            level,
            a,
            kv,
            &q[qr.start * row..qr.end * row],
            qr.start,
            o,
            scores,
        );
    });
}

/// Query rows `first..first + q.len() / row` against their causal prefix of the cache.
#[allow(clippy::too_many_arguments)]
fn attend(
    level: Level,
    a: &MlaAttention<'_>,
    kv: &[f32],
    q: &[f32],
    first: usize,
    o: &mut [f32],
    scores: &mut [f32],
) {
    let (h, r) = (a.n_heads, a.kv_lora_rank);
    let row = r + a.rope_dim;
    let n = q.len() / row;
    let last_token = (first + n - 1) / h;
    let len = a.start_pos + last_token + 1; // keys the last query row may see
    let bs = a.block_size;
    {
        let s = &mut scores[..n * len];
        // S = Q · KVᵀ, block by block of the cache
        for (b, &blk) in a.blocks.iter().enumerate().take(len.div_ceil(bs)) {
            let j0 = b * bs;
            let nb = bs.min(len - j0);
            let base = blk as usize * bs * row;
            let g = GemmPanel {
                panel: &kv[base..base + nb * row],
                rows: nb,
                k: row,
                x: q,
                n,
                m: len,
                r0: j0,
            };
            // SAFETY: `s` holds n rows of `len` scores.
            unsafe { simd::gemm_panel(level, &g, s.as_mut_ptr()) };
        }
        // causal mask, scale, softmax
        for i in 0..n {
            let visible = a.start_pos + (first + i) / h + 1;
            simd::softmax_row(level, &mut s[i * len..(i + 1) * len], visible, a.scale);
        }
        // O = P · C_kv (the latent half of each cached row)
        o.fill(0.0);
        for (b, &blk) in a.blocks.iter().enumerate().take(len.div_ceil(bs)) {
            let j0 = b * bs;
            let nb = bs.min(len - j0);
            let base = blk as usize * bs * row;
            let pv = PvBlock {
                p: s,
                ld_p: len,
                j0,
                nj: nb,
                v: &kv[base..base + nb * row],
                ld_v: row,
                n,
                width: r,
            };
            simd::pv_accumulate(level, &pv, o);
        }
    }
}

/// The flash-decoding form (see the module's doc): tiles of positions over threads, query
/// rows in lanes.
fn split_positions(
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
    let tile = if amx { AMX_TILE } else { TILE };
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
            q16.extend(q.iter().map(|&v| (v.to_bits() >> 16) as u16));
        }
        let q16 = &q16[..];
        // without a bf16 dot (AVX2), each tile is widened to f32 once for every query row,
        // and the scores broadcast its values against the queries transposed
        let transposed = !amx && simd::has_scores_qt(level);
        qt.clear();
        if transposed {
            qt.resize(row * lanes, 0.0);
            for (i, qi) in q.chunks_exact(row).enumerate() {
                for (d, &v) in qi.iter().enumerate() {
                    qt[d * lanes + i] = v;
                }
            }
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
                        prefetch: tnext,
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

use crate::matrix::Matrix;

/// One layer of the latent cache as stored: f32, or bf16 bits (`--cache-type bf16`: half
/// the bytes to keep and to read per decoded token; each latent rounded to bf16 once, when
/// it is written, and widened exactly wherever it is read).
#[derive(Clone, Copy, Debug)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
    /// The 8-bit cache ([`crate::kv_q8`]): attended over as the bf16 rows it converts to
    /// exactly.
    Q8(crate::kv_q8::Q8Rows<'a>),
}

impl KvRows<'_> {
    /// Values held (not bytes).
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32(v) => v.len(),
            KvRows::Bf16(v) => v.len(),
            KvRows::Q8(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `at..at + out.len()` as f32 (for the 8-bit cache, within one row).
    pub fn read(&self, at: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            KvRows::F32(v) => out.copy_from_slice(&v[at..at + out.len()]),
            KvRows::Bf16(v) => {
                for (o, &b) in out.iter_mut().zip(&v[at..at + n]) {
                    *o = loader::bf16_to_f32(b);
                }
            }
            KvRows::Q8(f) => {
                // within one row
                let (r, p) = (f.r, f.p);
                let col = at % (r + p);
                assert!(col + n <= r + p, "an 8-bit cache is read a row at a time");
                let b = f.byte_offset(at);
                let bytes = &f.bytes[b..b + crate::kv_q8::row_bytes(r, p)];
                for (i, o) in (col..).zip(out.iter_mut()) {
                    *o = loader::bf16_to_f32(crate::kv_q8::value(bytes, r, i));
                }
            }
        }
    }
}

/// One sequence's slice of an absorbed-MLA attention call.
///
/// Query `t` sits at position `start_pos + t` and attends to cache rows `0..=start_pos + t`.
/// Scores are `scale * (q_latent . c_kv + q_pe . k_pe)`; the output is the softmax-weighted
/// sum of `c_kv`, still in latent space (the caller applies `wkv_b`'s value half after).
pub struct MlaAttention<'a> {
    /// [tokens, n_heads, kv_lora_rank]: q_nope with wkv_b's key half folded in
    pub q_latent: &'a [f32],
    /// [tokens, n_heads, rope_dim]: roped
    pub q_pe: &'a [f32],
    /// One layer of the paged latent cache: [blocks, block_size, kv_lora_rank + rope_dim],
    /// per token the normalised c_kv then the roped k_pe.
    pub kv: KvRows<'a>,
    /// This sequence's blocks, in position order: position j is row `j % block_size` of
    /// block `blocks[j / block_size]`.
    pub blocks: &'a [u32],
    pub block_size: usize,
    pub n_heads: usize,
    pub kv_lora_rank: usize,
    pub rope_dim: usize,
    pub start_pos: usize,
    pub scale: f32,
}

impl MlaAttention<'_> {
    /// Where position `pos`'s cached row starts in `kv`.
    pub fn row_offset(&self, pos: usize) -> usize {
        let bs = self.block_size;
        (self.blocks[pos / bs] as usize * bs + pos % bs) * (self.kv_lora_rank + self.rope_dim)
    }
}

/// Which rows of a matrix each head's weight is, for [`Backend::matmul_heads`]: head `g`
/// takes rows `first + g * stride .. first + g * stride + rows`.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub count: usize,
    pub first: usize,
    pub stride: usize,
    pub rows: usize,
}

/// One `y = x · Wᵀ` product, as `head_by_head` runs it per head.
pub type Product<'a> = dyn FnMut(&[f32], &Matrix, &mut [f32]) + 'a;

/// `matmul_heads` one head at a time: gather head `g`'s inputs into `xg` (`[n, w.cols]`),
/// run `product` with its rows of `w` into `yg` (`[n, heads.rows]`), scatter `yg` into `y`.
/// For backends whose one product already fills the machine (and the many-token path).
pub fn head_by_head(
    x: &[f32],
    w: &Matrix,
    heads: Heads,
    y: &mut [f32],
    xg: &mut [f32],
    yg: &mut [f32],
    product: &mut Product<'_>,
) {
    per_head(
        x,
        y,
        heads,
        (w.cols, heads.rows),
        xg,
        yg,
        &mut |g, xg, yg| {
            product(
                xg,
                &w.rows_view(heads.first + g * heads.stride, heads.rows),
                yg,
            )
        },
    );
}

/// `matmul_t_heads` one head at a time, as [`head_by_head`] runs `matmul_heads`: `xg` is
/// `[n, heads.rows]`, `yg` `[n, w.cols]`, and `product` is the transposed one.
pub fn head_by_head_t(
    x: &[f32],
    w: &Matrix,
    heads: Heads,
    y: &mut [f32],
    xg: &mut [f32],
    yg: &mut [f32],
    product: &mut Product<'_>,
) {
    per_head(
        x,
        y,
        heads,
        (heads.rows, w.cols),
        xg,
        yg,
        &mut |g, xg, yg| {
            product(
                xg,
                &w.rows_view(heads.first + g * heads.stride, heads.rows),
                yg,
            )
        },
    );
}

/// `matmul_t_shared` one head at a time: `product` (the transposed one) of all of `x`
/// with head `g`'s rows of `w` into `yg` (`[n, w.cols]`), scattered into `y[n, h, w.cols]`.
pub fn head_by_head_shared(
    x: &[f32],
    w: &Matrix,
    heads: Heads,
    y: &mut [f32],
    yg: &mut [f32],
    product: &mut Product<'_>,
) {
    let (k, m, h) = (heads.rows, w.cols, heads.count);
    let n = x.len() / k.max(1);
    let yg = &mut yg[..n * m];
    for g in 0..h {
        product(x, &w.rows_view(heads.first + g * heads.stride, k), yg);
        for t in 0..n {
            y[(t * h + g) * m..][..m].copy_from_slice(&yg[t * m..(t + 1) * m]);
        }
    }
}

/// One head's product: head index, its gathered inputs, its outputs.
type HeadProduct<'a> = dyn FnMut(usize, &[f32], &mut [f32]) + 'a;

/// Gather each head's `[n, k]` inputs from `x[n, h, k]`, run `f(head, xg, yg)`, scatter its
/// `[n, m]` outputs into `y[n, h, m]`.
fn per_head(
    x: &[f32],
    y: &mut [f32],
    heads: Heads,
    (k, m): (usize, usize),
    xg: &mut [f32],
    yg: &mut [f32],
    f: &mut HeadProduct<'_>,
) {
    let h = heads.count;
    let n = x.len() / (h * k).max(1);
    let (xg, yg) = (&mut xg[..n * k], &mut yg[..n * m]);
    for g in 0..h {
        for t in 0..n {
            xg[t * k..(t + 1) * k].copy_from_slice(&x[(t * h + g) * k..][..k]);
        }
        f(g, xg, yg);
        for t in 0..n {
            y[(t * h + g) * m..][..m].copy_from_slice(&yg[t * m..(t + 1) * m]);
        }
    }
}

/// The model-level operations. Shapes are row-major; `n` is the number of rows (tokens).
pub trait Backend: Send + Sync {
    /// `y[n, w.rows] = x[n, w.cols] · Wᵀ`.
    fn matmul(&self, x: &[f32], w: &Matrix, y: &mut [f32]);

    /// `y[n, w.cols] = x[n, w.rows] · W` (a head's q_nope through wkv_b's key half).
    fn matmul_t(&self, x: &[f32], w: &Matrix, y: &mut [f32]);

    /// Per-head products as one operation: `y[t, g] = x[t, g] · W_gᵀ` for every head `g`,
    /// with `x` `[n, heads.count, w.cols]`, `y` `[n, heads.count, heads.rows]` and `W_g`
    /// the rows of `w` that `heads` names (MLA's absorbed key and value projections).
    fn matmul_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        let (k, m, h) = (w.cols, heads.rows, heads.count);
        let n = x.len() / (h * k).max(1);
        assert!(
            x.len() == n * h * k && y.len() == n * h * m,
            "matmul_heads shapes"
        );
        let (mut xg, mut yg) = (vec![0f32; n * k], vec![0f32; n * m]);
        head_by_head(x, w, heads, y, &mut xg, &mut yg, &mut |x, w, y| {
            self.matmul(x, w, y)
        });
    }

    /// Per-head transposed products as one operation: `y[t, g] = x[t, g] · W_g`, with `x`
    /// `[n, heads.count, heads.rows]`, `y` `[n, heads.count, w.cols]` and `W_g` the rows of
    /// `w` that `heads` names (MLA's absorbed query through wkv_b's key half where kv_b is
    /// stored whole, as Hugging Face checkpoints store it).
    fn matmul_t_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        let (k, m, h) = (heads.rows, w.cols, heads.count);
        let n = x.len() / (h * k).max(1);
        assert!(
            x.len() == n * h * k && y.len() == n * h * m,
            "matmul_t_heads shapes"
        );
        let (mut xg, mut yg) = (vec![0f32; n * k], vec![0f32; n * m]);
        head_by_head_t(x, w, heads, y, &mut xg, &mut yg, &mut |x, w, y| {
            self.matmul_t(x, w, y)
        });
    }

    /// Every head's transposed product of the same rows, side by side: `y[t, g] = x[t] ·
    /// W_g`, with `x` `[n, heads.rows]`, `y` `[n, heads.count, w.cols]` and `W_g` the rows of
    /// `w` that `heads` names (MLA's expanded form: a block of cached latents through each
    /// head's key half). A backend may prepare `x` once for all the heads.
    fn matmul_t_shared(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        let (k, m, h) = (heads.rows, w.cols, heads.count);
        let n = x.len() / k.max(1);
        assert!(
            x.len() == n * k && y.len() == n * h * m,
            "matmul_t_shared shapes"
        );
        let mut yg = vec![0f32; n * m];
        head_by_head_shared(x, w, heads, y, &mut yg, &mut |x, w, y| {
            self.matmul_t(x, w, y)
        });
    }

    /// Two products of the same rows through different weights (MLA's query and
    /// key-value down-projections): `matmul(x, wa, ya)` and `matmul(x, wb, yb)`. A backend
    /// may run them as one operation, preparing `x` once.
    fn matmul_pair(&self, x: &[f32], wa: &Matrix, wb: &Matrix, ya: &mut [f32], yb: &mut [f32]) {
        self.matmul(x, wa, ya);
        self.matmul(x, wb, yb);
    }

    /// Two grouped products of the same rows (the experts' gate and up projections):
    /// `matmul_experts(x, starts, wa, ya)` and `matmul_experts(x, starts, wb, yb)`. A backend
    /// may run them as one operation, preparing `x` once.
    #[allow(clippy::too_many_arguments)]
    fn matmul_experts_pair<'w>(
        &self,
        x: &[f32],
        starts: &[usize],
        wa: &(dyn Fn(usize) -> &'w Matrix + Sync),
        wb: &(dyn Fn(usize) -> &'w Matrix + Sync),
        ya: &mut [f32],
        yb: &mut [f32],
    ) {
        self.matmul_experts(x, starts, wa, ya);
        self.matmul_experts(x, starts, wb, yb);
    }

    /// The routed experts' products as one operation (a grouped matmul): rows
    /// `starts[e]..starts[e + 1]` of `x[rows, k]` go through expert `e`'s weight `w(e)`,
    /// `y[i] = x[i] · w(e)ᵀ`; experts with no rows are not touched.
    fn matmul_experts<'w>(
        &self,
        x: &[f32],
        starts: &[usize],
        w: &(dyn Fn(usize) -> &'w Matrix + Sync),
        y: &mut [f32],
    ) {
        let total = *starts.last().expect("starts has experts + 1 entries");
        if total == 0 {
            return;
        }
        let (k, m) = (x.len() / total, y.len() / total);
        for e in 0..starts.len() - 1 {
            let (a, b) = (starts[e], starts[e + 1]);
            if a < b {
                self.matmul(&x[a * k..b * k], w(e), &mut y[a * m..b * m]);
            }
        }
    }

    /// `out[n, cols] = table[ids[i]]`, widened to f32.
    fn embedding(&self, table: &Matrix, ids: &[u32], out: &mut [f32]);

    /// Per row of `weight.len()` values: `out = x / sqrt(mean(x²) + eps) * weight`.
    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]);

    /// Rotate interleaved pairs `(x[2i], x[2i+1])` of each `cos.len() * 2`-wide head in
    /// `x[heads, 2 * cos.len()]` by the angle whose cosine and sine are given.
    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]);

    /// `gate = silu(gate) * up`, elementwise (SwiGLU).
    fn silu_mul(&self, gate: &mut [f32], up: &[f32]);

    /// In-place softmax over `x`.
    fn softmax(&self, x: &mut [f32]);

    /// Absorbed MLA attention for one sequence; `out[tokens, n_heads, kv_lora_rank]`.
    fn mla_attention(&self, a: &MlaAttention<'_>, out: &mut [f32]);

    /// `f(first, rows)` over runs of whole rows of `out` (`width` values each; `first` is
    /// the run's first row), which a backend may run on its threads: the model's own
    /// per-token work between the operations (gathering, combining, copying rows), which on
    /// one thread left the others idle through a tenth of a long prefill. `f` must make
    /// each row the same whichever run it falls in, and may call only the backend's
    /// row-at-a-time operations (one row's `rms_norm`, `rope`), not its parallel ones.
    fn for_rows(&self, out: &mut [f32], width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        let _ = width;
        f(0, out)
    }

    /// [`Backend::for_rows`] over rows of bf16 values (as `u16` bits).
    fn for_rows16(&self, out: &mut [u16], width: usize, f: &(dyn Fn(usize, &mut [u16]) + Sync)) {
        let _ = width;
        f(0, out)
    }
}

/// `v` rounded to bf16 (to nearest, ties to even; NaN stays NaN), as its bits: as
/// `half::bf16::from_f32`, without a branch, so loops of it vectorize.
#[inline]
pub fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let nan = (b >> 16) as u16 | 0x40;
    if b & 0x7fff_ffff > 0x7f80_0000 {
        nan
    } else {
        rounded
    }
}

/// `x` rounded to bf16 ([`bf16_bits`]) into `out[..x.len()]`.
pub fn round_bf16_into(x: &[f32], out: &mut [u16]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = bf16_bits(v);
    }
}

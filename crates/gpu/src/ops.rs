//! The kernels' `Backend` trait on the GPU: each operation one job (upload, dispatches,
//! read-back), on the CPU backend where the GPU cannot take it or it is too small to pay.

use kernels::{Backend, Heads, Matrix, MlaAttention};

use crate::GpuBackend;
use crate::job::{Job, Kernel, grid};
use crate::matmul::{ONE_HEAD, kind};
use crate::profile::count;

/// `x[n, h, k]` (token-major) as `[h, n, k]`.
fn head_major(x: &[f32], n: usize, h: usize, k: usize) -> Vec<f32> {
    let mut xh = vec![0f32; x.len()];
    for t in 0..n {
        for g in 0..h {
            xh[(g * n + t) * k..][..k].copy_from_slice(&x[(t * h + g) * k..][..k]);
        }
    }
    xh
}

/// `yh[h, n, m]` (head-major) into `y[n, h, m]`.
fn token_major(yh: &[f32], n: usize, h: usize, m: usize, y: &mut [f32]) {
    for t in 0..n {
        for g in 0..h {
            y[(t * h + g) * m..][..m].copy_from_slice(&yh[(g * n + t) * m..][..m]);
        }
    }
}

impl GpuBackend {
    fn gpu_matmul(&self, x: &[f32], w: &Matrix, kind: u32, y: &mut [f32]) {
        let n = x.len() / w.cols;
        let wb = self.weight(w);
        let mut job = self.job();
        let xb = job.input(x);
        let yb = job.output(y.len());
        self.record_matmul(
            &mut job,
            w,
            [&wb, &xb, &yb],
            kind,
            (w.rows, n),
            (0, 0, 0),
            ONE_HEAD,
        );
        job.finish(&mut [(&yb, y)]);
        count();
    }

    /// One op of ops.wgsl: binding `a` is `a` (uploaded first where the op reads it, and
    /// read back after), `b` and `c` are read.
    fn row_op(
        &self,
        kernel: &Kernel,
        params: [u32; 4],
        groups: u32,
        (a, reads_a): (&mut [f32], bool),
        [b, c]: [&[f32]; 2],
    ) {
        let mut job = self.job();
        let ab = if reads_a {
            job.input(a)
        } else {
            job.output(a.len())
        };
        let (bb, cb) = (job.input(b), job.input(c));
        let (gx, gy) = grid(groups);
        job.dispatch(kernel, &params, &[&ab, &bb, &cb], (gx, gy, 1));
        job.finish(&mut [(&ab, a)]);
        count();
    }

    /// Per-head products as one job: `x[n, h, k]` goes up head-major (each head's tokens
    /// contiguous), `record` adds the dispatch over inputs and outputs, and `y[n, h, m]`
    /// comes back token-major.
    fn heads_job(
        &self,
        x: &[f32],
        (n, h, k, m): (usize, usize, usize, usize),
        y: &mut [f32],
        record: impl FnOnce(&mut Job<'_>, &wgpu::Buffer, &wgpu::Buffer),
    ) {
        let xh = head_major(x, n, h, k);
        let mut job = self.job();
        let xb = job.input(&xh);
        let yb = job.output(y.len());
        record(&mut job, &xb, &yb);
        let mut yh = vec![0f32; y.len()];
        job.finish(&mut [(&yb, &mut yh)]);
        token_major(&yh, n, h, m, y);
        count();
    }
}

impl Backend for GpuBackend {
    fn matmul(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        let _t = self.timer("matmul");
        let (m, k) = (w.rows, w.cols);
        assert!(
            k > 0 && x.len().is_multiple_of(k) && y.len() == x.len() / k * m,
            "matmul shapes: x {} y {} for [{m}, {k}]",
            x.len(),
            y.len()
        );
        match self.matmul_kind(w, x.len() / k, y.len()) {
            Some(kind) if self.fits(x.len()) => self.gpu_matmul(x, w, kind, y),
            _ => self.cpu.matmul(x, w, y),
        }
    }

    fn matmul_t(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        let _t = self.timer("matmul_t");
        let (m, k) = (w.rows, w.cols);
        let n = x.len() / m.max(1);
        assert!(
            m > 0 && x.len() == n * m && y.len() == n * k,
            "matmul_t shapes: x {} y {} for [{m}, {k}]",
            x.len(),
            y.len()
        );
        let Some(kind) = self
            .matmul_kind(w, n, y.len())
            .filter(|_| self.fits(x.len()))
        else {
            return self.cpu.matmul_t(x, w, y);
        };
        let wb = self.weight(w);
        let mut job = self.job();
        let xb = job.input(x);
        let yb = job.output(y.len());
        let (params, scales) = self.matmul_params(w, kind, m, n, [0, 0, 0]);
        job.dispatch(
            &self.k.matmul_t,
            &params,
            &[&wb, &xb, &yb, &scales],
            ((k as u32).div_ceil(64), n as u32, 1),
        );
        job.finish(&mut [(&yb, y)]);
        count();
    }

    fn matmul_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        let _t = self.timer("matmul_heads");
        let (k, m, h) = (w.cols, heads.rows, heads.count);
        let n = x.len() / (h * k).max(1);
        assert!(
            x.len() == n * h * k && y.len() == n * h * m,
            "matmul_heads shapes"
        );
        let Some(kind) = self
            .matmul_kind(w, n, y.len())
            .filter(|_| self.fits(x.len()))
        else {
            return self.cpu.matmul_heads(x, w, heads, y);
        };
        let wb = self.weight(w);
        // every head in one dispatch
        self.heads_job(x, (n, h, k, m), y, |job, xb, yb| {
            self.record_matmul(
                job,
                w,
                [&wb, xb, yb],
                kind,
                (m, n),
                (0, 0, heads.first),
                [h, n * k, n * m, heads.stride],
            )
        });
    }

    fn matmul_t_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        let _t = self.timer("matmul_t_heads");
        let (k, m, h) = (heads.rows, w.cols, heads.count);
        let n = x.len() / (h * k).max(1);
        assert!(
            x.len() == n * h * k && y.len() == n * h * m,
            "matmul_t_heads shapes"
        );
        let Some(kind) = self
            .matmul_kind(w, n, y.len())
            .filter(|_| self.fits(x.len()))
        else {
            return self.cpu.matmul_t_heads(x, w, heads, y);
        };
        let wb = self.weight(w);
        // every head in one dispatch
        let (mut params, scales) = self.matmul_params(w, kind, k, n, [0, 0, heads.first]);
        params[12..15].copy_from_slice(&[(n * k) as u32, (n * m) as u32, heads.stride as u32]);
        self.heads_job(x, (n, h, k, m), y, |job, xb, yb| {
            job.dispatch(
                &self.k.matmul_t,
                &params,
                &[&wb, xb, yb, &scales],
                ((m as u32).div_ceil(64), n as u32, h as u32),
            )
        });
    }

    fn matmul_experts<'w>(
        &self,
        x: &[f32],
        starts: &[usize],
        w: &(dyn Fn(usize) -> &'w Matrix + Sync),
        y: &mut [f32],
    ) {
        let _t = self.timer("matmul_experts");
        let total = *starts.last().expect("starts has experts + 1 entries");
        if total == 0 {
            return;
        }
        let (k, m) = (x.len() / total, y.len() / total);
        let used: Vec<usize> = (0..starts.len() - 1)
            .filter(|&e| starts[e] < starts[e + 1])
            .collect();
        let all_gpu = self.fits(x.len())
            && used.iter().all(|&e| {
                self.matmul_kind(w(e), starts[e + 1] - starts[e], y.len())
                    .is_some()
            });
        if !all_gpu {
            return self.cpu.matmul_experts(x, starts, w, y);
        }
        // every expert's product in one submission
        let mut job = self.job();
        let xb = job.input(x);
        let yb = job.output(y.len());
        for &e in &used {
            let (a, b) = (starts[e], starts[e + 1]);
            let we = w(e);
            let kind = kind(we.dtype()).expect("checked above");
            let wb = self.weight(we);
            self.record_matmul(
                &mut job,
                we,
                [&wb, &xb, &yb],
                kind,
                (m, b - a),
                (a * k, a * m, 0),
                ONE_HEAD,
            );
        }
        job.finish(&mut [(&yb, y)]);
        count();
    }

    fn embedding(&self, table: &Matrix, ids: &[u32], out: &mut [f32]) {
        let _t = self.timer("embedding");
        self.cpu.embedding(table, ids, out)
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let _t = self.timer("rms_norm");
        let d = weight.len();
        let rows = x.len() / d.max(1);
        if d == 0 || rows == 0 || !self.row_op_on_gpu(x.len()) {
            return self.cpu.rms_norm(x, weight, eps, out);
        }
        let params = [d as u32, rows as u32, eps.to_bits(), 0];
        self.row_op(
            &self.k.rms_norm,
            params,
            rows as u32,
            (out, false),
            [x, weight],
        );
    }

    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let _t = self.timer("rope");
        let width = 2 * cos.len();
        let heads = x.len() / width.max(1);
        if heads == 0 || !self.row_op_on_gpu(x.len()) {
            return self.cpu.rope(x, cos, sin);
        }
        let params = [width as u32, heads as u32, 0, 0];
        let pairs = (heads * cos.len()) as u32;
        self.row_op(
            &self.k.rope,
            params,
            pairs.div_ceil(256),
            (x, true),
            [cos, sin],
        );
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        let _t = self.timer("silu_mul");
        if !self.row_op_on_gpu(gate.len()) {
            return self.cpu.silu_mul(gate, up);
        }
        let params = [gate.len() as u32, 0, 0, 0];
        let groups = (gate.len() as u32).div_ceil(256);
        self.row_op(&self.k.silu_mul, params, groups, (gate, true), [up, &[]]);
    }

    fn softmax(&self, x: &mut [f32]) {
        let _t = self.timer("softmax");
        if !self.row_op_on_gpu(x.len()) {
            return self.cpu.softmax(x);
        }
        let params = [x.len() as u32, 0, 0, 0];
        self.row_op(&self.k.softmax, params, 1, (x, true), [&[], &[]]);
    }

    fn mla_attention(&self, a: &MlaAttention<'_>, out: &mut [f32]) {
        let _t = self.timer("mla_attention");
        let (h, r, pe) = (a.n_heads, a.kv_lora_rank, a.rope_dim);
        let row = r + pe;
        let tokens = a.q_pe.len() / (h * pe).max(1);
        let rows = tokens * h;
        let len = a.start_pos + tokens;
        if rows == 0 || !self.fits(len * row) || !self.fits(rows * len) || !self.fits(rows * r) {
            return self.cpu.mla_attention(a, out);
        }
        // this sequence's cached rows in position order, as f32 (a bf16 cache widens here)
        let mut kv = vec![0f32; len * row];
        for (j, dst) in kv.chunks_exact_mut(row).enumerate() {
            a.kv.read(a.row_offset(j), dst);
        }
        let mut job = self.job();
        let ql = job.input(&a.q_latent[..rows * r]);
        let qp = job.input(&a.q_pe[..rows * pe]);
        let kvb = job.input(&kv);
        let scores = job.output(rows * len);
        let ob = job.output(rows * r);
        let params = [
            rows as u32,
            h as u32,
            r as u32,
            pe as u32,
            len as u32,
            a.start_pos as u32,
            a.scale.to_bits(),
            0,
        ];
        let (gx, gy) = grid(rows as u32);
        job.dispatch(
            &self.k.mla,
            &params,
            &[&ql, &qp, &kvb, &scores, &ob],
            (gx, gy, 1),
        );
        job.finish(&mut [(&ob, &mut out[..rows * r])]);
        count();
    }
}

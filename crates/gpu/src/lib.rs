//! A GPU backend written once in WGSL and run through wgpu: Vulkan (Linux, Windows; Mesa's
//! lavapipe where there is no GPU), Metal, DX12, and WebGPU in the browser. It implements the
//! kernels' `Backend` trait, so the model runs on it unchanged.
//!
//! On the GPU: the matmuls (plain, transposed, per head, and the routed experts grouped into
//! one submission) over f32, bf16, f16, Q8_0, Q5_0, Q4_K, Q6_K and FP8 e4m3 (with its block
//! scales) weights read in their stored encoding and uploaded once; rms_norm, rope, SwiGLU,
//! softmax, and absorbed MLA attention over the sequence's latent cache rows. Activations
//! stay f32 (the CPU's int8 products quantize them; this backend does not). The embedding
//! gather, anything larger than one binding, and row-wise ops too small to pay for a round
//! trip ([`SMALL_OP`]) run on the CPU backend it wraps.
//!
//! Each operation is one submission and one read-back: the trait hands over host slices, so
//! activations cross the bus at every operation. That bounds what this shape can reach on a
//! real GPU (docs/performance.md has the figures); keeping activations resident needs the
//! trait to speak of device buffers, which is the next step, not this one.

mod job;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use job::{Job, Kernel, Pool, grid};
use kernels::{Backend, CpuBackend, Heads, Matrix, MlaAttention};
use loader::DType;
use wgpu::util::DeviceExt;

/// Why a GPU backend could not start.
#[derive(Debug)]
pub struct GpuError(pub String);

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GpuError {}

/// A tensor's address, first row and row count.
type WeightKey = (usize, usize, usize);
/// The tensor (kept alive) and its rows on the device.
type Uploaded = (Arc<loader::Tensor>, Arc<wgpu::Buffer>);
/// An FP8 scale grid (kept alive) and its copy on the device.
type UploadedScales = (Arc<[f32]>, Arc<wgpu::Buffer>);

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

/// `record_matmul`'s heads argument for a plain product.
const ONE_HEAD: [usize; 4] = [1, 0, 0, 0];

/// Operations run on a GPU in this process so far (every `GpuBackend` together).
static GPU_OPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many operations have run on a GPU in this process.
pub fn gpu_ops() -> usize {
    GPU_OPS.load(std::sync::atomic::Ordering::Relaxed)
}

fn count() {
    GPU_OPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Block until the queue's work is done and `done()` holds (the read-backs asked for have
/// landed). Natively a blocking poll; in the browser WebGPU answers only between turns of
/// the event loop, so this suspends the WebAssembly stack until it has had one
/// (JavaScript Promise Integration: see `web`).
fn wait(device: &wgpu::Device, done: &dyn Fn() -> bool) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("the GPU stopped responding");
        debug_assert!(done());
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        while !done() {
            web::yield_turn();
        }
    }
}

/// Run a future to completion from synchronous code (the adapter and device requests).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    #[cfg(not(target_arch = "wasm32"))]
    {
        pollster::block_on(f)
    }
    #[cfg(target_arch = "wasm32")]
    {
        // the browser's promises settle between turns of its event loop; a settled one
        // makes the future ready at its next poll
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            web::yield_turn();
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod web {
    use wasm_bindgen::prelude::wasm_bindgen;

    #[wasm_bindgen]
    extern "C" {
        /// Suspends until the event loop has turned once. The page supplies it as a
        /// `WebAssembly.Suspending` import (web/worker.js), and calls the exports that reach
        /// the GPU through `WebAssembly.promising`, so this synchronous code can wait for
        /// WebGPU without the model's code becoming async.
        #[wasm_bindgen(js_name = deeprustYieldTurn)]
        pub fn yield_turn();
    }
}

/// Wall time per operation, kept when DEEPRUST_GPU_PROFILE is set and printed to stderr
/// when the backend is dropped: where a token's time goes when every op is a round trip.
type Profile = Mutex<HashMap<&'static str, (u64, std::time::Duration)>>;

struct OpTimer<'a> {
    profile: &'a Profile,
    op: &'static str,
    start: std::time::Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        let mut p = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        let e = p.entry(self.op).or_default();
        e.0 += 1;
        e.1 += self.start.elapsed();
    }
}

struct Kernels {
    /// one token and four rows per workgroup (decode)
    matmul1: Kernel,
    /// four tokens of one row per workgroup
    matmul4: Kernel,
    read_stream: Kernel,
    matmul_t: Kernel,
    rms_norm: Kernel,
    rope: Kernel,
    silu_mul: Kernel,
    softmax: Kernel,
    mla: Kernel,
}

pub struct GpuBackend {
    cpu: CpuBackend,
    device: wgpu::Device,
    queue: wgpu::Queue,
    k: Kernels,
    adapter: String,
    /// Largest buffer one binding may hold; bigger operands stay on the CPU.
    max_binding: u64,
    /// Weights already on the device, by the rows of the tensor they hold; each entry keeps
    /// its tensor alive, so no other tensor can take its address (the key) meanwhile.
    weights: Mutex<HashMap<WeightKey, Uploaded>>,
    /// FP8 scale grids on the device, by the grid's address (each kept alive likewise).
    scales: Mutex<HashMap<WeightKey, UploadedScales>>,
    /// Bound where a shader's binding goes unused.
    placeholder: Arc<wgpu::Buffer>,
    pool: Pool,
    profile: Option<Profile>,
    /// Run the row-wise ops (rms_norm, rope, SwiGLU, softmax) on the GPU at every size;
    /// by default small ones stay on the CPU (see [`SMALL_OP`]).
    every_op: bool,
}

/// Below this many values a row-wise op runs on the CPU backend: its operands live in host
/// memory, so on the GPU it costs a round trip (83 us measured on an H200 through Vulkan,
/// milliseconds through a browser's WebGPU) for what the CPU does in a few microseconds.
pub const SMALL_OP: usize = 1 << 16;

impl Drop for GpuBackend {
    fn drop(&mut self) {
        let Some(p) = &self.profile else { return };
        let p = p.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = p.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
        let total: f64 = rows.iter().map(|r| r.1.1.as_secs_f64()).sum();
        eprintln!(
            "gpu profile ({}): {:.1} ms in ops",
            self.adapter,
            total * 1e3
        );
        for (op, (n, t)) in rows {
            eprintln!(
                "  {op:<16} {n:>8} calls {:>10.1} ms {:>8.1} us/call",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e6 / *n as f64
            );
        }
    }
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBackend({})", self.adapter)
    }
}

/// The shader's code for a weight format, if it reads it.
fn kind(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
        DType::Q8_0 => 3,
        DType::Q4K => 4,
        DType::Q6K => 5,
        DType::Q5_0 => 6,
        DType::F8E4M3 => 7,
        _ => return None,
    })
}

impl GpuBackend {
    /// The first adapter wgpu finds (a software one such as lavapipe included), with the CPU
    /// backend beside it for what does not run on the GPU.
    pub fn new(cpu: CpuBackend) -> Result<GpuBackend, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::all();
        let instance = wgpu::Instance::new(desc);
        let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            GpuError(format!(
                "no GPU adapter (for a CPU one install Mesa's lavapipe): {e}"
            ))
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("deeprust"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError(format!("{}: no device: {e}", info.name)))?;
        // a shader this adapter's compiler rejects is an error here, not zeros later (the
        // browser's WGSL compiler is not wgpu's)
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = |label, src: String| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let mm_src = include_str!("matmul.wgsl");
        let variant = |t: &str, r: &str| mm_src.replace("TOKENS", t).replace("ROWS", r);
        let mm1 = module("matmul1", variant("1u", "4u"));
        let mm4 = module("matmul4", variant("4u", "1u"));
        let ops = module("ops", include_str!("ops.wgsl").into());
        let att = module("attention", include_str!("attention.wgsl").into());
        // each module's storage bindings from 1: read-only or written
        const MM: &[bool] = &[true, true, false, true];
        const OPS: &[bool] = &[false, true, true];
        let k = Kernels {
            matmul1: Kernel::new(&device, &mm1, "matmul", MM),
            matmul4: Kernel::new(&device, &mm4, "matmul", MM),
            matmul_t: Kernel::new(&device, &mm1, "matmul_t", MM),
            read_stream: Kernel::new(&device, &mm1, "read_stream", MM),
            rms_norm: Kernel::new(&device, &ops, "rms_norm", OPS),
            rope: Kernel::new(&device, &ops, "rope", OPS),
            silu_mul: Kernel::new(&device, &ops, "silu_mul", OPS),
            softmax: Kernel::new(&device, &ops, "softmax", OPS),
            mla: Kernel::new(&device, &att, "mla", &[true, true, true, false, false]),
        };
        if let Some(e) = block_on(scope.pop()) {
            return Err(GpuError(format!(
                "{}: the WGSL kernels do not build: {e}",
                info.name
            )));
        }
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let placeholder = Arc::new(device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("placeholder"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }));
        Ok(GpuBackend {
            cpu,
            device,
            queue,
            k,
            // browsers do not name their adapters
            adapter: match info.name.as_str() {
                "" => format!("{:?} adapter, {:?}", info.device_type, info.backend),
                name => format!("{name} ({:?}, {:?})", info.device_type, info.backend),
            },
            max_binding,
            weights: Mutex::new(HashMap::new()),
            scales: Mutex::new(HashMap::new()),
            placeholder,
            pool: Pool::new(max_binding),
            // the clock does not exist in wasm32-unknown-unknown; neither do variables
            profile: std::env::var_os("DEEPRUST_GPU_PROFILE").map(|_| Mutex::default()),
            every_op: false,
        })
    }

    /// Every row-wise op on the GPU whatever its size (for tests of the WGSL kernels).
    pub fn every_op_on_gpu(mut self) -> GpuBackend {
        self.every_op = true;
        self
    }

    /// Whether a row-wise op over `values` values goes to the GPU.
    fn row_op_on_gpu(&self, values: usize) -> bool {
        values > 0 && self.fits(values) && (self.every_op || values >= SMALL_OP)
    }

    /// The adapter in words (name, type, API).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// Whether `matmul(x, w)` runs on the GPU (else on the CPU backend).
    pub fn handles(&self, x: &[f32], w: &Matrix) -> bool {
        let n = x.len() / w.cols.max(1);
        self.matmul_kind(w, n, n * w.rows).is_some() && self.fits(x.len())
    }

    /// Weights on the device so far.
    pub fn uploaded(&self) -> usize {
        self.weights.lock().map_or(0, |w| w.len())
    }

    fn fits(&self, values: usize) -> bool {
        (values as u64) * 4 <= self.max_binding
    }

    fn timer(&self, op: &'static str) -> Option<OpTimer<'_>> {
        self.profile.as_ref().map(|profile| OpTimer {
            profile,
            op,
            start: std::time::Instant::now(),
        })
    }

    fn job(&self) -> Job<'_> {
        Job::new(&self.device, &self.queue, &self.pool)
    }

    /// `w`'s rows on the device, uploaded on first use.
    fn weight(&self, w: &Matrix) -> Arc<wgpu::Buffer> {
        let (bytes, tensor, row0, rows) = w.stored();
        let key = (Arc::as_ptr(tensor) as usize, row0, rows);
        let mut map = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key)
            .or_insert_with(|| {
                // storage buffers hold whole 32-bit words
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
                let buf = self
                    .device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("weight"),
                        contents: &padded,
                        usage: wgpu::BufferUsages::STORAGE,
                    });
                (tensor.clone(), Arc::new(buf))
            })
            .1
            .clone()
    }

    /// The shader's format code when a product of `n` tokens through `w` writing `out`
    /// values runs on the GPU: a format it reads, and every operand within one binding.
    fn matmul_kind(&self, w: &Matrix, n: usize, out: usize) -> Option<u32> {
        let ok = w.rows > 0
            && w.cols > 0
            && n > 0
            && n <= 65_535
            && (w.stored().0.len() as u64) <= self.max_binding
            && self.fits(out)
            // FP8 goes 32 values under one scale at a time
            && w.block_scales().is_none_or(|(_, [_, b1])| b1.is_multiple_of(32) && w.cols.is_multiple_of(32));
        kind(w.dtype()).filter(|_| ok)
    }

    /// The matmul shaders' parameters, and the buffer for their scales binding (FP8's grid,
    /// uploaded once, or a placeholder).
    fn matmul_params(
        &self,
        w: &Matrix,
        kind: u32,
        m: usize,
        n: usize,
        [x_off, y_off, w_row0]: [usize; 3],
    ) -> ([u32; 16], Arc<wgpu::Buffer>) {
        let (_, _, s_row0, _) = w.stored();
        let (scales, s_cols, [b0, b1]) = match w.block_scales() {
            Some((grid, block)) => {
                let key = (Arc::as_ptr(grid) as *const f32 as usize, 0, grid.len());
                let mut map = self.scales.lock().unwrap_or_else(|e| e.into_inner());
                let buf = map
                    .entry(key)
                    .or_insert_with(|| {
                        let bytes: Vec<u8> = grid.iter().flat_map(|v| v.to_le_bytes()).collect();
                        let buf =
                            self.device
                                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                                    label: Some("fp8 scales"),
                                    contents: &bytes,
                                    usage: wgpu::BufferUsages::STORAGE,
                                });
                        (grid.clone(), Arc::new(buf))
                    })
                    .1
                    .clone();
                (buf, w.cols.div_ceil(block[1]), block)
            }
            None => (self.placeholder.clone(), 1, [1, 1]),
        };
        let params = [
            m as u32,
            w.cols as u32,
            n as u32,
            kind,
            w.row_bytes() as u32,
            x_off as u32,
            y_off as u32,
            w_row0 as u32,
            s_row0 as u32,
            s_cols as u32,
            b0 as u32,
            b1 as u32,
            // one head unless the caller sets hx, hy, hw
            0,
            0,
            0,
            0,
        ];
        (params, scales)
    }

    /// Record `y[y_off..] = x[x_off..] · W[w_row0..w_row0 + m]ᵀ` for `n` tokens.
    #[allow(clippy::too_many_arguments)]
    fn record_matmul(
        &self,
        job: &mut Job<'_>,
        w: &Matrix,
        bufs: [&wgpu::Buffer; 3],
        kind: u32,
        (m, n): (usize, usize),
        (x_off, y_off, w_row0): (usize, usize, usize),
        [heads, hx, hy, hw]: [usize; 4],
    ) {
        let (mut params, scales) = self.matmul_params(w, kind, m, n, [x_off, y_off, w_row0]);
        params[12..15].copy_from_slice(&[hx as u32, hy as u32, hw as u32]);
        let bufs = [bufs[0], bufs[1], bufs[2], &*scales];
        // decode: one token and four rows per workgroup; else four tokens of one row; z
        // runs over heads, then token groups
        let (kernel, (gx, gy), gz) = match n {
            1 => (&self.k.matmul1, grid((m as u32).div_ceil(4)), 1),
            _ => (&self.k.matmul4, grid(m as u32), (n as u32).div_ceil(4)),
        };
        job.dispatch(kernel, &params, &bufs, (gx, gy, gz * heads as u32));
    }

    /// The matmul `kind` on the GPU, timed: `reps` products of `x` through `w` in one
    /// submission (the first submission, which uploads `w`, is not timed). For measuring the
    /// shader against the device's memory bandwidth.
    pub fn time_matmul(&self, x: &[f32], w: &Matrix, reps: usize) -> Option<std::time::Duration> {
        let n = x.len() / w.cols;
        let kind = self.matmul_kind(w, n, n * w.rows)?;
        let wb = self.weight(w);
        let run = |reps: usize| {
            let mut job = self.job();
            let xb = job.input(x);
            let yb = job.output(n * w.rows);
            for _ in 0..reps {
                self.record_matmul(
                    &mut job,
                    w,
                    [&wb, &xb, &yb],
                    kind,
                    (w.rows, n),
                    (0, 0, 0),
                    ONE_HEAD,
                );
            }
            let mut one = [0f32];
            let t = std::time::Instant::now();
            job.finish(&mut [(&yb, &mut one)]);
            t.elapsed()
        };
        run(1);
        Some(run(reps))
    }

    /// Device memory read bandwidth in GB/s: `reps` passes of a WGSL kernel that reads a
    /// `bytes`-long buffer word by word across the whole device, in one submission (after
    /// one untimed pass); the ceiling the matmuls' weight streams are measured against.
    pub fn read_bandwidth(&self, bytes: u64, reps: usize) -> f64 {
        let words = (bytes.min(self.max_binding) / 4) as usize;
        let src = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stream"),
            size: words as u64 * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let groups = 16_384u32;
        let run = |reps: usize| {
            let mut job = self.job();
            let x = job.input(&[0.0]);
            let y = job.output(groups as usize * 64);
            let params = [0, words as u32, 0, 0, 0, 0, 0, 0];
            for _ in 0..reps {
                job.dispatch(
                    &self.k.read_stream,
                    &params,
                    &[&src, &x, &y, &self.placeholder],
                    (groups, 1, 1),
                );
            }
            let mut one = [0f32];
            let t = std::time::Instant::now();
            job.finish(&mut [(&y, &mut one)]);
            t.elapsed()
        };
        run(1);
        (words * 4) as f64 * reps as f64 / run(reps).as_secs_f64() / 1e9
    }

    /// Largest buffer one binding may hold, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

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

    /// One op of ops.wgsl over bindings `[a, b, c]`; `out` receives `a` after it ran.
    fn elementwise(
        &self,
        kernel: &Kernel,
        params: [u32; 4],
        groups: u32,
        [a, b, c]: [&[f32]; 3],
        out: &mut [f32],
    ) {
        let mut job = self.job();
        let (ab, bb, cb) = (job.input(a), job.input(b), job.input(c));
        let (gx, gy) = grid(groups);
        job.dispatch(kernel, &params, &[&ab, &bb, &cb], (gx, gy, 1));
        job.finish(&mut [(&ab, out)]);
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
        // head-major, so each head's tokens are contiguous
        let xh = head_major(x, n, h, k);
        let wb = self.weight(w);
        let mut job = self.job();
        let xb = job.input(&xh);
        let yb = job.output(y.len());
        // every head in one dispatch
        self.record_matmul(
            &mut job,
            w,
            [&wb, &xb, &yb],
            kind,
            (m, n),
            (0, 0, heads.first),
            [h, n * k, n * m, heads.stride],
        );
        let mut yh = vec![0f32; y.len()];
        job.finish(&mut [(&yb, &mut yh)]);
        token_major(&yh, n, h, m, y);
        count();
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
            .filter(|_| self.fits(x.len()) && n <= 65_535)
        else {
            return self.cpu.matmul_t_heads(x, w, heads, y);
        };
        // head-major, so each head's tokens are contiguous
        let xh = head_major(x, n, h, k);
        let wb = self.weight(w);
        let mut job = self.job();
        let xb = job.input(&xh);
        let yb = job.output(y.len());
        // every head in one dispatch
        let (mut params, scales) = self.matmul_params(w, kind, k, n, [0, 0, heads.first]);
        params[12..15].copy_from_slice(&[(n * k) as u32, (n * m) as u32, heads.stride as u32]);
        job.dispatch(
            &self.k.matmul_t,
            &params,
            &[&wb, &xb, &yb, &scales],
            ((m as u32).div_ceil(64), n as u32, h as u32),
        );
        let mut yh = vec![0f32; y.len()];
        job.finish(&mut [(&yb, &mut yh)]);
        token_major(&yh, n, h, m, y);
        count();
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
        self.elementwise(&self.k.rms_norm, params, rows as u32, [x, x, weight], out);
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
        let a = x.to_vec();
        self.elementwise(&self.k.rope, params, pairs.div_ceil(256), [&a, cos, sin], x);
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        let _t = self.timer("silu_mul");
        if !self.row_op_on_gpu(gate.len()) {
            return self.cpu.silu_mul(gate, up);
        }
        let params = [gate.len() as u32, 0, 0, 0];
        let a = gate.to_vec();
        let groups = (gate.len() as u32).div_ceil(256);
        self.elementwise(&self.k.silu_mul, params, groups, [&a, up, &[]], gate);
    }

    fn softmax(&self, x: &mut [f32]) {
        let _t = self.timer("softmax");
        if !self.row_op_on_gpu(x.len()) {
            return self.cpu.softmax(x);
        }
        let params = [x.len() as u32, 0, 0, 0];
        let a = x.to_vec();
        self.elementwise(&self.k.softmax, params, 1, [&a, &[], &[]], x);
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
        // this sequence's cached rows in position order
        let bs = a.block_size;
        let mut kv = Vec::with_capacity(len * row);
        for j in 0..len {
            let at = (a.blocks[j / bs] as usize * bs + j % bs) * row;
            kv.extend_from_slice(&a.kv[at..at + row]);
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

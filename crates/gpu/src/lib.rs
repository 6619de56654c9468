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
mod matmul;
mod measure;
mod ops;
mod profile;
mod wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use job::{Job, Kernel, Pool};
use kernels::{CpuBackend, Matrix};
use profile::{OpTimer, Profile};
use wait::block_on;

pub use profile::gpu_ops;

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

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBackend({})", self.adapter)
    }
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
}

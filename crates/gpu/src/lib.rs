//! A GPU backend written once in WGSL and run through wgpu: Vulkan (Linux, Windows; Mesa's
//! lavapipe where there is no GPU), Metal, DX12, and WebGPU in the browser. It implements the
//! kernels' `Backend` trait, so the model runs on it unchanged.
//!
//! This first slice runs the matmuls over f32, bf16, f16, Q8_0, Q4_K and Q6_K weights (read
//! on the GPU in their stored encoding, each uploaded once; activations stay f32, so the
//! block formats are not quantized on the way as the CPU's int8 products quantize them);
//! every other operation, and Q5_0 and FP8 weights, still run on the CPU backend it wraps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kernels::{Backend, CpuBackend, Heads, Matrix, MlaAttention, head_by_head};
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

/// Matmuls run on a GPU in this process so far (every `GpuBackend` together).
static GPU_MATMULS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many matmuls have run on a GPU in this process.
pub fn gpu_matmuls() -> usize {
    GPU_MATMULS.load(std::sync::atomic::Ordering::Relaxed)
}

pub struct GpuBackend {
    cpu: CpuBackend,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    adapter: String,
    /// Largest buffer one binding may hold; bigger weights stay on the CPU.
    max_binding: u64,
    /// Weights already on the device, by the rows of the tensor they hold; each entry keeps
    /// its tensor alive, so no other tensor can take its address (the key) meanwhile.
    weights: Mutex<HashMap<WeightKey, Uploaded>>,
}

impl std::fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBackend({})", self.adapter)
    }
}

impl GpuBackend {
    /// The first adapter wgpu finds (a software one such as lavapipe included), with the CPU
    /// backend beside it for what does not run on the GPU yet.
    pub fn new(cpu: CpuBackend) -> Result<GpuBackend, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::all();
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
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
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("deeprust"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError(format!("{}: no device: {e}", info.name)))?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("matmul"),
            source: wgpu::ShaderSource::Wgsl(include_str!("matmul.wgsl").into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("matmul"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, storage(true)),
                entry(2, storage(true)),
                entry(3, storage(false)),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("matmul"),
            bind_group_layouts: &[Some(&layout)],
            ..Default::default()
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("matmul"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("matmul"),
            compilation_options: Default::default(),
            cache: None,
        });
        Ok(GpuBackend {
            cpu,
            device,
            queue,
            pipeline,
            layout,
            adapter: format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
            max_binding: limits.max_storage_buffer_binding_size as u64,
            weights: Mutex::new(HashMap::new()),
        })
    }

    /// The adapter in words (name, type, API).
    pub fn adapter(&self) -> &str {
        &self.adapter
    }

    /// Whether `matmul(x, w)` runs on the GPU (else on the CPU backend).
    pub fn handles(&self, x: &[f32], w: &Matrix) -> bool {
        self.on_gpu(x, w).is_some()
    }

    /// Weights on the device so far.
    pub fn uploaded(&self) -> usize {
        self.weights.lock().map_or(0, |w| w.len())
    }

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

    fn gpu_matmul(&self, x: &[f32], w: &Matrix, kind: u32, y: &mut [f32]) {
        let (m, k) = (w.rows, w.cols);
        let n = x.len() / k;
        let weight = self.weight(w);
        let row_bytes = w.row_bytes() as u32;
        let params: Vec<u8> = [m as u32, k as u32, n as u32, kind, row_bytes, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let init = |label, contents: &[u8], usage| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage,
                })
        };
        let p = init("params", &params, wgpu::BufferUsages::UNIFORM);
        let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let xbuf = init("x", &xb, wgpu::BufferUsages::STORAGE);
        let size = (y.len() * 4) as u64;
        let ybuf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("y"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("y read"),
            size,
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("matmul"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: p.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: weight.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: xbuf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: ybuf.as_entire_binding(),
                },
            ],
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((m as u32).div_ceil(64), n as u32, 1);
        }
        enc.copy_buffer_to_buffer(&ybuf, 0, &read, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = read.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("the GPU stopped responding");
        let data = slice
            .get_mapped_range()
            .expect("the result buffer maps once done");
        GPU_MATMULS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (o, c) in y.iter_mut().zip(data.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }

    /// Whether this matmul runs on the GPU: a dense format, and within one binding.
    fn on_gpu(&self, x: &[f32], w: &Matrix) -> Option<u32> {
        let kind = match w.dtype() {
            DType::F32 => 0,
            DType::BF16 => 1,
            DType::F16 => 2,
            DType::Q8_0 => 3,
            DType::Q4K => 4,
            DType::Q6K => 5,
            _ => return None,
        };
        let n = x.len() / w.cols.max(1);
        let fits = |bytes: usize| (bytes as u64) <= self.max_binding;
        let ok = w.rows > 0
            && w.cols > 0
            && n > 0
            && n <= 65_535
            && (w.rows as u64).div_ceil(64) <= 65_535
            && fits(w.stored().0.len())
            && fits(x.len() * 4)
            && fits(n * w.rows * 4);
        ok.then_some(kind)
    }
}

impl Backend for GpuBackend {
    fn matmul(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        let (m, k) = (w.rows, w.cols);
        assert!(
            k > 0 && x.len().is_multiple_of(k) && y.len() == x.len() / k * m,
            "matmul shapes: x {} y {} for [{m}, {k}]",
            x.len(),
            y.len()
        );
        match self.on_gpu(x, w) {
            Some(kind) => self.gpu_matmul(x, w, kind, y),
            None => self.cpu.matmul(x, w, y),
        }
    }

    fn matmul_t(&self, x: &[f32], w: &Matrix, y: &mut [f32]) {
        self.cpu.matmul_t(x, w, y)
    }

    fn matmul_heads(&self, x: &[f32], w: &Matrix, heads: Heads, y: &mut [f32]) {
        match self.on_gpu(x, w) {
            // each head's product on the GPU
            Some(_) => {
                let n = x.len() / (heads.count * w.cols).max(1);
                let (mut xg, mut yg) = (vec![0f32; n * w.cols], vec![0f32; n * heads.rows]);
                head_by_head(x, w, heads, y, &mut xg, &mut yg, &mut |x, w, y| {
                    self.matmul(x, w, y)
                });
            }
            None => self.cpu.matmul_heads(x, w, heads, y),
        }
    }

    fn embedding(&self, table: &Matrix, ids: &[u32], out: &mut [f32]) {
        self.cpu.embedding(table, ids, out)
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        self.cpu.rms_norm(x, weight, eps, out)
    }

    fn rope(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        self.cpu.rope(x, cos, sin)
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        self.cpu.silu_mul(gate, up)
    }

    fn softmax(&self, x: &mut [f32]) {
        self.cpu.softmax(x)
    }

    fn mla_attention(&self, a: &MlaAttention<'_>, out: &mut [f32]) {
        self.cpu.mla_attention(a, out)
    }
}

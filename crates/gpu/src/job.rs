//! One submission to the GPU: inputs uploaded, dispatches recorded in order, outputs read
//! back after a single submit and wait. An operation (or a group of them, such as a layer's
//! routed experts) is one job, so it costs one round trip however many dispatches it holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A compiled entry point and the bind group layout wgpu derived for it.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    /// `entry` of `module`, with a uniform at binding 0 and one storage buffer per entry of
    /// `read_only` from binding 1 (an explicit layout: a derived one drops bindings an entry
    /// point does not use, and every op binds the same set).
    pub fn new(
        device: &wgpu::Device,
        module: &wgpu::ShaderModule,
        entry: &str,
        read_only: &[bool],
    ) -> Kernel {
        let buffer = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![buffer(0, wgpu::BufferBindingType::Uniform)];
        for (i, &ro) in read_only.iter().enumerate() {
            entries.push(buffer(
                i as u32 + 1,
                wgpu::BufferBindingType::Storage { read_only: ro },
            ));
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            ..Default::default()
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { pipeline, layout }
    }
}

/// Workgroups for `total` along x and y (each dimension holds at most 65,535; shaders
/// recover the index as `x + y * num_workgroups.x`).
pub fn grid(total: u32) -> (u32, u32) {
    let x = total.clamp(1, 65_535);
    (x, total.div_ceil(x).max(1))
}

/// Buffers kept for reuse between jobs, by size class and usage: creating a buffer (and
/// wgpu's zeroing of it) costs more than a small operation's whole dispatch, so each job
/// takes what it needs here and gives it back once its results are read.
#[derive(Default)]
pub struct Pool {
    free: Mutex<HashMap<(u64, u32), Vec<wgpu::Buffer>>>,
    /// Largest buffer one binding may hold.
    pub max: u64,
}

impl Pool {
    pub fn new(max: u64) -> Pool {
        Pool {
            free: Mutex::default(),
            max,
        }
    }

    fn take(&self, device: &wgpu::Device, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        // powers of two from 256 bytes, so a few sizes serve every shape; never past the
        // binding limit the caller checked its exact size against
        let size = bytes
            .max(256)
            .next_power_of_two()
            .min(self.max.max(bytes))
            .next_multiple_of(4);
        let key = (size, usage.bits());
        let reused = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&key)
            .and_then(Vec::pop);
        reused.unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage,
                mapped_at_creation: false,
            })
        })
    }

    fn give(&self, buffers: Vec<wgpu::Buffer>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        for b in buffers {
            free.entry((b.size(), b.usage().bits()))
                .or_default()
                .push(b);
        }
    }
}

pub struct Job<'a> {
    device: &'a wgpu::Device,
    queue: &'a wgpu::Queue,
    pool: &'a Pool,
    enc: wgpu::CommandEncoder,
    /// Pool buffers this job holds, given back when it finishes.
    taken: Vec<wgpu::Buffer>,
}

/// `v` as the little-endian bytes the shaders read, without a copy.
fn bytes(v: &[f32]) -> &[u8] {
    const _: () = assert!(
        cfg!(target_endian = "little"),
        "the shaders read little-endian"
    );
    // SAFETY: f32 has no padding and every byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl<'a> Job<'a> {
    pub fn new(device: &'a wgpu::Device, queue: &'a wgpu::Queue, pool: &'a Pool) -> Job<'a> {
        let enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        Job {
            device,
            queue,
            pool,
            enc,
            taken: Vec::new(),
        }
    }

    fn take(&mut self, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let b = self.pool.take(self.device, bytes, usage);
        self.taken.push(b.clone());
        b
    }

    /// A storage buffer holding `v` (also writable by shaders and readable back).
    pub fn input(&mut self, v: &[f32]) -> wgpu::Buffer {
        let b = self.take((v.len() * 4) as u64, STORAGE);
        if !v.is_empty() {
            self.queue.write_buffer(&b, 0, bytes(v));
        }
        b
    }

    /// A storage buffer of at least `len` f32 values, of any content: the shader writing it
    /// writes every value that is read back.
    pub fn output(&mut self, len: usize) -> wgpu::Buffer {
        self.take((len * 4) as u64, STORAGE)
    }

    /// Record one dispatch of `kernel` with `params` as its uniform (binding 0) and
    /// `buffers` bound in order from binding 1.
    pub fn dispatch(
        &mut self,
        kernel: &Kernel,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
    ) {
        let mut words = params.to_vec();
        words.resize(params.len().next_multiple_of(4).max(4), 0);
        let raw: Vec<u8> = words.iter().flat_map(|v| v.to_le_bytes()).collect();
        // each dispatch its own: writes land before the submission, not between dispatches
        let uniform = self.take(
            raw.len() as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        self.queue.write_buffer(&uniform, 0, &raw);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let mut pass = self
            .enc
            .begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    /// Submit everything recorded, wait, and copy each buffer's first values into its slice.
    pub fn finish(mut self, reads: &mut [(&wgpu::Buffer, &mut [f32])]) {
        let staging: Vec<wgpu::Buffer> = reads
            .iter()
            .map(|(src, out)| {
                let size = (out.len().max(1) * 4) as u64;
                let dst = self.pool.take(
                    self.device,
                    size,
                    wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                );
                self.enc.copy_buffer_to_buffer(src, 0, &dst, 0, size);
                dst
            })
            .collect();
        self.queue.submit([self.enc.finish()]);
        let mapped = Arc::new(AtomicUsize::new(0));
        for s in &staging {
            let mapped = mapped.clone();
            s.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                r.expect("a result buffer maps once the queue is done");
                mapped.fetch_add(1, Ordering::Release);
            });
        }
        crate::wait::wait(self.device, &|| {
            mapped.load(Ordering::Acquire) == staging.len()
        });
        for ((_, out), s) in reads.iter_mut().zip(&staging) {
            let data = s
                .slice(..)
                .get_mapped_range()
                .expect("a result buffer maps once the queue is done");
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        for s in &staging {
            s.unmap();
        }
        self.pool.give(staging);
        self.pool.give(std::mem::take(&mut self.taken));
    }
}

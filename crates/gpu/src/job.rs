//! One submission to the GPU: inputs uploaded, dispatches recorded in order, outputs read
//! back after a single submit and wait. An operation (or a group of them, such as a layer's
//! routed experts) is one job, so it costs one round trip however many dispatches it holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wgpu::util::DeviceExt;

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

pub struct Job<'a> {
    device: &'a wgpu::Device,
    queue: &'a wgpu::Queue,
    enc: wgpu::CommandEncoder,
}

fn bytes(v: &[f32]) -> Vec<u8> {
    let mut b: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    // a binding holds at least one 32-bit word
    if b.is_empty() {
        b.resize(4, 0);
    }
    b
}

impl<'a> Job<'a> {
    pub fn new(device: &'a wgpu::Device, queue: &'a wgpu::Queue) -> Job<'a> {
        let enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        Job { device, queue, enc }
    }

    /// A storage buffer holding `v` (also writable by shaders and readable back).
    pub fn input(&self, v: &[f32]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: &bytes(v),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            })
    }

    /// A zeroed storage buffer of `len` f32 values.
    pub fn output(&self, len: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
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
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: &raw,
                usage: wgpu::BufferUsages::UNIFORM,
            });
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
                let dst = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                    mapped_at_creation: false,
                });
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
        crate::wait(self.device, &|| {
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
    }
}

// Row-wise operations, each the GPU twin of the CPU backend's (crates/kernels/src/cpu/norm.rs).

struct Params {
    n: u32,     // values of a (rms_norm: per row; rope: per head; others: all)
    rows: u32,  // rows (rms_norm) or heads (rope)
    eps: f32,   // rms_norm's epsilon
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, 256>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// a[row] = b[row] / sqrt(mean(b[row]²) + eps) * c (the weight), one workgroup per row.
@compute @workgroup_size(256)
fn rms_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nw.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.n;
    var ss = 0.0;
    for (var i = lid; i < p.n; i = i + WG) {
        let v = b[base + i];
        ss += v * v;
    }
    let inv = 1.0 / sqrt(reduce_sum(lid, ss) / f32(p.n) + p.eps);
    for (var i = lid; i < p.n; i = i + WG) {
        a[base + i] = c[i] * (b[base + i] * inv);
    }
}

// Interleaved pairs of each p.n-wide head of a rotated by the angle (b = cos, c = sin).
@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = id.x + id.y * nw.x * WG;
    let half = p.n / 2u;
    if (i >= half * p.rows) {
        return;
    }
    let j = i % half;
    let at = (i / half) * p.n + 2u * j;
    let x0 = a[at];
    let x1 = a[at + 1u];
    a[at] = x0 * b[j] - x1 * c[j];
    a[at + 1u] = x0 * c[j] + x1 * b[j];
}

// a = silu(a) * b.
@compute @workgroup_size(256)
fn silu_mul(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = id.x + id.y * nw.x * WG;
    if (i >= p.n) {
        return;
    }
    let g = a[i];
    a[i] = g / (1.0 + exp(-g)) * b[i];
}

// In-place softmax over all p.n values of a, one workgroup.
@compute @workgroup_size(256)
fn softmax(@builtin(local_invocation_index) lid: u32) {
    var m = bitcast<f32>(0xff7fffffu); // -f32::MAX
    for (var i = lid; i < p.n; i = i + WG) {
        m = max(m, a[i]);
    }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var i = lid; i < p.n; i = i + WG) {
        let e = exp(a[i] - m);
        a[i] = e;
        s += e;
    }
    let inv = 1.0 / reduce_sum(lid, s);
    for (var i = lid; i < p.n; i = i + WG) {
        a[i] = a[i] * inv;
    }
}

// Absorbed MLA attention (the GPU twin of crates/kernels/src/cpu/attention.rs): every query
// row (token, head) = [q_latent | q_pe] against the sequence's cached latent rows
// [c_kv | k_pe], gathered in position order. One workgroup per query row: its threads take
// keys in turn for the scores, then latent columns in turn for the weighted sum.

struct Params {
    rows: u32,      // query rows (tokens × heads)
    heads: u32,
    r: u32,         // kv_lora_rank
    pe: u32,        // rope_dim
    len: u32,       // cached positions uploaded (start_pos + tokens)
    start_pos: u32,
    scale: f32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ql: array<f32>;
@group(0) @binding(2) var<storage, read> qp: array<f32>;
@group(0) @binding(3) var<storage, read> kv: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

fn reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = select(red[lid] + red[lid + s], max(red[lid], red[lid + s]), is_max);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn mla(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = wid.x + wid.y * nw.x;
    if (i >= p.rows) {
        return;
    }
    let row = p.r + p.pe;
    let visible = p.start_pos + i / p.heads + 1u;
    let s0 = i * p.len;
    var m = bitcast<f32>(0xff7fffffu); // -f32::MAX
    for (var j = lid; j < visible; j = j + WG) {
        var s = 0.0;
        for (var c = 0u; c < p.r; c = c + 1u) {
            s += ql[i * p.r + c] * kv[j * row + c];
        }
        for (var c = 0u; c < p.pe; c = c + 1u) {
            s += qp[i * p.pe + c] * kv[j * row + p.r + c];
        }
        s *= p.scale;
        scores[s0 + j] = s;
        m = max(m, s);
    }
    m = reduce(lid, m, true);
    var sum = 0.0;
    for (var j = lid; j < visible; j = j + WG) {
        let e = exp(scores[s0 + j] - m);
        scores[s0 + j] = e;
        sum += e;
    }
    let inv = 1.0 / reduce(lid, sum, false);
    // every thread's exponentials, visible to all before the weighted sum
    storageBarrier();
    for (var c = lid; c < p.r; c = c + WG) {
        var o = 0.0;
        for (var j = 0u; j < visible; j = j + 1u) {
            o += scores[s0 + j] * kv[j * row + c];
        }
        out[i * p.r + c] = o * inv;
    }
}

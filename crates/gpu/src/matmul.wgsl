// y[t, r] = Σ_c x[t, c] · W[r, c], W read in its stored encoding: f32 words, or two bf16 or
// f16 halves per 32-bit word (row-major, so a row may start in the middle of a word).

struct Params {
    m: u32,    // rows of W (outputs per token)
    k: u32,    // columns of W (inputs per token)
    n: u32,    // tokens
    kind: u32, // 0 f32, 1 bf16, 2 f16
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn weight(i: u32) -> f32 {
    if (p.kind == 0u) {
        return bitcast<f32>(w[i]);
    }
    let word = w[i / 2u];
    let half = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
    if (p.kind == 1u) {
        return bitcast<f32>(half << 16u);
    }
    return unpack2x16float(half).x;
}

@compute @workgroup_size(64)
fn matmul(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let t = id.y;
    if (r >= p.m || t >= p.n) {
        return;
    }
    var acc = 0.0;
    let wr = r * p.k;
    let xr = t * p.k;
    for (var c = 0u; c < p.k; c = c + 1u) {
        acc = acc + weight(wr + c) * x[xr + c];
    }
    y[t * p.m + r] = acc;
}

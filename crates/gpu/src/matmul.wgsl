// y[t, r] = Σ_c x[t, c] · W[r, c], W read in its stored encoding: f32 words; bf16 or f16
// halves (two per 32-bit word); or GGUF blocks (Q8_0, Q4_K, Q6_K) decoded per value from
// their bytes. Rows are row-major and may start anywhere inside a word.

struct Params {
    m: u32,         // rows of W (outputs per token)
    k: u32,         // columns of W (inputs per token)
    n: u32,         // tokens
    kind: u32,      // 0 f32, 1 bf16, 2 f16, 3 Q8_0, 4 Q4_K, 5 Q6_K
    row_bytes: u32, // bytes of one stored row (block formats)
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn byte_at(i: u32) -> u32 {
    return (w[i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

fn f16_at(i: u32) -> f32 {
    return unpack2x16float(byte_at(i) | (byte_at(i + 1u) << 8u)).x;
}

fn signed_byte(v: u32) -> f32 {
    return f32(i32(v << 24u) >> 24u);
}

// Q8_0: blocks of 32 values in 34 bytes: f16 scale, 32 signed bytes.
fn q8_0(row: u32, c: u32) -> f32 {
    let b = row + (c / 32u) * 34u;
    return f16_at(b) * signed_byte(byte_at(b + 2u + c % 32u));
}

// Q4_K: super-blocks of 256 in 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and
// mins for 8 sub-blocks of 32, then 128 bytes of nibbles (64 values per 32 bytes: low
// nibbles first, then high).
fn q4_k(row: u32, c: u32) -> f32 {
    let b = row + (c / 256u) * 144u;
    let e = c % 256u;
    let j = e / 32u;
    let s = b + 4u;
    var sc: u32;
    var mn: u32;
    if (j < 4u) {
        sc = byte_at(s + j) & 63u;
        mn = byte_at(s + j + 4u) & 63u;
    } else {
        sc = (byte_at(s + j + 4u) & 15u) | ((byte_at(s + j - 4u) >> 6u) << 4u);
        mn = (byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u);
    }
    let qb = byte_at(b + 16u + 32u * (e / 64u) + e % 32u);
    let q = select(qb & 15u, qb >> 4u, (e % 64u) >= 32u);
    return f16_at(b) * f32(sc) * f32(q) - f16_at(b + 2u) * f32(mn);
}

// Q6_K: super-blocks of 256 in 210 bytes: 128 bytes of low nibbles, 64 of high 2-bit
// pairs, 16 signed scales (one per 16 values), f16 d.
fn q6_k(row: u32, c: u32) -> f32 {
    let b = row + (c / 256u) * 210u;
    let e = c % 256u;
    let h = e / 128u;
    let l = e % 32u;
    let part = (e % 128u) / 32u;
    let ql = byte_at(b + 64u * h + 32u * (part % 2u) + l);
    let low = select(ql & 15u, ql >> 4u, part >= 2u);
    let hi = (byte_at(b + 128u + 32u * h + l) >> (2u * part)) & 3u;
    let q = i32(low | (hi << 4u)) - 32;
    return f16_at(b + 208u) * signed_byte(byte_at(b + 192u + e / 16u)) * f32(q);
}

fn weight(r: u32, c: u32) -> f32 {
    switch p.kind {
        case 0u: {
            return bitcast<f32>(w[r * p.k + c]);
        }
        case 3u: {
            return q8_0(r * p.row_bytes, c);
        }
        case 4u: {
            return q4_k(r * p.row_bytes, c);
        }
        case 5u: {
            return q6_k(r * p.row_bytes, c);
        }
        default: {
            let i = r * p.k + c;
            let word = w[i / 2u];
            let half = select(word & 0xffffu, word >> 16u, (i & 1u) == 1u);
            if (p.kind == 1u) {
                return bitcast<f32>(half << 16u);
            }
            return unpack2x16float(half).x;
        }
    }
}

@compute @workgroup_size(64)
fn matmul(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let t = id.y;
    if (r >= p.m || t >= p.n) {
        return;
    }
    var acc = 0.0;
    let xr = t * p.k;
    for (var c = 0u; c < p.k; c = c + 1u) {
        acc = acc + weight(r, c) * x[xr + c];
    }
    y[t * p.m + r] = acc;
}

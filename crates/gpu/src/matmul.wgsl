// Matrix products over a weight read in its stored encoding: f32 words; bf16 or f16 halves
// (two per 32-bit word); GGUF blocks (Q8_0, Q5_0, Q4_K, Q6_K); or FP8 e4m3 bytes with their
// block scales. Rows are row-major and may start anywhere inside a word.
//
// `matmul`: y[t, r] = Σ_c x[t, c] · W[r, c]. A workgroup takes four rows of one token
// (decode: each value of x read serves four rows) or four tokens of one row (the host
// compiles this module twice, setting T and R): its 64 threads stride along the rows
// together (neighbouring threads read neighbouring words, so rows stream through in
// coalesced reads), then sum their partials in workgroup memory. Block formats go a group
// of 32 values at a time, their scales read once per group and their quants a word (four
// values) at a time.
//
// `matmul_t`: y[t, c] = Σ_r x[t, r] · W[r, c], one thread per output column.

struct Params {
    m: u32,         // rows of W
    k: u32,         // columns of W
    n: u32,         // tokens
    kind: u32,      // 0 f32, 1 bf16, 2 f16, 3 Q8_0, 4 Q4_K, 5 Q6_K, 6 Q5_0, 7 FP8 e4m3
    row_bytes: u32, // bytes of one stored row (block formats)
    x_off: u32,     // first value of x this product reads
    y_off: u32,     // first value of y it writes
    w_row0: u32,    // first row of the bound weight that row 0 of this product is
    s_row0: u32,    // FP8: the bound weight's first row in its tensor (the scale grid's rows)
    s_cols: u32,    // FP8: columns of the scale grid
    b0: u32,        // FP8: block rows
    b1: u32,        // FP8: block columns
    // Several heads in one dispatch (workgroup_id.z): head g reads x from x_off + g * hx,
    // writes y from y_off + g * hy, and takes weight rows from w_row0 + g * hw.
    hx: u32,
    hy: u32,
    hw: u32,
    pad: u32,
}

// This invocation's head's offsets (see Params), set first thing by each entry point.
var<private> xo: u32;
var<private> yo: u32;
var<private> wr: u32;

fn select_head(g: u32) {
    xo = p.x_off + g * p.hx;
    yo = p.y_off + g * p.hy;
    wr = p.w_row0 + g * p.hw;
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// FP8's scale_inv grid (one word, unused, for the other formats)
@group(0) @binding(4) var<storage, read> scales: array<f32>;

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
// The 6-bit scale and min of sub-block j of the Q4_K super-block at byte b.
fn q4_k_scale_min(b: u32, j: u32) -> vec2<u32> {
    let s = b + 4u;
    if (j < 4u) {
        return vec2<u32>(byte_at(s + j) & 63u, byte_at(s + j + 4u) & 63u);
    }
    return vec2<u32>(
        (byte_at(s + j + 4u) & 15u) | ((byte_at(s + j - 4u) >> 6u) << 4u),
        (byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u),
    );
}

fn q4_k(row: u32, c: u32) -> f32 {
    let b = row + (c / 256u) * 144u;
    let e = c % 256u;
    let j = e / 32u;
    let sm = q4_k_scale_min(b, j);
    let qb = byte_at(b + 16u + 32u * (e / 64u) + e % 32u);
    let q = select(qb & 15u, qb >> 4u, (e % 64u) >= 32u);
    return f16_at(b) * f32(sm.x) * f32(q) - f16_at(b + 2u) * f32(sm.y);
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

// Q5_0: blocks of 32 in 22 bytes: f16 d, 32 fifth bits, 16 bytes of nibbles (value j low,
// j + 16 high).
fn q5_0(row: u32, c: u32) -> f32 {
    let b = row + (c / 32u) * 22u;
    let j = c % 32u;
    let qb = byte_at(b + 6u + j % 16u);
    let nib = select(qb & 15u, qb >> 4u, j >= 16u);
    let q = nib | (((word_at(b + 2u) >> j) & 1u) << 4u);
    return f16_at(b) * f32(i32(q) - 16);
}

// FP8 e4m3 (bias 7, no infinities) to f32.
fn e4m3(v: u32) -> f32 {
    let e = (v >> 3u) & 15u;
    let m = v & 7u;
    var a: f32;
    if (e == 0u) {
        a = f32(m) * 0.001953125; // 2^-9
    } else {
        a = bitcast<f32>(((e + 120u) << 23u) | (m << 20u));
    }
    return select(a, -a, (v & 0x80u) != 0u);
}

fn fp8_scale(r: u32, c: u32) -> f32 {
    return scales[((p.s_row0 + r) / p.b0) * p.s_cols + c / p.b1];
}

fn weight(r0: u32, c: u32) -> f32 {
    let r = r0 + wr;
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
        case 6u: {
            return q5_0(r * p.row_bytes, c);
        }
        case 7u: {
            return e4m3(byte_at(r * p.k + c)) * fp8_scale(r, c);
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


// A bf16 or f16 half of a 32-bit word as f32.
fn half_value(h: u32) -> f32 {
    if (p.kind == 1u) {
        return bitcast<f32>(h << 16u);
    }
    return unpack2x16float(h).x;
}

// The four bytes from byte i on, for any i (block rows start at even, not always
// word-aligned, offsets).
fn word_at(i: u32) -> u32 {
    let s = 8u * (i % 4u);
    let lo = w[i / 4u];
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (w[i / 4u + 1u] << (32u - s));
}

fn sbyte(word: u32, i: u32) -> f32 {
    return f32(i32(word << (24u - 8u * i)) >> 24u);
}

fn sbytes(q: u32) -> vec4<f32> {
    return vec4<f32>(sbyte(q, 0u), sbyte(q, 1u), sbyte(q, 2u), sbyte(q, 3u));
}

// The four bytes of q as values.
fn bytes4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 255u), f32((q >> 8u) & 255u), f32((q >> 16u) & 255u), f32(q >> 24u));
}

// Bits 0..3 of h, one to the lowest bit of each byte.
fn spread(h: u32) -> u32 {
    return (h & 1u) | (((h >> 1u) & 1u) << 8u) | (((h >> 2u) & 1u) << 16u) | (((h >> 3u) & 1u) << 24u);
}

fn nibbles(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 15u), f32((q >> 8u) & 15u), f32((q >> 16u) & 15u), f32((q >> 24u) & 15u));
}

// Σ of values 32·g .. 32·g + 31 of row r0 of a block format times xs (the same columns of
// x, four to a vector): decoded a word (four values) at a time straight into the products.
fn group_dot(r0: u32, g: u32, xs: ptr<function, array<vec4<f32>, 8>>) -> f32 {
    let row = (r0 + wr) * p.row_bytes;
    let c = 32u * g;
    var sum = 0.0;
    switch p.kind {
        case 3u: {
            // Q8_0: one block of 34 bytes per group
            let b = row + g * 34u;
            let d = f16_at(b);
            for (var i = 0u; i < 8u; i = i + 1u) {
                sum += dot(d * sbytes(word_at(b + 2u + 4u * i)), (*xs)[i]);
            }
        }
        case 4u: {
            // Q4_K: sub-block j of its super-block; nibbles shared with the neighbour
            let b = row + (g / 8u) * 144u;
            let j = g % 8u;
            let sm = q4_k_scale_min(b, j);
            let d = f16_at(b) * f32(sm.x);
            let m = vec4<f32>(f16_at(b + 2u) * f32(sm.y));
            let qs = (b + 16u + 32u * (j / 2u)) / 4u;
            let shift = 4u * (j % 2u);
            for (var i = 0u; i < 8u; i = i + 1u) {
                sum += dot(d * nibbles(w[qs + i] >> shift) - m, (*xs)[i]);
            }
        }
        case 6u: {
            // Q5_0: one block of 22 bytes per group; bytes j hold values j and j + 16
            let b = row + g * 22u;
            let d = f16_at(b);
            let qh = word_at(b + 2u);
            for (var i = 0u; i < 4u; i = i + 1u) {
                let q = word_at(b + 6u + 4u * i);
                let lo = ((q & 0x0f0f0f0fu) | (spread(qh >> (4u * i)) << 4u));
                let hi = (((q >> 4u) & 0x0f0f0f0fu) | (spread(qh >> (16u + 4u * i)) << 4u));
                sum += dot(d * (bytes4(lo) - 16.0), (*xs)[i]);
                sum += dot(d * (bytes4(hi) - 16.0), (*xs)[i + 4u]);
            }
        }
        case 7u: {
            // FP8: 32 bytes in one scale block (blocks are whole groups, checked by the host)
            let b = row + 32u * g;
            let d = fp8_scale(r0 + wr, c);
            for (var i = 0u; i < 8u; i = i + 1u) {
                let q = word_at(b + 4u * i);
                let v = vec4<f32>(e4m3(q & 255u), e4m3((q >> 8u) & 255u), e4m3((q >> 16u) & 255u), e4m3(q >> 24u));
                sum += dot(d * v, (*xs)[i]);
            }
        }
        default: {
            // Q6_K: 32 values of one half and quarter of a 210-byte super-block
            let b = row + (g / 8u) * 210u;
            let gg = g % 8u;
            let h = gg / 4u;
            let part = gg % 4u;
            let d = f16_at(b + 208u);
            let lo = b + 64u * h + 32u * (part % 2u);
            let hi = b + 128u + 32u * h;
            let sc = b + 192u + 8u * h + 2u * part;
            let d0 = d * signed_byte(byte_at(sc));
            let d1 = d * signed_byte(byte_at(sc + 1u));
            for (var i = 0u; i < 8u; i = i + 1u) {
                let ql = (word_at(lo + 4u * i) >> (4u * (part / 2u))) & 0x0f0f0f0fu;
                let qh = (word_at(hi + 4u * i) >> (2u * part)) & 0x03030303u;
                let q = ql | (qh << 4u);
                let v = vec4<f32>(f32(q & 63u), f32((q >> 8u) & 63u), f32((q >> 16u) & 63u), f32(q >> 24u)) - 32.0;
                sum += dot(select(d1, d0, i < 4u) * v, (*xs)[i]);
            }
        }
    }
    return sum;
}

const WG: u32 = 64u;
// Tokens and rows per workgroup: replaced by the host when it compiles the module (decode:
// one token, four rows, so each value of x read serves four rows; otherwise four tokens of
// one row). R * T is 4 in both.
const T: u32 = TOKENS;
const R: u32 = ROWS;
var<workgroup> part: array<array<f32, 4>, 64>;

// x[t, c .. c + 3] of this product's input.
fn x4(t: u32, c: u32) -> vec4<f32> {
    let i = xo + t * p.k + c;
    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

fn halves(a: u32, b: u32) -> vec4<f32> {
    return vec4<f32>(half_value(a & 0xffffu), half_value(a >> 16u), half_value(b & 0xffffu), half_value(b >> 16u));
}

@compute @workgroup_size(64)
fn matmul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r0 = (wid.x + wid.y * nw.x) * R;
    // z: head by token group
    let groups = (p.n + T - 1u) / T;
    let t0 = (wid.z % groups) * T;
    select_head(wid.z / groups);
    if (r0 >= p.m) {
        return;
    }
    // acc[rr * T + j]: row r0 + rr, token t0 + j; rows and tokens past the end repeat the
    // last (their sums are never written)
    var acc: array<f32, 4>;
    if (p.kind >= 3u) {
        for (var g = lid; g < p.k / 32u; g = g + WG) {
            for (var j = 0u; j < T; j = j + 1u) {
                let t = min(t0 + j, p.n - 1u);
                var xs: array<vec4<f32>, 8>;
                for (var i = 0u; i < 8u; i = i + 1u) {
                    xs[i] = x4(t, 32u * g + 4u * i);
                }
                for (var rr = 0u; rr < R; rr = rr + 1u) {
                    acc[rr * T + j] += group_dot(min(r0 + rr, p.m - 1u), g, &xs);
                }
            }
        }
    } else if (p.kind != 0u && p.k % 8u == 0u) {
        // bf16 or f16: four words (eight values) of a row per thread and step
        for (var q = lid; q < p.k / 8u; q = q + WG) {
            for (var j = 0u; j < T; j = j + 1u) {
                let t = min(t0 + j, p.n - 1u);
                let xa = x4(t, 8u * q);
                let xb = x4(t, 8u * q + 4u);
                for (var rr = 0u; rr < R; rr = rr + 1u) {
                    let base = (min(r0 + rr, p.m - 1u) + wr) * p.k / 2u + 4u * q;
                    acc[rr * T + j] += dot(halves(w[base], w[base + 1u]), xa)
                        + dot(halves(w[base + 2u], w[base + 3u]), xb);
                }
            }
        }
    } else {
        for (var c = lid; c < p.k; c = c + WG) {
            for (var j = 0u; j < T; j = j + 1u) {
                let xv = x[xo + min(t0 + j, p.n - 1u) * p.k + c];
                for (var rr = 0u; rr < R; rr = rr + 1u) {
                    acc[rr * T + j] += weight(min(r0 + rr, p.m - 1u), c) * xv;
                }
            }
        }
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            for (var i = 0u; i < 4u; i = i + 1u) {
                part[lid][i] += part[lid + s][i];
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        for (var rr = 0u; rr < R; rr = rr + 1u) {
            for (var j = 0u; j < T; j = j + 1u) {
                if (r0 + rr < p.m && t0 + j < p.n) {
                    y[yo + (t0 + j) * p.m + r0 + rr] = part[0][rr * T + j];
                }
            }
        }
    }
}

@compute @workgroup_size(64)
fn matmul_t(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    let t = id.y;
    select_head(id.z);
    if (c >= p.k || t >= p.n) {
        return;
    }
    var sum = 0.0;
    for (var r = 0u; r < p.m; r = r + 1u) {
        sum = sum + weight(r, c) * x[xo + t * p.m + r];
    }
    y[yo + t * p.k + c] = sum;
}

// Streams p.k words of w (the weight binding) through every thread of the dispatch, one
// sum per thread into y: the read bandwidth a weight stream can reach, for measuring.
@compute @workgroup_size(64)
fn read_stream(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let threads = nw.x * nw.y * WG;
    let i0 = id.x + id.y * nw.x * WG;
    var h = 0u;
    for (var i = i0; i < p.k; i = i + threads) {
        h = h ^ w[i];
    }
    y[i0] = bitcast<f32>(h);
}

#!/usr/bin/env bash
# llama.cpp as the benchmark peer: same GGUF files, same thread count, one markdown table.
#
#   scripts/bench/peer.sh            # everything; steps whose outputs exist are skipped
#   PEER_REBENCH=1 scripts/bench/peer.sh   # measure the peak arithmetic again too (bandwidth is probed every run)
#
# Steps, all outside the repository in $PEER_DIR (default ~/.cache/deeprust-peer):
#   1. llama.cpp source, as vendored in PyPI's llama-cpp-python 0.3.36 sdist (llama.cpp 0c1e57098),
#      built with cmake (Release, GGML_NATIVE=ON): llama-bench, llama-quantize, llama-completion.
#   2. a random DeepSeek-V3-architecture checkpoint (scripts/bench/random-model.py): hidden 1024,
#      12 layers (1 dense), 64 routed experts (6 active, 8 groups / 4 used), 1 shared, 16 heads,
#      q_lora 768, kv_lora 512, V3's YaRN rope scaling and the real V3 tokenizer (129280 rows):
#      1.46B parameters, 2.9 GB bf16.
#   3. llama.cpp's convert_hf_to_gguf.py -> mid-bf16.gguf; llama-quantize -> mid-q8_0, mid-q4_k_m.
#   4. a STREAM-triad-like memory bandwidth probe and a peak-arithmetic probe (AVX-512, or AVX2
#      on CPUs without it; both C, compiled here with gcc).
#   5. llama-bench and `deeprust bench` on each file (pp512 and tg128 at each depth of
#      0,4096, -t $THREADS) in REPS rounds of one run each, back to back, in alternating order
#      (deeprust's columns are n/a where it fails or is missing); then the table.
#   6. KL of the quantized files against bf16, llama-perplexity --kl-divergence beside deeprust kl.
#
# Roofline fractions: decode = tok/s * bytes read per token / bandwidth, where bytes read per
# token are the GGUF tensor bytes, less the unused routed experts' share (only active/total of
# each *_exps tensor is read), less token_embd (one row read), plus the MLA KV cache at that depth
# (f16, (kv_lora_rank + rope dims) * 2 bytes per layer and position); prefill = tok/s * 2 * active
# matmul parameters / peak, where active parameters are the same count less output.weight (llama-bench's
# prompt test computes logits for the last token only) and the peak is the measured bf16 dot
# (vdpbf16ps) peak for bf16 and the int8 dot (vpdpbusd) peak for the quantized formats (llama.cpp's
# CPU path quantizes activations to 8 bits and multiplies in int8). Attention FLOPs are not counted.
#
# Environment: PEER_DIR, THREADS (2), REPS (3: rounds), DEPTHS (0,4096), PEER_FORMATS
# ("bf16 q8_0 q4_k_m"), PEER_PYTHON (a python with numpy, torch, transformers; default:
# scripts/reference/venv.sh, the repo's pinned reference venv), DEEPRUST_BIN (default
# target/release/deeprust; this script never builds it), DEEPRUST_ARGS (more `deeprust bench`
# options, e.g. "--cache-type bf16"), LLAMA_ARGS (more llama-bench options, e.g. "--repack 0"
# where its AMX repacking aborts), LLAMA_KL_ARGS (more llama-perplexity options, there
# "--no-repack"), PEER_SETUP_ONLY=1 (stop after step 3: build, model and GGUF files, so a later
# run measures on an idle machine), PEER_REBENCH=1 (the peak probe again), PEER_KL=0 (skip step 6),
# LLAMA_FA (0 or 1: llama-bench -fa; default llama.cpp's auto, which turns flash attention on
# for CPU; at this commit that makes tg128@d4096 on q8_0/q4_k_m several times slower than -fa 0).
# Needs: cmake, gcc/g++ (apt-get install cmake build-essential), pip, network for the sdist once.
# Nothing of llama.cpp is copied into the repository.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
PEER_DIR="${PEER_DIR:-$HOME/.cache/deeprust-peer}"
THREADS="${THREADS:-2}"
REPS="${REPS:-3}"
DEPTHS="${DEPTHS:-0,4096}"
DEEPRUST_BIN="${DEEPRUST_BIN:-$repo/target/release/deeprust}"
LCP_VERSION=0.3.36
read -r -a FORMATS <<< "${PEER_FORMATS:-bf16 q8_0 q4_k_m}"

mkdir -p "$PEER_DIR/results"
PEER_DIR="$(cd "$PEER_DIR" && pwd)"
res="$PEER_DIR/results"
log() { echo "[peer] $*" >&2; }

# ---- 1. llama.cpp ---------------------------------------------------------------------------
src="$PEER_DIR/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
if [ ! -f "$src/CMakeLists.txt" ]; then
  log "downloading llama-cpp-python $LCP_VERSION sdist"
  python3 -m pip download "llama-cpp-python==$LCP_VERSION" --no-deps --no-binary :all: -d "$PEER_DIR" >&2
  tar -xzf "$PEER_DIR/llama_cpp_python-$LCP_VERSION.tar.gz" -C "$PEER_DIR"
fi
bin="$PEER_DIR/build/bin"
if [ ! -x "$bin/llama-bench" ] || [ ! -x "$bin/llama-quantize" ] || [ ! -x "$bin/llama-completion" ]; then
  command -v cmake >/dev/null || { echo "cmake missing: apt-get install -y cmake build-essential" >&2; exit 1; }
  log "building llama.cpp (a few minutes on 2 cores)"
  cmake -S "$src" -B "$PEER_DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$PEER_DIR/build" -j "$(nproc)" --target llama-bench llama-quantize llama-completion >&2
fi

# ---- 2. the random model --------------------------------------------------------------------
py="${PEER_PYTHON:-}"
need_py() { [ -n "$py" ] || py="$("$repo/scripts/reference/venv.sh")"; }
model="$PEER_DIR/mid"
if [ ! -f "$model/model.safetensors" ] || [ ! -f "$model/tokenizer.json" ]; then
  need_py
  log "writing the random mid model"
  "$py" "$repo/scripts/bench/random-model.py" "$model" --hidden 1024 --layers 12 --experts 64 --active 6 \
    --moe-inter 512 --vocab 129280 --heads 16 --q-lora 768 --kv-lora 512 --n-group 8 --topk-group 4 \
    --max-pos 163840 --yarn --tokenizer "$repo/assets/tokenizers/deepseek-v3" >&2
fi

# ---- 3. GGUF files --------------------------------------------------------------------------
if [ ! -f "$PEER_DIR/mid-bf16.gguf" ]; then
  need_py
  log "converting to GGUF (bf16)"
  PYTHONPATH="$src/gguf-py" "$py" "$src/convert_hf_to_gguf.py" "$model" --outtype bf16 \
    --outfile "$PEER_DIR/mid-bf16.gguf.tmp" >&2
  mv "$PEER_DIR/mid-bf16.gguf.tmp" "$PEER_DIR/mid-bf16.gguf"
fi
for f in q8_0 q4_k_m; do
  if [ ! -f "$PEER_DIR/mid-$f.gguf" ]; then
    log "quantizing to $f"
    "$bin/llama-quantize" "$PEER_DIR/mid-bf16.gguf" "$PEER_DIR/mid-$f.gguf.tmp" "${f^^}" "$THREADS" \
      > "$res/quantize-$f.log" 2>&1
    mv "$PEER_DIR/mid-$f.gguf.tmp" "$PEER_DIR/mid-$f.gguf"
  fi
done

if [ -n "${PEER_SETUP_ONLY:-}" ]; then log "setup done in $PEER_DIR"; exit 0; fi

# ---- 4. probes and llama-bench --------------------------------------------------------------
probe="$PEER_DIR/probe"
mkdir -p "$probe"
# (the sources are written each run and the probes rebuilt when they changed)
mkdir -p "$probe/src"
cat > "$probe/src/triad.c" <<'EOF'
/* STREAM-triad-like bandwidth: a[i] = b[i] + 3*c[i] over 3 arrays of MB MiB each (STREAM's byte
   count: 3 arrays, no write-allocate credit), and a read-only dot over 2 arrays, vectorised
   (`omp simd`: a scalar chain of adds, one per 16 bytes, read 14.9 GB/s where a vector read
   gave 25-31 on our Zen 3). Best of REPS. */
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
int main(int argc, char **argv) {
    size_t mb = argc > 1 ? strtoul(argv[1], 0, 10) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    size_t n = mb * 1024 * 1024 / sizeof(double);
    double *a = aligned_alloc(64, n * 8), *b = aligned_alloc(64, n * 8), *c = aligned_alloc(64, n * 8);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
    double best = 1e30, bestr = 1e30, s = 0;
    for (int r = 0; r < reps; r++) {
        double t = omp_get_wtime();
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 3.0 * c[i];
        t = omp_get_wtime() - t;
        if (t < best) best = t;
        t = omp_get_wtime();
        #pragma omp parallel for simd schedule(static) reduction(+:s)
        for (size_t i = 0; i < n; i++) s += b[i] * c[i];
        t = omp_get_wtime() - t;
        if (t < bestr) bestr = t;
    }
    printf("{\"threads\": %d, \"array_mib\": %zu, \"triad_gbs\": %.2f, \"read_gbs\": %.2f, \"check\": %g}\n",
           omp_get_max_threads(), mb, 3.0 * n * 8 / best / 1e9, 2.0 * n * 8 / bestr / 1e9, a[n / 2] + s * 0);
    return 0;
}
EOF
cat > "$probe/src/peak.c" <<'EOF'
/* Peak arithmetic with OMP_NUM_THREADS threads, 12 independent accumulators, best of 3.
   AVX-512 (with BF16 and VNNI): fp32 FMA, bf16 dot (vdpbf16ps) and int8 dot (vpdpbusd) on zmm.
   Otherwise AVX2 (Zen 3, older Xeons): fp32 FMA on ymm; a bf16 product there is a widening and
   an fp32 FMA, so the bf16 peak is the FMA peak; int8 is AVX-VNNI's vpdpbusd where the CPU has
   it, else vpmaddubsw + vpaddw (products summed in i16, as the AVX2 int8 kernels sum them
   for a few steps before widening: the most int8 work a core does per cycle without VNNI). */
#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
#define ITERS 50000000L
#define R12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define OPAQUE(v) __asm__ volatile("" : "+v"(v))
#if defined(__AVX512F__) && defined(__AVX512BF16__) && defined(__AVX512VNNI__)
#define ISA "AVX-512"
#define HAVE_BF16_DOT 1
#define LANES 16
typedef __m512 VF;
typedef __m512i VI;
#define DECL_F(k) VF a##k = _mm512_set1_ps((float)k);
#define DECL_I(k) VI a##k = _mm512_set1_epi32(k);
#define SUM_F(k) s += _mm512_reduce_add_ps(a##k);
#define SUM_I(k) s += (float)_mm512_reduce_add_epi32(a##k);
#define FMA(k) a##k = _mm512_fmadd_ps(a##k, y, x);
#define BF(k) a##k = _mm512_dpbf16_ps(a##k, xb, yb);
#define I8(k) a##k = _mm512_dpbusd_epi32(a##k, xi, yi);
#define SETF _mm512_set1_ps
#define SET8 _mm512_set1_epi8
static float k_bf(void) { __m512bh xb = (__m512bh)_mm512_set1_epi16(0x3f80), yb = xb; OPAQUE(xb); OPAQUE(yb);
  R12(DECL_F) for (long i = 0; i < ITERS; i++) { R12(BF) } float s = 0; R12(SUM_F) return s; }
#else
#define ISA "AVX2"
#define HAVE_BF16_DOT 0
#define LANES 8
typedef __m256 VF;
typedef __m256i VI;
static float hsum(VF v) { float t[8]; _mm256_storeu_ps(t, v); return t[0]+t[1]+t[2]+t[3]+t[4]+t[5]+t[6]+t[7]; }
static int hsumi(VI v) { int t[8]; _mm256_storeu_si256((VI *)t, v); return t[0]+t[1]+t[2]+t[3]+t[4]+t[5]+t[6]+t[7]; }
#define DECL_F(k) VF a##k = _mm256_set1_ps((float)k);
#define DECL_I(k) VI a##k = _mm256_set1_epi32(k);
#define SUM_F(k) s += hsum(a##k);
#define SUM_I(k) s += (float)hsumi(a##k);
#define FMA(k) a##k = _mm256_fmadd_ps(a##k, y, x);
#ifdef __AVXVNNI__
#define I8(k) a##k = _mm256_dpbusd_avx_epi32(a##k, xi, yi);
#else
#define I8(k) a##k = _mm256_add_epi16(a##k, _mm256_maddubs_epi16(xi, yi));
#endif
#define SETF _mm256_set1_ps
#define SET8 _mm256_set1_epi8
#endif
static float k_fma(void) { VF x = SETF(1e-7f), y = SETF(0.999f); OPAQUE(x); OPAQUE(y);
  R12(DECL_F) for (long i = 0; i < ITERS; i++) { R12(FMA) } float s = 0; R12(SUM_F) return s; }
static float k_i8(void) { VI xi = SET8(1), yi = xi; OPAQUE(xi); OPAQUE(yi);
  R12(DECL_I) for (long i = 0; i < ITERS; i++) { R12(I8) } float s = 0; R12(SUM_I) return s; }
static double run(int kind) {
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        float sink = 0;
        double t = omp_get_wtime();
        #pragma omp parallel reduction(+:sink)
#if HAVE_BF16_DOT
        sink += kind == 0 ? k_fma() : kind == 1 ? k_bf() : k_i8();
#else
        sink += kind == 2 ? k_i8() : k_fma(); /* (kind 1 is not run) */
#endif
        t = omp_get_wtime() - t;
        /* operations per instruction (sequence): FMA 2 a lane, bf16 dot 4, int8 dot 8 */
        double per_insn = LANES * (kind == 0 ? 2 : kind == 1 ? 4 : 8);
        double g = (double)omp_get_max_threads() * ITERS * 12 * per_insn / t / 1e9;
        if (g > best) best = g;
        if (sink == 1.2345f) puts("");
    }
    return best;
}
int main(void) {
    /* without a bf16 dot the bf16 peak is the FMA peak itself (one measurement, so two
       noisy runs of the same loop cannot disagree) */
    double fma = run(0), bf = HAVE_BF16_DOT ? run(1) : fma;
    printf("{\"threads\": %d, \"isa\": \"%s\", \"fp32_fma_gflops\": %.1f, \"bf16_dot_gflops\": %.1f, \"int8_dot_gops\": %.1f}\n",
           omp_get_max_threads(), ISA, fma, bf, run(2));
    return 0;
}
EOF
for p in triad:-O3 peak:-O2; do
  opt=${p#*:} p=${p%:*}
  if [ ! -x "$probe/$p" ] || ! cmp -s "$probe/src/$p.c" "$probe/$p.c"; then
    cp "$probe/src/$p.c" "$probe/$p.c"
    gcc "$opt" -march=native -fopenmp "$probe/$p.c" -o "$probe/$p"
  fi
done
if [ -n "${PEER_REBENCH:-}" ]; then rm -f "$res"/peak.json; fi
# the bandwidth of this run, not of an earlier one (the host's moves by half within minutes)
log "measuring memory bandwidth ($THREADS threads, 3 x 256 MiB)"
OMP_NUM_THREADS="$THREADS" OMP_PROC_BIND=close "$probe/triad" 256 20 > "$res/membw.json"
if [ ! -s "$res/peak.json" ]; then
  log "measuring peak arithmetic ($THREADS threads)"
  OMP_NUM_THREADS="$THREADS" "$probe/peak" > "$res/peak.json"
fi
# ---- 5. the two engines in rounds ------------------------------------------------------------
# Shared hosts drift: this one's memory bandwidth has moved by half within minutes. So each test
# runs REPS rounds, and a round is one llama-bench run and one deeprust run of that test alone
# (-r 1), back to back, in alternating order (llama.cpp first in odd rounds), each decode round
# after a short bandwidth probe. The table's ratio is the median of the rounds' ratios and a
# decode roofline the median over rounds against that round's own bandwidth, so a slow stretch
# falls on both engines of a ratio alike. Tests at depth skip the warm-up run (their cache is
# filled, untimed, first, which pages everything in); tests at depth 0 keep it.
rounds="$res/rounds"
rm -rf "$rounds" "$res"/llama-*.json "$res"/deeprust-*.json
mkdir -p "$rounds"
have_dr=
if [ -x "$DEEPRUST_BIN" ]; then
  have_dr=1
  "$DEEPRUST_BIN" bench --membw -o json > "$res/deeprust-membw.json" 2> "$res/deeprust-membw.log" \
    || { log "deeprust bench --membw failed"; rm -f "$res/deeprust-membw.json"; }
else
  log "no deeprust binary at $DEEPRUST_BIN (cargo build --release -p cli): its columns are n/a"
fi
llama_run() { # format p n depth out
  local warm=()
  [ "$4" != 0 ] && warm=(--no-warmup)
  # shellcheck disable=SC2086 # LLAMA_ARGS is a list of options
  "$bin/llama-bench" -m "$PEER_DIR/mid-$1.gguf" -p "$2" -n "$3" -d "$4" -t "$THREADS" -r 1 ${warm[@]+"${warm[@]}"} \
    ${LLAMA_FA:+-fa "$LLAMA_FA"} ${LLAMA_ARGS:-} -o json > "$5.tmp" 2> "$5.log" \
    && mv "$5.tmp" "$5" || { log "llama-bench failed (see $5.log)"; rm -f "$5.tmp"; }
}
deeprust_run() { # format p n depth out
  [ -n "$have_dr" ] || return 0
  local warm=()
  [ "$4" != 0 ] && warm=(--no-warmup)
  # shellcheck disable=SC2086 # DEEPRUST_ARGS is a list of options
  "$DEEPRUST_BIN" bench --model "$PEER_DIR/mid-$1.gguf" -p "$2" -n "$3" --depth "$4" --threads "$THREADS" \
    -r 1 ${warm[@]+"${warm[@]}"} ${DEEPRUST_ARGS:-} -o json > "$5.tmp" 2> "$5.log" \
    && mv "$5.tmp" "$5" || { log "deeprust bench failed (see $5.log)"; rm -f "$5.tmp"; }
}
IFS=, read -r -a depth_list <<< "$DEPTHS"
for f in "${FORMATS[@]}"; do
  for d in "${depth_list[@]}"; do
    for pn in "512 0" "0 128"; do
      read -r p n <<< "$pn"
      test="p${p}-n${n}-d${d}"
      log "$f $test: $REPS rounds"
      for ((r = 1; r <= REPS; r++)); do
        base="$rounds/$f-$test-r$r"
        if [ "$n" != 0 ]; then
          OMP_NUM_THREADS="$THREADS" OMP_PROC_BIND=close "$probe/triad" 256 5 > "$base-bw.json" || true
        fi
        if ((r % 2)); then
          llama_run "$f" "$p" "$n" "$d" "$base-llama.json"
          deeprust_run "$f" "$p" "$n" "$d" "$base-deeprust.json"
        else
          deeprust_run "$f" "$p" "$n" "$d" "$base-deeprust.json"
          llama_run "$f" "$p" "$n" "$d" "$base-llama.json"
        fi
      done
    done
  done
done

# ---- the table ------------------------------------------------------------------------------
REPS="$REPS" python3 - "$PEER_DIR" "${FORMATS[@]}" <<'EOF'
import json, os, statistics, struct, sys

peer, formats = sys.argv[1], sys.argv[2:]
res = os.path.join(peer, "results")

def load(name):
    try:
        with open(os.path.join(res, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def gguf(path):
    """Header of a GGUF v2/v3 file: (metadata scalars, [(name, ne, type, nbytes)])."""
    with open(path, "rb") as f:
        def rd(fmt):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]
        def s():
            return f.read(rd("Q")).decode("utf-8", "replace")
        scal = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
        def val(t):
            if t == 8:
                return s()
            if t == 9:
                et, n = rd("I"), rd("Q")
                if et in scal:
                    f.seek(struct.calcsize("<" + scal[et]) * n, 1)
                else:
                    for _ in range(n):
                        val(et)
                return None
            return rd(scal[t])
        assert f.read(4) == b"GGUF", path
        version, n_t, n_kv = rd("I"), rd("Q"), rd("Q")
        kv = {}
        for _ in range(n_kv):
            k = s()
            kv[k] = val(rd("I"))
        infos = []
        for _ in range(n_t):
            name = s()
            ne = [rd("Q") for _ in range(rd("I"))]
            infos.append((name, ne, rd("I"), rd("Q")))
        align = kv.get("general.alignment") or 32
        start = (f.tell() + align - 1) // align * align
    end = os.path.getsize(path) - start
    order = sorted(range(len(infos)), key=lambda i: infos[i][3])
    nbytes = {}
    for j, i in enumerate(order):
        nxt = infos[order[j + 1]][3] if j + 1 < len(order) else end
        nbytes[i] = nxt - infos[i][3]          # includes alignment padding (< 32 bytes)
    return kv, [(n, ne, t, nbytes[i]) for i, (n, ne, t, _) in enumerate(infos)]

bw = load("membw.json") or {}
peak = load("peak.json") or {}
dr_bw = load("deeprust-membw.json") or {}
bw_gbs = bw.get("triad_gbs")
print(f"Memory bandwidth (STREAM-triad-like, {bw.get('threads')} threads): {bw_gbs} GB/s "
      f"(read-only dot: {bw.get('read_gbs')} GB/s; deeprust bench --membw: {dr_bw.get('bandwidth_gbs', 'n/a')} GB/s)")
print(f"Peak ({peak.get('threads')} threads, {peak.get('isa', 'AVX-512')}): fp32 FMA {peak.get('fp32_fma_gflops')} GFLOP/s, "
      f"bf16 dot {peak.get('bf16_dot_gflops')} GFLOP/s, int8 dot {peak.get('int8_dot_gops')} GOP/s")
print()
rows = []
for fm in formats:
    path = os.path.join(peer, f"mid-{fm}.gguf")
    if not os.path.exists(path):
        continue
    kv, tensors = gguf(path)
    arch = kv.get("general.architecture", "deepseek2")
    n_exp, n_used = kv.get(f"{arch}.expert_count", 1), kv.get(f"{arch}.expert_used_count", 1)
    n_layer = kv.get(f"{arch}.block_count", 0)
    kv_row = (kv.get(f"{arch}.attention.kv_lora_rank", 0) + kv.get(f"{arch}.rope.dimension_count", 0)) * 2
    read, active = 0.0, 0.0
    for name, ne, _, nb in tensors:
        n = 1
        for d in ne:
            n *= d
        if name == "token_embd.weight":
            read += nb / ne[-1]               # one row
            continue
        share = n_used / n_exp if "_exps." in name else 1.0
        read += nb * share
        if len(ne) >= 2 and name != "output.weight":
            active += n * share               # matmul weights a prompt token multiplies
    peak_ops = peak.get("bf16_dot_gflops") if fm == "bf16" else peak.get("int8_dot_gops")
    print(f"{fm}: {os.path.getsize(path) / 1e9:.2f} GB, {read / 1e6:.0f} MB of weights read per decoded token, "
          f"{active / 1e6:.0f}M active matmul parameters per prompt token")
    # the rounds of each test: tok/s of each engine, and the bandwidth probed before a decode round
    tests = {}
    for name in sorted(os.listdir(os.path.join(res, "rounds"))):
        if not name.startswith(fm + "-p") or not name.endswith(".json"):
            continue
        stem, what = name[:-5].rsplit("-", 1)
        test, rnd = stem[len(fm) + 1:].rsplit("-r", 1)
        p, g, d = (int(x[1:]) for x in test.split("-"))
        rec = load(os.path.join("rounds", name))
        if what == "bw":
            val = (rec or {}).get("triad_gbs")
        else:
            val = rec[0]["avg_ts"] if rec else None
        if val:
            tests.setdefault((p, g, d), {}).setdefault(int(rnd), {})[what] = val
    for key in sorted(tests, key=lambda k: (k[2], k[1] > 0)):
        p, g, d = key
        rounds = tests[key].values()
        test = (f"pp{p}" if p else f"tg{g}") + (f"@d{d}" if d else "")
        def ts(engine):
            v = [r[engine] for r in rounds if engine in r]
            if not v:
                return "n/a"
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{statistics.mean(v):.2f} ± {sd:.2f}"
        def roof(engine):
            v = []
            for r in rounds:
                if engine not in r:
                    continue
                if g:
                    bw_r = r.get("bw") or bw_gbs
                    if bw_r:
                        v.append(r[engine] * (read + d * n_layer * kv_row) / (bw_r * 1e9))
                elif peak_ops:
                    v.append(r[engine] * 2 * active / (peak_ops * 1e9))
            return f"{statistics.median(v):.0%}" if v else "n/a"
        ratios = [r["deeprust"] / r["llama"] for r in rounds if "deeprust" in r and "llama" in r]
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "n/a"
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
        rows.append(f"| {fm} | {test} | {ts('llama')} | {ts('deeprust')} | {ratio} | {spread} | "
                    f"{roof('llama')} | {roof('deeprust')} |")
print()
print(f"Each test: {os.environ.get('REPS', '?')} rounds of one run of each engine, back to back. tok/s: mean ± sd "
      "over the rounds; ratio: median of the rounds' ratios (and their range); decode roofline: median "
      "over the rounds, each against the bandwidth probed just before it.")
print()
print("| format | test | llama.cpp tok/s | deeprust tok/s | deeprust / llama.cpp | ratio range | llama.cpp roofline | deeprust roofline |")
print("|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
EOF

# ---- 6. quantization quality: KL of next-token distributions against bf16 ------------------
# Both engines over the same text (the repository's README and docs, lines of 40+ characters):
# llama.cpp's own `llama-perplexity --kl-divergence` (128-token windows, KL over the second half
# of each, as it always scores) and `deeprust kl` (every position of each line as a prompt).
# The positions differ, the text and the files do not. PEER_KL=0 skips this step.
if [ "${PEER_KL:-1}" = 1 ]; then
  kl="$PEER_DIR/kl"
  mkdir -p "$kl"
  # sed reads to the end (head would close the pipe early, and pipefail would end the script)
  grep -hE '.{40,}' "$repo/README.md" "$repo"/docs/*.md | sed -n '1,80p' > "$kl/text.txt"
  if [ ! -x "$bin/llama-perplexity" ]; then
    log "building llama-perplexity"
    cmake --build "$PEER_DIR/build" -j "$(nproc)" --target llama-perplexity >&2
  fi
  log "llama-perplexity: bf16 base logits"
  # shellcheck disable=SC2086 # LLAMA_KL_ARGS is a list of options
  "$bin/llama-perplexity" -m "$PEER_DIR/mid-bf16.gguf" -f "$kl/text.txt" -c 128 --chunks 16 -t "$THREADS" \
    --kl-divergence-base "$kl/base.kld" ${LLAMA_KL_ARGS:-} > "$kl/llama-base.log" 2>&1 \
    || log "llama-perplexity base failed"
  echo
  echo "| format | llama.cpp mean KL (nats) | llama.cpp top-1 agree | deeprust mean KL (nats) | deeprust top-1 agree |"
  echo "|---|---|---|---|---|"
  for f in "${FORMATS[@]}"; do
    [ "$f" = bf16 ] && continue
    # shellcheck disable=SC2086 # LLAMA_KL_ARGS is a list of options
    "$bin/llama-perplexity" -m "$PEER_DIR/mid-$f.gguf" -t "$THREADS" --kl-divergence-base "$kl/base.kld" \
      --kl-divergence ${LLAMA_KL_ARGS:-} > "$kl/llama-$f.log" 2>&1 || log "llama-perplexity $f failed"
    # (a failed run leaves no figures: n/a, and the loop goes on to deeprust's)
    l_kl="$(grep -E '^Mean +KLD:' "$kl/llama-$f.log" | awk '{print $3}' || true)"
    l_top="$(grep -E '^Same top p:' "$kl/llama-$f.log" | awk '{print $4}' || true)"
    d_json="$("${DEEPRUST_BIN}" kl --base "$PEER_DIR/mid-bf16.gguf" --model "$PEER_DIR/mid-$f.gguf" \
      --file "$kl/text.txt" --threads "$THREADS" --json 2> "$kl/deeprust-$f.log" || true)"
    d_kl="$(printf '%s' "$d_json" | python3 -c 'import json,sys; print("%.6f" % json.load(sys.stdin)["kl_mean"])' 2>/dev/null || echo n/a)"
    d_top="$(printf '%s' "$d_json" | python3 -c 'import json,sys; print("%.2f%%" % json.load(sys.stdin)["top1_agreement_pct"])' 2>/dev/null || echo n/a)"
    echo "| $f | ${l_kl:-n/a} | ${l_top:-n/a}% | $d_kl | $d_top |"
  done
fi

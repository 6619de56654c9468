#!/usr/bin/env bash
# Builds the engine for WebAssembly and checks it against the native build.
#
#   scripts/build-wasm.sh            build web/pkg (the page's module) and run the checks
#   scripts/build-wasm.sh --build    build only
#
# rustup here has no wasm32 standard library and cannot download one, so the wasm build
# uses Debian's rustc-web 1.96 with the std source (rust-web-src) and -Zbuild-std; lld-22 is
# the linker it calls rust-lld (see ../shared/notes/platform.md, measured on our machines).
# The native build stays on rustup's stable 1.95: the code builds with both.
#
# Checks (in Node, from the nodejs flavour of the module):
#   1. logits of a prefill equal the native build's (`deeprust logits`), rel <= 1e-5;
#   2. a greedy reply, streamed token by token through `Session.next`, equals
#      `deeprust generate --temperature 0` text and token ids.
# Then the tests under wasm-bindgen-test (`cargo test` for wasm32 with the same compiler,
# RUSTFLAGS and target directory, -Zbuild-std=std,panic_abort -Zpanic-abort-tests, and
# wasm-bindgen-test-runner from target/wasm-tools as the target's runner): in Node, the
# kernels crate's SIMD tests (crates/kernels/src/cpu/simd_tests.rs), every level this build
# has, SIMD128 included, against the portable oracle on awkward sizes; in headless Chromium,
# driven by Debian's chromedriver, crates/web/tests/wasm.rs: the embedded model's Session
# gives the native build's greedy reply (passed in at compile time as DEEPRUST_NATIVE_GEN,
# target/wasm/expect/native-gen.json) and SIMD128 logits equal to the scalar kernels'.
# Then the page (web/) in headless Chromium, as static files and from `deeprust serve`: the
# same greedy reply on the CPU kernels and, with WebGPU on SwiftShader, on the WGSL backend.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build_only=0
[ "${1:-}" = "--build" ] && build_only=1

# ---- toolchain ------------------------------------------------------------------------------
pkgs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# wasm-bindgen's CLI must be the version Cargo.lock resolved for the crate
ver="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)"
tools="$root/target/wasm-tools"
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -q " $ver\$"; then
  echo "installing wasm-bindgen-cli $ver (a few minutes, once)" >&2
  cargo install wasm-bindgen-cli --version "$ver" --root "$tools" >&2
fi

# ---- build ----------------------------------------------------------------------------------
out="$root/target/wasm"
# Debian's cargo and rustc, with the flags the build and the tests share (a change to
# RUSTFLAGS rebuilds std)
wasm_cargo=(env PATH="/usr/bin:/bin" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
  CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  RUSTFLAGS='-C target-feature=+simd128 --cfg getrandom_backend="wasm_js"'
  /usr/bin/cargo)
"${wasm_cargo[@]}" build --locked --release --target wasm32-unknown-unknown \
  -Zbuild-std=std,panic_abort -p web --target-dir "$out" >&2
wasm="$out/wasm32-unknown-unknown/release/web.wasm"
"$tools/bin/wasm-bindgen" --target web --out-dir "$root/web/pkg" "$wasm"
"$tools/bin/wasm-bindgen" --target nodejs --out-dir "$out/pkg-node" "$wasm"
echo "web/pkg: $(du -k "$root/web/pkg/web_bg.wasm" | cut -f1) KiB of wasm" >&2
[ $build_only = 1 ] && exit 0

# ---- checks against the native build --------------------------------------------------------
bin="${DEEPRUST_BIN:-$root/target/release/deeprust}"
[ -x "$bin" ] || cargo build --release --locked -p cli >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
prompt="Once upon a time"
ids="$("$bin" tokenize --text "$prompt" --add-special-tokens --json | python3 -c 'import json,sys; print(",".join(map(str, json.load(sys.stdin)["ids"])))')"
"$bin" logits --token-ids "$ids" --out "$tmp/native.safetensors"
"$bin" logits --token-ids "$ids" --kernels scalar --out "$tmp/native-scalar.safetensors"
"$bin" generate --prompt "$prompt" --max-tokens 24 --temperature 0 --json > "$tmp/native-gen.json"
node "$root/scripts/wasm/check.mjs" "$out/pkg-node" "$ids" "$prompt" \
  "$tmp/native.safetensors" "$tmp/native-scalar.safetensors" "$tmp/native-gen.json"

# Chromium, and chromedriver for wasm-bindgen-test (the same Debian version: chromium-driver
# depends on it)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2; }
fi

# ---- wasm-bindgen-test: the kernels in Node, the Session in headless Chromium ---------------
# the native reply for crates/web/tests/wasm.rs, rewritten only when it changes (the test
# reads it at compile time, so a new file rebuilds that test)
mkdir -p "$out/expect"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["prompt"]=sys.argv[2]; json.dump(d, open(sys.argv[3], "w"), ensure_ascii=False)' \
  "$tmp/native-gen.json" "$prompt" "$tmp/native-gen-prompt.json"
cmp -s "$tmp/native-gen-prompt.json" "$out/expect/native-gen.json" \
  || cp "$tmp/native-gen-prompt.json" "$out/expect/native-gen.json"
wasm_test=(env CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$tools/bin/wasm-bindgen-test-runner"
  CHROMEDRIVER="$(command -v chromedriver)" DEEPRUST_NATIVE_GEN="$out/expect/native-gen.json"
  "${wasm_cargo[@]}" test --locked --release --target wasm32-unknown-unknown
  -Zbuild-std=std,panic_abort -Zpanic-abort-tests --target-dir "$out")
"${wasm_test[@]}" -p kernels --lib           # no browser configured: Node
"${wasm_test[@]}" -p web --test wasm         # run_in_browser: Chromium through chromedriver

# ---- the page in headless Chromium ------------------------------------------------------------
# web/ as static files (any host serves them; here Python's), the model in a Web Worker
browser="$root/scripts/e2e/browser"
(cd "$browser" && npm install --silent --no-audit --no-fund >/dev/null)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# the repository's root, so that a checkpoint directory in it can be fetched too
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/web/" >/dev/null && break; sleep 0.1; done
want="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"], end="")' "$tmp/native-gen.json")"
node "$browser/local-page.mjs" "http://127.0.0.1:$port/web/" "$want" 24
# the same model fetched as a checkpoint directory and loaded from bytes
node "$browser/local-page.mjs" "http://127.0.0.1:$port/web/" "$want" 24 cpu ../assets/model/
# with WebGPU (SwiftShader): the same reply from the WGSL backend, through JSPI
node "$browser/local-page.mjs" "http://127.0.0.1:$port/web/" "$want" 24 gpu
# and as `deeprust serve` serves it, at /local/
dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --port "$dport" --kv-cache-gb 0.1 --web-dir "$root/web" 2>/dev/null &
dserver=$!
trap 'kill $server $dserver 2>/dev/null; wait $server $dserver 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do "$bin" probe --addr "127.0.0.1:$dport" 2>/dev/null && break; sleep 0.1; done
node "$browser/local-page.mjs" "http://127.0.0.1:$dport/local/" "$want" 24

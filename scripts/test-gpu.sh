#!/usr/bin/env bash
# The GPU backend's tests on a real adapter: Mesa's lavapipe (Vulkan on the CPU) is installed
# if missing, so they run on machines with no GPU, and a missing adapter is a failure here
# (plain `cargo test` skips them, saying so, where no adapter exists).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || ! dpkg -s libvulkan1 >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >&2 \
    || { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1 >&2; }
fi
# Mesa asks for a runtime directory it does not need; give it one to keep the log clean
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
DEEPRUST_REQUIRE_GPU=1 cargo test --release --locked -p gpu -- --nocapture 2>&1 | grep -vE "^$" >&2
# and the binary: `--backend gpu` gives the same greedy reply as the CPU
cargo build --release --locked -p cli >&2
bin="$PWD/target/release/deeprust"
reply() { "$bin" generate "$@" --prompt "Once upon a time" --max-tokens 24 --temperature 0 --json 2>/dev/null \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["token_ids"], d["text"])'; }
cpu="$(reply --backend cpu)"
gpu="$(reply --backend gpu)"
echo "cpu: $cpu" >&2
echo "gpu: $gpu" >&2
[ "$cpu" = "$gpu" ] || { echo "error: --backend gpu replied differently" >&2; exit 1; }
echo "gpu backend: ok" >&2

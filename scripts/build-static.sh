#!/usr/bin/env bash
# Builds `deeprust` as a fully static Linux x86_64 executable (glibc, crt-static) and prints
# its path as the last line. The embedded model is inside it: copy the one file and run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -p cli --target x86_64-unknown-linux-gnu --target-dir target/static >&2
bin="$PWD/target/static/x86_64-unknown-linux-gnu/release/deeprust"
if ! ldd "$bin" 2>&1 | grep -qE "statically linked|not a dynamic executable"; then
  echo "error: $bin is dynamically linked" >&2
  exit 1
fi
echo "$bin"

#!/usr/bin/env bash
# The chat page in Debian's headless Chromium (installed if missing), driven by playwright-core.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
if ! command -v chromium >/dev/null; then
  apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
(cd "$here" && npm install --silent --no-audit --no-fund >/dev/null)
bin="${DEEPRUST_BIN:-$root/target/release/deeprust}"
[ -x "$bin" ] || (cd "$root" && cargo build --release --locked -p cli)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --port "$port" --kv-cache-gb 0.25 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$bin" probe --addr "127.0.0.1:$port" 2>/dev/null && break; sleep 0.1; done
node "$here/chat-page.mjs" "http://127.0.0.1:$port/"

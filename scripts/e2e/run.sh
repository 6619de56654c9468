#!/usr/bin/env bash
# End-to-end: the official `openai` Python client, unmodified, against a running
# `deeprust serve` on the embedded model. Creates its own venv (pinned openai).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$here/requirements.txt" "$venv/.requirements"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements"
fi
bin="${DEEPRUST_BIN:-$root/target/release/deeprust}"
[ -x "$bin" ] || (cd "$root" && cargo build --release --locked -p cli)
exec "$venv/bin/python" "$here/openai_client.py" "$bin"

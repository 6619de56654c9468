#!/usr/bin/env bash
# Regenerates tests/golden/* with the pinned reference stack. Usable from any cwd.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python=$("$here/venv.sh")
exec "$python" "$here/generate.py" "$@"

#!/usr/bin/env bash
# Trains (or resumes training of) the embedded model and exports it to assets/model/.
# Uses the pinned reference venv (torch, transformers); runs on CPU, or a GPU if torch sees one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python=$("$here/../reference/venv.sh")
cd "$here"
exec "$python" train.py "$@"

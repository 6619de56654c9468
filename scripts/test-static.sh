#!/usr/bin/env bash
# The one-file promise: the static binary, copied alone into an empty directory and run with
# no environment at all, answers with the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/build-static.sh | tail -n 1)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$bin" "$dir/deeprust"
out=$(cd "$dir" && env -i ./deeprust generate --prompt "Once upon a time" --max-tokens 24 --temperature 0 --quiet)
echo "static binary: $(du -h "$bin" | cut -f1) ($(stat -c %s "$bin") bytes)"
echo "answer: $out"
words=$(echo "$out" | wc -w)
if [ "$words" -lt 5 ]; then
  echo "error: expected an answer of several words, got: $out" >&2
  exit 1
fi

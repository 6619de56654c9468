#!/usr/bin/env bash
# Cold start: wall time from exec to exit of `deeprust generate --max-tokens 1` (so it bounds
# the time to the first token from above), over fresh processes; prints the median.
# Usage: scripts/bench/cold-start.sh [RUNS] [-- extra deeprust args, e.g. --model DIR]
# With DROP_CACHES=1 (root), the page cache is dropped before each run: a truly cold file.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-15}
shift || true
[ "${1:-}" = "--" ] && shift
cargo build --release --locked -p cli >&2
bin=target/release/deeprust
times=()
for _ in $(seq "$runs"); do
  if [ "${DROP_CACHES:-0}" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  t0=$(date +%s%N)
  "$bin" generate --prompt "Once upon a time" --max-tokens 1 --temperature 0 --quiet "$@" >/dev/null
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000 )))
done
printf '%s\n' "${times[@]}" | sort -n | awk -v runs="$runs" '
  { v[NR] = $1 }
  END {
    med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "cold start (exec to first token and exit), %d runs: median %.1f ms, min %.1f ms, max %.1f ms\n", runs, med / 1000, v[1] / 1000, v[NR] / 1000
  }'

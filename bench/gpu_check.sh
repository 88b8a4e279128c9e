#!/usr/bin/env bash
# One-shot GPU check for an H100/H200, at most 10 minutes: every step runs in its own process under a
# timeout and writes bench/results/gpu-<step>.json (see bench/gpu_check.py for what each step measures).
#   bash bench/gpu_check.sh [--out DIR] [--official-dir DIR]   # on the GPU machine
#   bash bench/gpu_check.sh --dry-run --out /tmp/x              # CPU, tiny sizes, one process (tests)
# The official port, when present, is looked for in $GANFORMER_OFFICIAL or official/pytorch_version
# (git-ignored; never committed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results
OFFICIAL="${GANFORMER_OFFICIAL:-official/pytorch_version}"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --official-dir) OFFICIAL="$2"; shift ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python}"
if [ "$DRY" = 1 ]; then
  exec timeout -k 5 600 "$PY" bench/gpu_check.py --dry-run --out "$OUT" --step-timeout 120 --official-dir "$OFFICIAL"
fi
# step:seconds; the limits add up to 570 s, so the whole check ends within 10 minutes.
LIMITS="env:20 build:150 ops:30 kernels_vs_ref:40 bf16_vs_fp32:40 trainer:40 syncs:40 bench:90 bench_compiled:80 official:40"
rc=0
for item in $LIMITS; do
  step="${item%%:*}"; limit="${item##*:}"
  # The Python step timer records a timeout as a result; the outer timeout catches a hung CUDA call.
  timeout -k 5 $((limit + 10)) "$PY" bench/gpu_check.py "$step" --out "$OUT" --step-timeout "$limit" \
      --official-dir "$OFFICIAL" || rc=1
done
echo "gpu_check: results in $OUT/gpu-*.json (exit $rc)"
exit $rc

#!/usr/bin/env bash
# One-shot GPU check for an H100/H200, at most 10 minutes: every step runs in its own process under a
# timeout and writes bench/results/gpu-<step>.json (see bench/gpu_check.py for what each step measures).
#   bash bench/gpu_check.sh [--out DIR] [--bundle FILE] [--official-dir DIR] [--official-reference DIR]
#   bash bench/gpu_check.sh --dry-run --out /tmp/x              # CPU, tiny sizes, one process (tests)
# --bundle FILE gathers all steps in one JSON file, rewritten after each step (for a machine that returns
# few files or may be cut off); `python bench/gpu_check.py --unbundle FILE --out bench/results` splits it.
# The official port, when present, is looked for in $GANFORMER_OFFICIAL or official/pytorch_version, and its
# reference kwargs (config.json) in official/reference or ../shared/reference/official-pytorch/; both
# git-ignored, never committed. To prepare them from a checkout of the official repository:
#   mkdir -p official/reference && cp -r <checkout>/pytorch_version official/ &&
#   cp ../shared/reference/official-pytorch/A_ganformer_default_32/config.json official/reference/
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results
OFFICIAL="${GANFORMER_OFFICIAL:-official/pytorch_version}"
REFERENCE=""
[ -f official/reference/config.json ] && REFERENCE=official/reference
BUNDLE=()
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --official-dir) OFFICIAL="$2"; shift ;;
    --official-reference) REFERENCE="$2"; shift ;;
    --bundle) BUNDLE=(--bundle "$2"); shift ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
# the CUDA images name their interpreter python3 and may have no plain python
PY="${PYTHON:-$(command -v python3 || command -v python)}"
WORK=$(mktemp -d)                  # scratch the steps share (FLOP counts), removed at the end
trap 'rm -rf "$WORK"' EXIT
EXTRA=(--work "$WORK" ${BUNDLE[@]+"${BUNDLE[@]}"})
[ -n "$REFERENCE" ] && EXTRA+=(--official-reference "$REFERENCE")
if [ "$DRY" = 1 ]; then
  timeout -k 5 600 "$PY" bench/gpu_check.py --dry-run --out "$OUT" --step-timeout 120 --official-dir "$OFFICIAL" \
      "${EXTRA[@]}"
  exit $?
fi
# step:seconds; the limits add up to 540 s (595 with each step's 5 s of grace), so the whole check ends within
# 10 minutes. build includes the official port's kernels (when it is here), so that the official step times
# training, not NVCC.
LIMITS="env:15 build:100 ops:30 gpu_tests:40 kernels_vs_ref:35 bf16_vs_fp32:35 trainer:35 syncs:30 bench:90 bench_compiled:60 official:70"
rc=0
for item in $LIMITS; do
  step="${item%%:*}"; limit="${item##*:}"
  # The Python step timer records a timeout as a result; the outer timeout catches a hung CUDA call.
  timeout -k 2 $((limit + 3)) "$PY" bench/gpu_check.py "$step" --out "$OUT" --step-timeout "$limit" \
      --official-dir "$OFFICIAL" "${EXTRA[@]}"
  code=$?
  if [ "$code" -ge 124 ]; then      # killed from outside (a hung CUDA call): still leave a record of the step
    "$PY" bench/gpu_check.py "$step" --killed "$code" --out "$OUT" "${EXTRA[@]}"
  fi
  [ "$code" -eq 0 ] || rc=1
done
echo "gpu_check: results in $OUT/gpu-*.json (exit $rc)"
exit $rc

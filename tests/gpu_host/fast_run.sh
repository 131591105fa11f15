#!/usr/bin/env bash
# GPU host: `run_all fast` on the gpu profile (synthetic Qwen2-57B-A14B slice), resumable:
# call it again (same arguments) after a time limit cut it short and it goes on where it
# stopped. Results, report and figures are copied to $OUT after every call.
#   OUT=/dir tests/gpu_host/fast_run.sh [extra run_all overrides...]
# Knobs: RUN_LIMIT_S (default 420), RESULTS (default /tmp/hmoe-results), LAYERS (default 4),
# SDIST (a trimmed llama-cpp-python sdist to build first, with CUDA; empty: skip).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hmoe-fast-out}"
mkdir -p "$OUT"
export HMOE_CACHE_DIR="${HMOE_CACHE_DIR:-/tmp/hmoe-cache}"
source tests/gpu_host/env.sh
install_wheels
ensure_extension "$OUT/build.log"
if [ -n "${SDIST:-}" ] && ! python3 -c "import llama_cpp" 2>/dev/null; then
  start=$SECONDS
  build_llamacpp "$SDIST" "$OUT/llamacpp_build.log"
  echo "llama-cpp-python build: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/run.log"
fi
RESULTS="${RESULTS:-/tmp/hmoe-results}"
start=$SECONDS
timeout "${RUN_LIMIT_S:-420}" python3 -m experiments.cli all fast profile=gpu \
  results_root="$RESULTS" run=gpu progress=false model.synthetic.layers="${LAYERS:-4}" "$@" \
  >>"$OUT/run.log" 2>&1
echo "run_all: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/run.log"
python3 -m plots.report "$RESULTS/gpu" >>"$OUT/run.log" 2>&1
for f in results.csv provenance.json report.md; do cp "$RESULTS/gpu/$f" "$OUT/" 2>/dev/null; done
tar czf "$OUT/figures.tgz" -C "$RESULTS/gpu" figures 2>/dev/null
grep -E "^==|NOISY|tokens/s|NOT RUN|FAILED|error" "$OUT/run.log" | tail -n 80
exit 0

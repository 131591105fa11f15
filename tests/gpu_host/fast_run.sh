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
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HMOE_CACHE_DIR="${HMOE_CACHE_DIR:-/tmp/hmoe-cache}"
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
SITE=/tmp/hmoe-site
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl >/dev/null 2>&1 || echo "wheel install failed" >&2
fi
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}"
python3 -c "import engine._hmoe_cpu" 2>/dev/null ||
  python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1
if [ -n "${SDIST:-}" ] && ! python3 -c "import llama_cpp" 2>/dev/null; then
  start=$SECONDS
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=on" \
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" \
    "$SDIST" >"$OUT/llamacpp_build.log" 2>&1
  echo "llama-cpp-python build: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/run.log"
  python3 -c "import diskcache" 2>/dev/null || {
    mkdir -p "$SITE/diskcache" && echo "# stand-in: no disk cache" >"$SITE/diskcache/__init__.py"; }
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

#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one go, for a GPU host without network access:
#   1. install wheels carried in .whl/ (packages the host lacks: hydra-core, omegaconf, ...)
#   2. the GPU tests (engine logits on cuda, Fiddler placement), log in $OUT/gpu_tests.log
#   3. a small `run_all fast` on the gpu profile (synthetic Qwen2-57B-A14B layer slice),
#      its results, provenance, report and figures copied to $OUT
# Usage (repo root): OUT=/some/dir tests/gpu_host/run_checks.sh [extra run_all overrides]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hmoe-gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/hmoe-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/hmoe-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"

{
  echo "== host"; nvidia-smi -L; nproc; free -g | head -2
  grep -m1 "model name" /proc/cpuinfo
  grep -m1 -o -w -E "avx512f|amx_bf16|amx_int8" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/host.txt"

echo "== GPU tests"
python3 -m pytest tests/engine tests/test_fiddler.py -q -p no:cacheprovider -rs \
  2>&1 | tee "$OUT/gpu_tests.log"

echo "== run_all fast on the gpu profile"
RESULTS=/tmp/hmoe-results
# Bounded so the copies below still happen inside the device call's time limit.
timeout "${HMOE_RUN_LIMIT_S:-420}" python3 -m experiments.cli all fast profile=gpu \
  results_root="$RESULTS" progress=false "$@" 2>&1 | tee "$OUT/run_all.log"
python3 -m experiments.cli report "$RESULTS/fast" >/dev/null 2>&1  # also after a timeout
for f in results.csv provenance.json report.md; do
  cp "$RESULTS/fast/$f" "$OUT/" 2>/dev/null
done
tar czf "$OUT/figures.tgz" -C "$RESULTS/fast" figures 2>/dev/null
exit 0

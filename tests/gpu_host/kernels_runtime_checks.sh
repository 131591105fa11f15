#!/usr/bin/env bash
# GPU host, one call: the C++ kernels built natively, the AMX/AVX-512 and GPU tests (kernels,
# hybrid runtime, CUDA Graph, prefill placement), then the kernel micro-benchmark.
#   OUT=/dir tests/gpu_host/kernels_runtime_checks.sh [bench args...]
# Writes $OUT/host.txt, build.log, tests.log, bench.json, bench.txt, summary.txt.
# Knobs: TESTS_LIMIT_S (default 240), BENCH_LIMIT_S (default 300), TESTS (pytest paths).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hmoe-kernels-out}"
mkdir -p "$OUT"
source tests/gpu_host/env.sh
install_wheels

{
  echo "== host"; nvidia-smi -L; nproc; free -g | head -2; gcc --version | head -1
  grep -m1 "model name" /proc/cpuinfo; lscpu | grep -i "numa node(s)\|L3"
  grep -m1 -o -w -E "avx512f|avx512_bf16|avx512_vnni|amx_bf16|amx_int8|amx_tile" /proc/cpuinfo |
    sort -u | tr '\n' ' '; echo
  python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
} >"$OUT/host.txt" 2>&1

echo "== build"
start=$SECONDS
python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1
echo "build: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
python3 -c "import engine._hmoe_cpu as m, engine.kernels as k; print('build_info', m.build_info); \
print('features', k.cpu_features())" 2>&1 | tee -a "$OUT/summary.txt"

echo "== tests"
TESTS="${TESTS:-tests/kernels tests/engine/test_engine_runtime.py tests/engine/test_engine_logits.py $(ls tests/engine/test_placement*.py 2>/dev/null | tr '\n' ' ')}"
timeout "${TESTS_LIMIT_S:-240}" python3 -m pytest $TESTS -q -p no:cacheprovider -rs \
  >"$OUT/tests.log" 2>&1
echo "tests: exit $?" | tee -a "$OUT/summary.txt"
tail -n 40 "$OUT/tests.log" >>"$OUT/summary.txt"

[ "${BENCH_LIMIT_S:-300}" = 0 ] && exit 0
echo "== kernel benchmark"
timeout "${BENCH_LIMIT_S:-300}" python3 -m engine.kernels.bench --quick --out "$OUT/bench.json" "$@" \
  >"$OUT/bench.txt" 2>"$OUT/bench.err"
echo "bench: exit $?" | tee -a "$OUT/summary.txt"
tail -n 5 "$OUT/bench.err" >>"$OUT/summary.txt"
exit 0

#!/usr/bin/env bash
# GPU host, one call: the prefill-placement GPU tests, the placement benchmark and the decode
# sweep (hybrid runtime per-layer time vs its CPU backend, spin and CUDA Graph on/off), on a
# synthetic Qwen2-57B-A14B slice. Everything lands in $OUT (logs, JSON, markdown).
#   OUT=/dir tests/gpu_host/hybrid_checks.sh
# Knobs: LAYERS (4), TESTS_LIMIT_S (90), PLACEMENT_LIMIT_S (220), DECODE_LIMIT_S (220).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hmoe-hybrid-out}"
mkdir -p "$OUT"
source tests/gpu_host/env.sh
install_wheels
ensure_extension "$OUT/build.log"
CACHE=/tmp/hmoe-cache
python3 -m experiments.cli synth --arch qwen2_moe --kind slice --layers "${LAYERS:-4}" \
  --cache-dir "$CACHE" --no-progress >"$OUT/synth.log" 2>&1 &
timeout "${TESTS_LIMIT_S:-90}" python3 -m pytest tests/engine/test_placement_gpu.py -q \
  -p no:cacheprovider -rs >"$OUT/placement_tests.log" 2>&1
echo "placement tests: exit $?"; tail -n 3 "$OUT/placement_tests.log"
wait
timeout "${PLACEMENT_LIMIT_S:-220}" python3 tests/gpu_host/placement_bench.py --out "$OUT" \
  --layers "${LAYERS:-4}" --cache-dir "$CACHE" --tokens 32,512,2048,8192 \
  --precisions bf16,int8 --trials 2 >"$OUT/placement.log" 2>&1
echo "placement bench: exit $?"; tail -n 14 "$OUT/placement.log"
timeout "${DECODE_LIMIT_S:-220}" python3 tests/gpu_host/decode_sweep.py --out "$OUT" \
  --layers "${LAYERS:-4}" --cache-dir "$CACHE" --tokens 64 --trials 3 >"$OUT/decode.log" 2>&1
echo "decode sweep: exit $?"; cat "$OUT/decode.log" | tail -n 12
exit 0

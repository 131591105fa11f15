#!/usr/bin/env bash
# GPU host, in as few calls as the device budget allows: everything this wave must prove
# there, in order, each step done once (markers under /tmp/hmoe-wave) so a second call on
# the same warm machine goes on where the first stopped:
#   1. wheels + the C++ extension; llama-cpp-python (CUDA sm_90 + native CPU) built from the
#      trimmed sdist in the background;
#   2. GPU/AMX tests: prefill placement, hybrid runtime + CUDA Graph, logits, kernels;
#   3. the streamed-layer diagnostic (copy vs compute, row bucketing; stream_shapes.py);
#   4. `run_all fast` on the gpu profile with every system (engine per prefill placement,
#      Fiddler, llama.cpp with the artifact's flags and at its best), resumable
#      (tests/gpu_host/fast_run.sh), until the call's deadline.
#   OUT=/dir DEADLINE_S=560 tests/gpu_host/wave_run.sh [run_all overrides...]
# Knobs: LAYERS (2: a 4-layer slice with its F16 + Q8_0 GGUFs and their prefill copies needs
# ~71 GB, over the host's 64 GB disk), SDIST (.whl/llama_cpp_python-*-trimmed.tar.gz),
# HMOE_GIT_COMMIT (the commit to record in provenance: a tree copied without .git otherwise
# records its install-time stamp, "modified since stamp").
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
OUT="${OUT:-/tmp/hmoe-wave-out}"
MARK=/tmp/hmoe-wave
mkdir -p "$OUT" "$MARK"
DEADLINE_S="${DEADLINE_S:-560}"
left() { echo $((DEADLINE_S - (SECONDS - T0))); }
log() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$OUT/wave.log"; }
source tests/gpu_host/env.sh

[ -d .git ] || [ -n "${HMOE_GIT_COMMIT:-}" ] ||
  log "no .git and no HMOE_GIT_COMMIT: provenance will name the install-time stamp's commit"
if [ ! -e "$MARK/setup" ]; then
  {
    nvidia-smi -L; nproc; free -g | head -2; df -h /tmp | tail -1
    grep -m1 "model name" /proc/cpuinfo
    python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"
  } >"$OUT/host.txt" 2>&1
  install_wheels "$OUT/wheels.log"
  SDIST="${SDIST:-$(ls .whl/llama_cpp_python-*-trimmed.tar.gz 2>/dev/null | head -1)}"
  if [ -n "$SDIST" ] && ! python3 -c "import llama_cpp" 2>/dev/null; then
    (
      s=$SECONDS
      build_llamacpp "$SDIST" "$OUT/llamacpp_build.log"
      echo "exit $? in $((SECONDS - s)) s" >"$MARK/llamacpp_built"
    ) &
    log "llama-cpp-python build started in the background"
  fi
  s=$SECONDS
  python3 setup.py build_ext --inplace >"$OUT/build.log" 2>&1
  log "extension build: exit $? in $((SECONDS - s)) s"
  python3 -c "import engine._hmoe_cpu as m; print(m.build_info)" >>"$OUT/wave.log" 2>&1
  touch "$MARK/setup"
fi

if [ ! -e "$MARK/tests" ]; then
  s=$SECONDS
  timeout "${TESTS_LIMIT_S:-300}" python3 -m pytest -q -p no:cacheprovider -rs --durations=5 \
    tests/engine/test_placement_gpu.py tests/engine/test_engine_runtime.py \
    tests/engine/test_engine_logits.py tests/kernels >"$OUT/gpu_tests.log" 2>&1
  log "GPU/AMX tests: exit $? in $((SECONDS - s)) s: $(tail -n 1 "$OUT/gpu_tests.log")"
  touch "$MARK/tests"
fi

if [ ! -e "$MARK/shapes" ] && [ "$(left)" -gt 200 ]; then
  s=$SECONDS
  timeout 120 python3 tests/gpu_host/stream_shapes.py --out "$OUT" >"$OUT/shapes.log" 2>&1
  log "stream shapes: exit $? in $((SECONDS - s)) s"
  touch "$MARK/shapes"
fi

while [ ! -e "$MARK/llamacpp_built" ] && ! python3 -c "import llama_cpp" 2>/dev/null; do
  if ! pgrep -f "pip install.*llama_cpp" >/dev/null; then log "no llama-cpp-python build"; break; fi
  [ "$(left)" -lt 60 ] && { log "llama-cpp-python still building"; exit 0; }
  sleep 5
done
[ -e "$MARK/llamacpp_built" ] && log "llama-cpp-python build: $(cat "$MARK/llamacpp_built")"

limit=$(($(left) - 25))
if [ "$limit" -gt 30 ]; then
  log "run_all fast for up to $limit s"
  OUT="$OUT" RUN_LIMIT_S=$limit LAYERS="${LAYERS:-2}" tests/gpu_host/fast_run.sh \
    'mode.experiments=[prefill,decode,breakdown]' 'profile.prefill_lengths=[32,512,2048,8192]' \
    profile.decode_tokens=64 profile.breakdown_prefill_tokens=2048 "$@" >"$OUT/fast_tail.log" 2>&1
  grep -E "run_all: exit" "$OUT/run.log" | tail -n 1 | tee -a "$OUT/wave.log"
fi
df -h /tmp | tail -1 >>"$OUT/wave.log"
log "done"
exit 0

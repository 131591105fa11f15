#!/usr/bin/env bash
# The llama.cpp baseline on the GPU host (no network), in one go:
#   1. install the wheels carried in .whl/ (hydra-core, omegaconf, antlr4, gguf, diskcache...)
#   2. llama-cpp-python with CUDA (sm_90) + this host's native CPU instructions: built from
#      the carried sdist ($1), or installed from a wheel built earlier ($1 = the .whl, or
#      the directory holding its pieces); a fresh build is saved to $OUT/wheel/ in 15 MiB
#      pieces (reassemble: cat NAME.whl.part-* > NAME.whl) so later calls skip the build,
#      when it is small enough to come back (4 pieces; 0.3.36's CUDA wheel is 266 MB, so
#      it is not, and every fresh machine rebuilds it, about 4-5 minutes)
#   3. the hybrid placement (all layers on the GPU, routed experts in CPU memory, KV on
#      the CPU) on a synthetic Qwen2-57B-A14B layer slice, F16 and Q8_0, prefill and
#      decode, then the bundled engine on the same slice and prompts, one results table;
#      then llama.cpp's prefill again with op offload off (--no-op-offload: the experts'
#      matmuls stay on the CPU instead of the weights being copied to the GPU per batch)
#   4. $OUT/results.tgz (results.csv, provenance.json, report.md, build info) and
#      $OUT/summary.txt; the whole log in $OUT/llamacpp_gpu.log
# Usage (repo root): OUT=/some/dir tests/gpu_host/llamacpp_gpu.sh SDIST|WHEEL|PIECES_DIR
# Knobs: HMOE_LIMIT_S (whole-script budget, default 530 s), HMOE_SAVE_WHEEL (default 1), LLAMA_THREADS (default nproc),
# LAYERS (slice layers, default 1), PREFILL (default [512,2048,8192]), DECODE (default 128),
# TRIALS (default 3), LLAMA_PRECISIONS (default [bf16,int8]: F16 and Q8_0), ENGINE_PRECISIONS (default [bf16]: the reference int8 backend
# dequantizes every expert per call and takes minutes), NOOP_PREFILL (prompt lengths of the
# op-offload-off pass, default [512,2048]: the CPU runs the experts, slowly; empty skips it),
# LLAMA_OPTS (more overrides for the llama.cpp runs, e.g. system.options.n_ubatch=512).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hmoe-llamacpp-out}"
mkdir -p "$OUT"
START=$SECONDS
LIMIT="${HMOE_LIMIT_S:-530}"
left() { echo $((LIMIT - (SECONDS - START))); }
# seconds for a step: what is left minus a reserve for the steps after it, at least 10
budget() { local t=$(($(left) - $1)); echo $((t > 10 ? t : 10)); }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
SITE=/tmp/hmoe-site
SRC="${1:-}"
THREADS="${LLAMA_THREADS:-$(nproc)}"
LAYERS="${LAYERS:-1}"

main() {
echo "== 1. wheels from .whl/"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}"
if ! python3 -c "import diskcache" 2>/dev/null; then
  # llama_cpp/__init__ imports diskcache for its optional prompt cache, which nothing here
  # uses; carry diskcache-*.whl in .whl/ to avoid this stand-in.
  echo "diskcache missing: writing an empty stand-in module (llama-cpp-python's prompt cache only)"
  mkdir -p "$SITE/diskcache" && echo "# stand-in: no disk cache" >"$SITE/diskcache/__init__.py"
fi

echo "== 2. llama-cpp-python (CUDA + native CPU); meanwhile the slice and its F16 GGUF"
# The synthetic slice and its F16 exports do not need llama.cpp: made while it builds, in
# the cache the harness reads (same request, so the runs below find them).
(
  dir=$(python3 -m experiments.cli synth --arch qwen2_moe --kind slice --layers "$LAYERS" \
    --cache-dir "${HMOE_CACHE_DIR:-.cache}" --no-progress | tail -n 1) &&
    python3 -m experiments.cli export-gguf "$dir" --type f16 --quantizer gguf-py --no-progress &&
    python3 -m experiments.cli export-gguf "$dir" --type f16 --quantizer gguf-py --no-progress \
      --vocab-limit 512  # the slice prefill's timing copy (system.options.slice_prefill_vocab)
) >/tmp/hmoe-prep.log 2>&1 &
PREP=$!
gpu_ready() {
  python3 -c "import sys, llama_cpp; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" \
    2>/dev/null
}
if gpu_ready; then
  echo "already importable with GPU offload"
else
  mkdir -p /tmp/hmoe-wheel
  WHEEL=""
  if [ -d "$SRC" ]; then
    first=$(ls "$SRC"/*.whl.part-00 2>/dev/null | head -1)
    [ -n "$first" ] || { echo "no *.whl.part-00 in $SRC"; exit 2; }
    WHEEL="/tmp/hmoe-wheel/$(basename "$first" .part-00)"
    cat "${first%.part-00}".part-* >"$WHEEL"
  elif [[ "$SRC" == *.whl ]]; then
    WHEEL="$SRC"
  elif [ -f "$SRC" ]; then
    echo "building from $SRC (log: /tmp/hmoe-build.log), $(left)s left"
    export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=on \
-DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
    t0=$SECONDS
    timeout "$(budget 150)" python3 -m pip wheel -v --no-build-isolation --no-deps \
      --no-index --no-cache-dir -w /tmp/hmoe-wheel "$SRC" >/tmp/hmoe-build.log 2>&1
    rc=$?
    tail -n 25 /tmp/hmoe-build.log
    echo "build exit $rc after $((SECONDS - t0))s"
    WHEEL=$(ls /tmp/hmoe-wheel/llama_cpp_python-*.whl 2>/dev/null | head -1)
    [ "$rc" = 0 ] && [ -n "$WHEEL" ] || exit 1
    size=$(stat -c %s "$WHEEL")
    if [ "${HMOE_SAVE_WHEEL:-1}" = 1 ] && [ "$size" -gt $((60 << 20)) ]; then
      echo "wheel is $((size >> 20)) MiB: too large to come back through \$OUT, not saved"
    elif [ "${HMOE_SAVE_WHEEL:-1}" = 1 ]; then  # 0: keep $OUT's few file slots for results
      mkdir -p "$OUT/wheel"
      split -b 15m -d -a 2 "$WHEEL" "$OUT/wheel/$(basename "$WHEEL").part-"
      (cd /tmp/hmoe-wheel && sha256sum "$(basename "$WHEEL")")  # in the log: $OUT holds 8 files
      ls -l "$OUT/wheel"
    fi
  else
    echo "usage: $0 SDIST.tar.gz | WHEEL.whl | DIR_WITH_WHEEL_PIECES"
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEEL" || exit 1
  gpu_ready || { echo "llama-cpp-python installed but reports no GPU offload"; exit 1; }
fi

wait "$PREP"
echo "slice + F16 GGUF ready (exit $?):"; tail -n 2 /tmp/hmoe-prep.log

{
  nvidia-smi -L; echo "nproc $(nproc), llama.cpp threads $THREADS"
  grep -m1 "model name" /proc/cpuinfo
  python3 - <<'EOF'
import llama_cpp
from baselines.llamacpp.placement import Ggml
print("llama-cpp-python", llama_cpp.__version__)
print("GPU offload:", bool(llama_cpp.llama_supports_gpu_offload()))
print("system_info:", llama_cpp.llama_print_system_info().decode())
for dev in Ggml(llama_cpp).devices():
    print("device:", dev)
EOF
} 2>&1 | tee /tmp/hmoe-llamacpp_build.txt

echo "== 3. prefill + decode on a Qwen2-57B-A14B slice: llama.cpp, then the engine ($(left)s left)"
RESULTS=/tmp/hmoe-results
RUN=llamacpp_gpu
BASE=(
  model=qw2 "model.synthetic.layers=$LAYERS" profile=gpu "profile.decode_tokens=${DECODE:-128}"
  "profile.trials=${TRIALS:-3}" results_root="$RESULTS" progress=false
)
COMMON=("${BASE[@]}" "profile.prefill_lengths=${PREFILL:-[512,2048,8192]}")
LLAMA=(system=llamacpp "system.precisions=${LLAMA_PRECISIONS:-[bf16,int8]}" "system.options.threads=$THREADS")
read -r -a EXTRA_LLAMA <<<"${LLAMA_OPTS:-}"
LLAMA+=("${EXTRA_LLAMA[@]}")
timeout "$(budget 95)" python3 -m experiments.cli run -m experiment=prefill,decode \
  "${LLAMA[@]}" "${COMMON[@]}" run="$RUN"
echo "llama.cpp done, $(left)s left"
timeout "$(budget 50)" python3 -m experiments.cli run -m experiment=prefill,decode system=engine \
  "system.precisions=${ENGINE_PRECISIONS:-[bf16]}" "${COMMON[@]}" run="$RUN"
echo "engine done, $(left)s left"
NOOP="${NOOP_PREFILL-[512,2048]}"
[ -n "$NOOP" ] && timeout "$(budget 15)" python3 -m experiments.cli run experiment=prefill \
  "${LLAMA[@]}" system.options.op_offload=false "${BASE[@]}" run="${RUN}_no_op_offload" \
  "profile.prefill_lengths=$NOOP"

echo "== 4. results ($(left)s left)"
python3 -m experiments.cli report "$RESULTS/$RUN" >/dev/null 2>&1
# One archive: $OUT brings back at most 8 files, and the wheel's pieces take some of them.
BUNDLE=/tmp/hmoe-bundle
mkdir -p "$BUNDLE"
for f in results.csv provenance.json report.md; do
  cp "$RESULTS/$RUN/$f" "$BUNDLE/" 2>/dev/null
done
cp "$RESULTS/${RUN}_no_op_offload/results.csv" "$BUNDLE/results_no_op_offload.csv" 2>/dev/null
cp /tmp/hmoe-llamacpp_build.txt /tmp/hmoe-prep.log "$BUNDLE/" 2>/dev/null
tar czf "$OUT/results.tgz" -C "$BUNDLE" .
python3 - "$RESULTS/$RUN" "$RESULTS/${RUN}_no_op_offload" >"$OUT/summary.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
import pandas as pd
run, no_op = Path(sys.argv[1]), Path(sys.argv[2])
rows = pd.read_csv(run / "results.csv")
if (no_op / "results.csv").is_file():
    extra = pd.read_csv(no_op / "results.csv")
    extra["system"] = "llamacpp_no_op_offload"
    rows = pd.concat([rows, extra], ignore_index=True)
ok = rows[rows.status == "ok"]
keys = ["experiment", "system", "precision", "immediate_experts", "deferred_experts",
        "prompt_tokens", "decode_tokens"]
table = ok.groupby(keys, dropna=False)["tokens_per_s"].agg(["mean", "std", "count"])
print(table.round(2).to_string())
bad = rows[rows.status != "ok"][["experiment", "system", "precision", "status", "error"]]
if len(bad):
    print("\nnot ok:\n" + bad.drop_duplicates().to_string())
facts = json.loads((run / "provenance.json").read_text()).get("systems", {})
for job, fact in facts.items():
    if "llamacpp" in job:
        keep = ("gguf_type", "placement", "context", "buffers_mib", "tensors_overridden",
                "cpu_features", "devices")
        print(f"\n{job}:", json.dumps({k: fact.get(k) for k in keep}, indent=1))
EOF
cat "$OUT/summary.txt"
echo "done in $((SECONDS - START))s"
}

main 2>&1 | tee "$OUT/llamacpp_gpu.log"
exit "${PIPESTATUS[0]}"

# Sourced by the GPU-host scripts, from the repository root: the environment they share
# (offline, unbuffered, CUDA tools on PATH, carried wheels in $SITE on PYTHONPATH) and the
# steps they share. The host has no network: everything comes from .whl/.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
SITE=/tmp/hmoe-site
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}"

# install_wheels [LOG]: the wheels carried in .whl/ into $SITE (no index, no dependencies).
install_wheels() {
  compgen -G ".whl/*.whl" >/dev/null || return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl >"${1:-/dev/null}" 2>&1 || echo "wheel install failed" >&2
}

# ensure_extension LOG: build the C++ kernels in place unless they already import.
ensure_extension() {
  python3 -c "import engine._hmoe_cpu" 2>/dev/null ||
    python3 setup.py build_ext --inplace >"$1" 2>&1
}

# build_llamacpp SDIST LOG: llama-cpp-python (CUDA sm_90 + this CPU) from a trimmed sdist
# into $SITE, with an empty diskcache module where that package is missing (llama_cpp
# imports it; the harness does not use its cache). Returns the build's exit status.
build_llamacpp() {
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=on" \
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" \
    "$1" >"$2" 2>&1
  local rc=$?
  python3 -c "import diskcache" 2>/dev/null ||
    { mkdir -p "$SITE/diskcache" && echo "# stand-in: no disk cache" >"$SITE/diskcache/__init__.py"; }
  return $rc
}

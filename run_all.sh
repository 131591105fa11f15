#!/usr/bin/env bash
# Reproduce the SOSP'25 KTransformers evaluation: Figure 11 (prefill), Figure 12 (decode),
# Figure 13 (breakdown), Table 2 (accuracy), then figures and report.md.
#
#   ./run_all.sh fast|full [hydra overrides...]   e.g. ./run_all.sh fast profile=cpu rerun=true
#   ./run_all.sh setup [--dev]                    only create/update the virtual environment
#
# Creates or updates the project's virtual environment (.venv, or $HMOE_VENV) first:
# CPU PyTorch where there is no NVIDIA GPU. Rerunning the same command resumes: points
# already measured are skipped (rerun=true measures them again).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${HMOE_VENV:-.venv}"
TORCH_RANGE="torch>=2.4,<2.16"
TORCH_CPU_PIN="torch==2.13.0+cpu"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

usage() {
  echo "usage: ./run_all.sh fast|full [hydra overrides...]" >&2
  echo "       ./run_all.sh setup [--dev]    (create/update the virtual environment only)" >&2
}

find_python() {
  local cand
  for cand in "${HMOE_PYTHON:-}" python3 python3.13 python3.12 python3.11 python; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "error: Python >= 3.11 is required (set HMOE_PYTHON to its path)" >&2
  return 1
}

install_torch() {
  local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing CUDA PyTorch ($TORCH_RANGE)"
    "${pip[@]}" "$TORCH_RANGE"
    return
  fi
  echo "setup: no NVIDIA GPU: installing CPU PyTorch"
  "${pip[@]}" --retries 1 --timeout 30 "$TORCH_CPU_PIN" --extra-index-url "$CPU_INDEX" ||
    "${pip[@]}" --retries 1 --timeout 30 "$TORCH_RANGE" --index-url "$CPU_INDEX" ||
    "${pip[@]}" "$TORCH_RANGE"
}

install_optional() {
  # An optional extra that fails to install (e.g. no C++ compiler for llama.cpp) is reported,
  # and its experiments are recorded NOT RUN with the reason; the rest keeps working.
  local extra="$1"
  if [ "$extra" = "llamacpp" ] && [ -z "${CMAKE_ARGS:-}" ] && command -v nvcc >/dev/null 2>&1 &&
     command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export CMAKE_ARGS="-DGGML_CUDA=on"   # llama.cpp with CUDA where there is a GPU and nvcc
  fi
  echo "setup: installing the optional extra '$extra'${CMAKE_ARGS:+ (CMAKE_ARGS=$CMAKE_ARGS)}"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[$extra]"; then
    echo "setup: WARNING: extra '$extra' could not be installed; its points will be NOT RUN" >&2
  fi
}

ensure_venv() {
  local dev="$1" py stamp want extra
  if [ ! -x "$VENV/bin/python" ]; then
    py=$(find_python)
    echo "setup: creating virtual environment $VENV with $("$py" --version)"
    "$py" -m venv "$VENV"
  fi
  stamp="$VENV/.hmoe-setup"
  want="$(sha256sum pyproject.toml | cut -c1-16) extras=$EXTRAS${dev:+,dev}"
  if [ -f "$stamp" ]; then
    # Up to date: same pyproject.toml and at least the extras asked for were installed.
    local have
    have="$(cat "$stamp")"
    if [ "$have" = "$want" ] || { [ -z "$dev" ] && [ "$have" = "$want,dev" ]; }; then
      return 0
    fi
  fi
  "$VENV/bin/python" -c 'import torch' 2>/dev/null || install_torch
  echo "setup: installing hybrid-moe-ae${dev:+[dev]} into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".${dev:+[dev]}"
  for extra in ${EXTRAS//,/ }; do
    install_optional "$extra"
  done
  echo "$want" > "$stamp"
}

# Optional extras installed by default: lm-eval (Table 2) and llama-cpp-python (baseline).
# HMOE_EXTRAS="" skips them (their points are then NOT RUN with the install hint).
EXTRAS="${HMOE_EXTRAS-eval,llamacpp}"

mode="${1:-}"
case "$mode" in
  setup)
    dev=""
    [ "${2:-}" = "--dev" ] && dev="dev"
    ensure_venv "$dev"
    echo "setup: ready ($VENV)"
    ;;
  fast|full)
    shift
    ensure_venv ""
    exec "$VENV/bin/hmoe" all "$mode" "$@"
    ;;
  *)
    usage
    exit 2
    ;;
esac

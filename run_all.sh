#!/usr/bin/env bash
# Reproduce the SOSP'25 KTransformers evaluation: Figure 11 (prefill), Figure 12 (decode),
# Figure 13 (breakdown), Table 2 (accuracy), then figures and report.md.
#
#   ./run_all.sh fast|full [hydra overrides...]   e.g. ./run_all.sh fast profile=cpu rerun=true
#   ./run_all.sh setup [--dev]                    only create/update the virtual environment
#   ./run_all.sh setup [--dev] --wheelhouse DIR   the same, offline: every package from DIR
#   ./run_all.sh wheelhouse DIR [--python 3.12] [--cuda] [--build-llama] [--no-torch] [--glibc 2.28]
#                                                 download every wheel for an offline machine
#
# Creates or updates the project's virtual environment (.venv, or $HMOE_VENV) first:
# CPU PyTorch where there is no NVIDIA GPU. Rerunning the same command resumes: points
# already measured are skipped (rerun=true measures them again).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${HMOE_VENV:-.venv}"
TORCH_RANGE="torch>=2.4,<2.16"
TORCH_CPU_PIN="torch==2.13.0+cpu"
TORCH_LOCAL_PIN="torch==2.13.0"
CPU_INDEX="https://download.pytorch.org/whl/cpu"

usage() {
  echo "usage: ./run_all.sh fast|full [hydra overrides...]"
  echo "       ./run_all.sh setup [--dev]    (create/update the virtual environment only)"
  echo "       ./run_all.sh setup [--dev] --wheelhouse DIR   (the same, offline, from DIR)"
  echo "       ./run_all.sh wheelhouse DIR [--python 3.12] [--cuda] [--build-llama] [--no-torch]"
  echo "                  [--glibc 2.28]   (every wheel an offline machine needs, into DIR)"
  echo "exit status: 0 every point ok or NOT RUN; 1 some point failed; 2 bad input or"
  echo "             configuration; 130 interrupted (rerun the same command to resume)"
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

index_reachable() {
  # One quick probe instead of pip retrying an unreachable index for every package.
  "$VENV/bin/python" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5)
PY
}

install_torch() {
  local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  if [ -n "${WHEELHOUSE:-}" ]; then
    echo "setup: [2/4] installing PyTorch from the wheelhouse $WHEELHOUSE (no network)"
    "${pip[@]}" "$TORCH_RANGE"
    return
  fi
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: [2/4] NVIDIA GPU found: installing CUDA PyTorch ($TORCH_RANGE)"
    "${pip[@]}" "$TORCH_RANGE"
    return
  fi
  if index_reachable "$CPU_INDEX/"; then
    echo "setup: [2/4] no NVIDIA GPU: installing CPU PyTorch from $CPU_INDEX"
    "${pip[@]}" "$TORCH_CPU_PIN" --extra-index-url "$CPU_INDEX" ||
      "${pip[@]}" "$TORCH_RANGE" --index-url "$CPU_INDEX"
  else
    echo "setup: [2/4] no NVIDIA GPU, $CPU_INDEX unreachable: installing PyTorch" \
      "$TORCH_LOCAL_PIN from the configured package index"
    "${pip[@]}" "$TORCH_LOCAL_PIN" || "${pip[@]}" "$TORCH_RANGE"
  fi
}

install_optional() {
  # An optional extra that fails to install (e.g. no C++ compiler for llama.cpp) is reported,
  # and its experiments are recorded NOT RUN with the reason; the rest keeps working.
  local extra="$1" started
  if [ "$extra" = "llamacpp" ] && [ -z "${CMAKE_ARGS:-}" ] && command -v nvcc >/dev/null 2>&1 &&
     command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export CMAKE_ARGS="-DGGML_CUDA=on"   # llama.cpp with CUDA where there is a GPU and nvcc
  fi
  case "$extra" in
    llamacpp)
      if "$VENV/bin/python" -c 'import llama_cpp' >/dev/null 2>&1; then
        echo "setup: [4/4] llama-cpp-python already installed"
        return 0
      fi
      if [ -n "${WHEELHOUSE:-}" ] && compgen -G "$WHEELHOUSE/llama_cpp_python-*.whl" >/dev/null; then
        echo "setup: [4/4] installing llama-cpp-python from the wheel in $WHEELHOUSE"
      else
        echo "setup: [4/4] building llama-cpp-python from source for this CPU${CMAKE_ARGS:+ ($CMAKE_ARGS)}:"
        echo "setup:       5-14 minutes on 2 cores (measured 4.6 min on a Zen 5 EPYC, 13.5 on an older"
      echo "setup:       2-core machine), 4-5 minutes with CUDA on 16 cores;"
        echo "setup:       pip prints nothing while it compiles"
      fi ;;
    *)
      echo "setup: [4/4] installing the optional extra '$extra'" ;;
  esac
  started=$(date +%s)
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[$extra]"; then
    echo "setup: WARNING: extra '$extra' could not be installed; its points will be NOT RUN" >&2
    return 0
  fi
  echo "setup:       '$extra' done in $(( $(date +%s) - started )) s"
}

source_stamp() {
  # What decides whether the install is current: the project metadata and the C++ sources.
  cat pyproject.toml setup.py $(find engine/csrc -type f 2>/dev/null | sort) 2>/dev/null |
    sha256sum | cut -c1-16
}

ensure_venv() {
  local dev="$1" py stamp want extra
  if [ ! -x "$VENV/bin/python" ]; then
    py=$(find_python)
    echo "setup: [1/4] creating virtual environment $VENV with $("$py" --version)"
    "$py" -m venv "$VENV"
  fi
  stamp="$VENV/.hmoe-setup"
  want="$(source_stamp) extras=$EXTRAS${dev:+,dev}"
  if [ -f "$stamp" ]; then
    # Up to date: same sources and at least the extras asked for were installed.
    local have
    have="$(cat "$stamp")"
    if [ "$have" = "$want" ] || { [ -z "$dev" ] && [ "$have" = "$want,dev" ]; }; then
      return 0
    fi
  fi
  "$VENV/bin/python" -c 'import torch' 2>/dev/null || install_torch
  echo "setup: [3/4] installing hybrid-moe-ae${dev:+[dev]} into $VENV (builds the C++ expert kernels)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".${dev:+[dev]}"
  "$VENV/bin/python" -c 'import engine.kernels as k; print("setup:       C++ kernels:",
    "built" if k.available() else "NOT built (" + str(k.build_error()) + "); the reference backend is used")' ||
    true
  for extra in ${EXTRAS//,/ }; do
    install_optional "$extra"
  done
  echo "$want" > "$stamp"
}

# -- offline installation: a wheelhouse ------------------------------------------------------
# Everything a machine without network needs, downloaded here for its Python and platform:
# the dependencies and extras of pyproject.toml, the build requirements (this project's C++
# kernels: setuptools, wheel, pybind11; llama-cpp-python: scikit-build-core, cmake, ninja),
# PyTorch (CPU, or CUDA with --cuda), pure-Python wheels built here for packages that publish
# only source, and llama-cpp-python as its source trimmed of what the build does not use
# (llama.cpp compiles for the machine it is built on: --build-llama adds a wheel built here,
# for a target with this machine's CPU, GPU and Python). The tree is stamped with its commit.
TRIM_LLAMA_PY='
import os, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
DROP = {"models", "docs", "media", "benches", "tests", "examples"}
def keep(name):
    parts = name.split("/")
    if ".git" in parts:
        return False
    return not any(parts[i:i + 2] == ["vendor", "llama.cpp"] and parts[i + 2] in DROP
                   for i in range(len(parts) - 2))
kept = dropped = 0
with tarfile.open(src) as tin, tarfile.open(dst + ".tmp", "w:gz") as tout:
    for member in tin.getmembers():
        if keep(member.name):
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
            kept += 1
        else:
            dropped += 1
os.replace(dst + ".tmp", dst)
print(f"wheelhouse:       trimmed {os.path.basename(src)}: {kept} files kept, {dropped} dropped "
      f"({os.path.getsize(src) >> 20} -> {os.path.getsize(dst) >> 20} MiB)")
'

wheelhouse_requirements() {
  # pyproject.toml requirements: dependencies, build-system, the extras $1 (comma list) + dev
  "$1" - "$2" <<'PY'
import sys, tomllib
with open("pyproject.toml", "rb") as fh:
    meta = tomllib.load(fh)
extras = [e for e in sys.argv[1].split(",") if e] + ["dev"]
reqs = list(meta["project"]["dependencies"]) + list(meta["build-system"]["requires"])
for extra in extras:
    reqs += meta["project"].get("optional-dependencies", {}).get(extra, [])
print("\n".join(dict.fromkeys(reqs)))
PY
}

build_wheelhouse() {
  local dir="" pyver="" cuda="" build_llama="" no_torch="" glibc="2.28" tool py arch tmp
  while [ $# -gt 0 ]; do
    case "$1" in
      --python) pyver="${2:-}"; shift ;;
      --cuda) cuda=1 ;;
      --build-llama) build_llama=1 ;;
      --no-torch) no_torch=1 ;;
      --glibc) glibc="${2:-}"; shift ;;
      -*) echo "error: unknown wheelhouse option $1" >&2; usage >&2; exit 2 ;;
      *) [ -z "$dir" ] || { usage >&2; exit 2; }; dir="$1" ;;
    esac
    shift
  done
  [ -n "$dir" ] || { usage >&2; exit 2; }
  py=$(find_python)
  tool="$py"
  [ -x "$VENV/bin/python" ] && tool="$VENV/bin/python"
  "$tool" -m pip --version >/dev/null 2>&1 ||
    { echo "error: $tool has no pip (run ./run_all.sh setup first, or install pip)" >&2; exit 2; }
  [ -n "$pyver" ] || pyver=$("$tool" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if ! [[ "$pyver" =~ ^3\.(1[1-9]|[2-9][0-9])$ ]]; then
    echo "error: --python $pyver: the project needs Python 3.11 or newer (e.g. --python 3.12)" >&2
    exit 2
  fi
  if ! [[ "$glibc" =~ ^2\.([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -lt 17 ]; then
    echo "error: --glibc $glibc: give the target's glibc version, 2.17 or newer (e.g. 2.28)" >&2
    exit 2
  fi
  local minor="${BASH_REMATCH[1]}"
  if [ -n "$build_llama" ]; then
    [[ ",$EXTRAS," == *,llamacpp,* ]] ||
      { echo "error: --build-llama needs llamacpp in HMOE_EXTRAS" >&2; exit 2; }
    [ "$("$tool" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$pyver" ] || {
      echo "error: --build-llama builds with this machine's Python, which is not $pyver" >&2
      exit 2
    }
  fi
  arch=$(uname -m)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  tmp=$(mktemp -d)
  WH_TMP="$tmp"
  trap 'rm -rf "$WH_TMP"' EXIT
  local pip=("$tool" -m pip --disable-pip-version-check)
  local platforms=() m
  for ((m = minor; m >= 17; m--)); do platforms+=(--platform "manylinux_2_${m}_${arch}"); done
  platforms+=(--platform "manylinux2014_${arch}")
  echo "wheelhouse: $dir for CPython $pyver on manylinux (glibc >= 2.17, <= $glibc) $arch;" \
    "PyTorch: $([ -n "$no_torch" ] && echo none || { [ -n "$cuda" ] && echo CUDA || echo CPU; })"

  local reqs=() req name
  while IFS= read -r req; do
    name=$(echo "$req" | sed -E 's/^([A-Za-z0-9._-]+).*/\1/' | tr 'A-Z_.' 'a-z--')
    case "$name" in
      torch|llama-cpp-python) ;;  # below: a PyTorch build, and a trimmed llama.cpp source
      *) reqs+=("$req") ;;
    esac
  done < <(wheelhouse_requirements "$tool" "$EXTRAS")

  if [[ ",$EXTRAS," == *,llamacpp,* ]]; then
    local spec sdist
    spec=$(wheelhouse_requirements "$tool" "$EXTRAS" | grep -i '^llama[-_]cpp[-_]python' | head -1)
    echo "wheelhouse: [1/4] llama-cpp-python source ($spec), trimmed"
    "${pip[@]}" download -q --no-deps --no-binary=:all: -d "$tmp/llama" "$spec"
    sdist=$(ls "$tmp"/llama/*.tar.gz | head -1)
    "$tool" -c "$TRIM_LLAMA_PY" "$sdist" "$dir/$(basename "$sdist")"
    # its build requirements (scikit-build-core), what scikit-build-core fetches when the
    # target has no recent cmake/ninja, and its own dependencies
    while IFS= read -r req; do reqs+=("$req"); done < <(
      "$tool" - "$dir/$(basename "$sdist")" <<'PY'
import sys, tarfile, tomllib
with tarfile.open(sys.argv[1]) as tar:
    member = next(m for m in tar.getmembers() if m.name.count("/") == 1
                  and m.name.endswith("/pyproject.toml"))
    meta = tomllib.loads(tar.extractfile(member).read().decode())
deps = meta["project"].get("dependencies", [])  # static in llama-cpp-python's pyproject
print("\n".join(meta["build-system"]["requires"] + ["cmake>=3.21", "ninja"] + deps))
PY
    )
  else
    echo "wheelhouse: [1/4] llama-cpp-python: not in HMOE_EXTRAS, skipped"
  fi

  echo "wheelhouse: [2/4] building wheels of pure-Python packages published only as source"
  "${pip[@]}" install -q --dry-run --ignore-installed --report "$tmp/plan.json" "${reqs[@]}"
  "$tool" - "$tmp/plan.json" >"$tmp/sdists.txt" <<'PY'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    if not item["download_info"]["url"].endswith(".whl"):
        print(f'{item["metadata"]["name"]}=={item["metadata"]["version"]}')
PY
  while IFS= read -r req; do
    [ -n "$req" ] || continue
    "${pip[@]}" wheel -q --no-deps -w "$tmp/built" "$req"
  done <"$tmp/sdists.txt"
  if compgen -G "$tmp/built/*.whl" >/dev/null; then
    for whl in "$tmp"/built/*.whl; do
      case "$whl" in
        *-none-any.whl) cp "$whl" "$dir/"; echo "wheelhouse:       built $(basename "$whl")" ;;
        *) echo "error: $(basename "$whl") is not pure Python: it cannot be built here for" \
             "another machine (install it on the target from source)" >&2; exit 1 ;;
      esac
    done
  fi

  local torch=() index=()
  if [ -n "$no_torch" ]; then
    :
  elif [ -n "$cuda" ]; then
    torch=("$TORCH_RANGE")
  elif "$tool" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
       "$CPU_INDEX/" >/dev/null 2>&1; then
    torch=("$TORCH_CPU_PIN"); index=(--extra-index-url "$CPU_INDEX")
  else
    echo "wheelhouse:       $CPU_INDEX unreachable: PyTorch $TORCH_LOCAL_PIN from the configured" \
      "package index (on PyPI that is the CUDA build)"
    torch=("$TORCH_LOCAL_PIN")
  fi
  echo "wheelhouse: [3/4] downloading wheels for CPython $pyver (this can take a while)"
  "${pip[@]}" download -q --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" --find-links "$dir" "${index[@]}" -d "$dir" "${reqs[@]}" "${torch[@]}"

  echo "wheelhouse:       checking that everything resolves from $dir alone (no index)"
  "$tool" -m pip --isolated download -q --no-index --only-binary=:all: \
    --python-version "$pyver" --implementation cp "${platforms[@]}" --find-links "$dir" \
    -d "$dir" "${reqs[@]}" "${torch[@]}"

  if [ -n "$build_llama" ]; then
    [ -z "$cuda" ] || [ -n "${CMAKE_ARGS:-}" ] || export CMAKE_ARGS="-DGGML_CUDA=on"
    echo "wheelhouse: [4/4] building llama-cpp-python for this machine's CPU${CMAKE_ARGS:+ ($CMAKE_ARGS)}," \
      "offline from the wheelhouse (13-14 minutes on 2 cores)"
    PIP_NO_INDEX=1 "${pip[@]}" wheel -q --no-deps --find-links "$dir" -w "$dir" \
      "$dir"/llama_cpp_python-*.tar.gz
  elif [[ ",$EXTRAS," == *,llamacpp,* ]]; then
    echo "wheelhouse: [4/4] llama-cpp-python stays source (built on the target; --build-llama" \
      "builds it here for a target like this machine)"
  fi
  local commit
  commit=$("$tool" - <<'PY'
import sys
sys.path.insert(0, ".")
from experiments.provenance import git_state, stamp_build_info
print((stamp_build_info() or git_state())["commit"])
PY
  )
  cat >"$dir/hmoe-wheelhouse.txt" <<EOF
python=$pyver
platform=manylinux_2_${minor}_${arch}
torch=$(cd "$dir" && ls torch-*.whl 2>/dev/null | head -1 || true)
extras=$EXTRAS
commit=$commit
made=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
  echo "wheelhouse: ready: $(ls "$dir" | wc -l) files, $(du -sh "$dir" | cut -f1); code commit $commit"
  echo "wheelhouse: on the target: ./run_all.sh setup --wheelhouse $dir"
}

use_wheelhouse() {
  # setup --wheelhouse DIR: every pip call below installs from DIR, never from the network
  local dir="$1" want have
  [ -d "$dir" ] || { echo "error: wheelhouse $dir is not a directory" >&2; exit 2; }
  WHEELHOUSE=$(cd "$dir" && pwd)
  export WHEELHOUSE PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELHOUSE"
  want=$(sed -n 's/^python=//p' "$WHEELHOUSE/hmoe-wheelhouse.txt" 2>/dev/null || true)
  if [ -n "$want" ]; then
    if [ -x "$VENV/bin/python" ]; then
      have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    else
      have=$("$(find_python)" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    fi
    if [ "$have" != "$want" ]; then
      echo "error: the wheelhouse $dir is for Python $want, this environment's is $have" \
        "(HMOE_PYTHON=python$want, or make it with --python $have)" >&2
      exit 2
    fi
  fi
  echo "setup: offline: packages only from the wheelhouse $WHEELHOUSE"
}

# Optional extras installed by default: lm-eval (Table 2) and llama-cpp-python (baseline).
# HMOE_EXTRAS="" skips them (their points are then NOT RUN with the install hint).
EXTRAS="${HMOE_EXTRAS-eval,llamacpp}"

mode="${1:-}"
case "$mode" in
  setup)
    dev=""
    shift
    while [ $# -gt 0 ]; do
      case "$1" in
        --dev) dev="dev" ;;
        --wheelhouse) [ -n "${2:-}" ] || { usage >&2; exit 2; }; use_wheelhouse "$2"; shift ;;
        *) echo "error: unknown setup option $1" >&2; usage >&2; exit 2 ;;
      esac
      shift
    done
    ensure_venv "$dev"
    echo "setup: ready ($VENV)"
    ;;
  wheelhouse)
    shift
    build_wheelhouse "$@"
    ;;
  fast|full)
    shift
    ensure_venv ""
    exec "$VENV/bin/hmoe" all "$mode" "$@"
    ;;
  -h|--help|help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac

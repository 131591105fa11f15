"""Builds of the C++ sources: the sanitizer self-test and a warnings-are-errors compile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine import kernels

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "engine" / "csrc"
# every source of the extension but its Python bindings (as setup.py builds them)
LIB_SOURCES = sorted(p.name for p in CSRC.glob("*.cpp") if p.name != "bindings.cpp")
CXX = os.environ.get("CXX", "g++")


def _need_compiler() -> str:
    path = shutil.which(CXX)
    if not path:
        pytest.skip(f"no C++ compiler ({CXX}) on PATH")
    return path


def test_selftest_under_sanitizers(tmp_path: Path) -> None:
    """portable + AVX-512 + AMX (software-emulated tiles where the CPU has no AMX) vs double."""
    cxx = _need_compiler()
    feats = kernels.cpu_features()
    real_amx = feats["amx_bf16"] and feats["amx_int8"] and feats["amx_os_permitted"]
    exe = tmp_path / "selftest"
    cmd = [
        cxx,
        "-std=c++17",
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-Wall",
        "-Wextra",
        f"-I{CSRC}",
        str(REPO / "tests" / "kernels" / "selftest.cpp"),
        *(str(CSRC / s) for s in LIB_SOURCES),
        "-o",
        str(exe),
        "-pthread",
        "-ldl",
    ]
    if not real_amx:
        cmd.insert(1, "-DHMOE_AMX_EMULATE")
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, (run.stdout[-4000:], run.stderr[-4000:])
    assert ", 0 failures" in run.stdout, run.stdout[-2000:]


def test_sources_compile_without_warnings(tmp_path: Path) -> None:
    """Every source (bindings included) at -O2 -Wall -Wextra -Werror, compile only."""
    cxx = _need_compiler()
    try:
        import pybind11
    except ImportError:
        pytest.skip("pybind11 is not installed (needed for bindings.cpp)")
    includes = [
        f"-I{CSRC}",
        f"-I{pybind11.get_include()}",
        f"-I{sysconfig.get_paths()['include']}",
    ]
    flags = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-c"]

    def compile_one(src: str) -> tuple[str, int, str]:
        cmd = [cxx, *flags, *includes, str(CSRC / src), "-o", str(tmp_path / (src + ".o"))]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        return src, r.returncode, r.stderr

    def no_x86(src: str) -> tuple[str, int, str]:
        # the non-x86 configuration (portable only) must compile cleanly too
        cmd = [
            cxx,
            "-std=c++17",
            "-fsyntax-only",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-DHMOE_FORCE_NO_X86",
            f"-I{CSRC}",
            str(CSRC / src),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        return f"{src} (no x86)", r.returncode, r.stderr

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        results = list(pool.map(compile_one, [*LIB_SOURCES, "bindings.cpp"]))
        results += list(pool.map(no_x86, LIB_SOURCES))
    failed = [(src, err[-3000:]) for src, rc, err in results if rc != 0]
    assert not failed, failed

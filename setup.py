"""Build of the optional C++ extension ``engine._hmoe_cpu`` (CPU MoE kernels, pybind11).

Everything else about the package lives in pyproject.toml. The extension is optional: when it
cannot be built (no compiler, no pybind11, an old compiler) ``pip install -e .`` still succeeds
and ``engine.kernels.build_error()`` reports why the Python side falls back.

Flags: baseline ISA only (no -march=native: the .so may move to another CPU); AVX-512 and AMX
code is selected at run time through per-function target attributes. ``HMOE_KERNEL_CFLAGS``
adds compiler flags (e.g. ``-fsanitize=address``), ``HMOE_KERNEL_LDFLAGS`` linker flags.
Build in place for development: ``python setup.py build_ext --inplace``.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "engine" / "csrc"
SOURCES = sorted(p.name for p in CSRC.glob("*.cpp"))  # the library + bindings.cpp
CFLAGS = [
    "-O3",
    "-std=c++17",
    "-fno-math-errno",
    "-ffp-contract=off",
    "-fvisibility=hidden",
    "-Wall",
    "-Wextra",
    "-pthread",
]


# Probes: the intrinsics the ISA files use, compiled with per-function target attributes.
PROBES = {
    "HMOE_DISABLE_AVX512": """
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,fma")))
float f(const void* p) {
  __m512i w = _mm512_loadu_si512(p);
  __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)w, (__m512bh)w);
  __m512i b = _mm512_dpwssd_epi32(w, w, w);
  __m256bh h = _mm512_cvtneps_pbh(a);
  (void)h;
  return _mm512_reduce_add_ps(_mm512_add_ps(a, _mm512_cvtepi32_ps(b)));
}
""",
    "HMOE_DISABLE_AMX": """
#include <immintrin.h>
__attribute__((target("amx-tile,amx-bf16,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,"
                      "avx512bf16,avx512vnni,fma")))
void f(const void* cfg, void* c) {
  _tile_loadconfig(cfg);
  _tile_zero(0);
  _tile_loadd(4, c, 64);
  _tile_loadd(6, c, 64);
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbssd(1, 4, 6);
  _tile_stored(0, c, 64);
  _tile_release();
}
""",
}


class OptionalBuildExt(build_ext):
    """build_ext that reports a failed extension build instead of failing the install."""

    def build_extensions(self) -> None:
        for ext in self.extensions:
            for macro, code in PROBES.items():
                if not self._probe(code, ext.extra_compile_args):
                    print(f"NOTE: probe failed, building with -D{macro}", file=sys.stderr)
                    ext.define_macros.append((macro, "1"))
                    if macro == "HMOE_DISABLE_AVX512":
                        ext.define_macros.append(("HMOE_DISABLE_AMX", "1"))
                        break
        super().build_extensions()

    def _probe(self, code: str, flags: list[str]) -> bool:
        import tempfile

        if not sys.platform.startswith("linux") or os.uname().machine not in ("x86_64", "AMD64"):
            return True  # the ISA files compile to stubs off x86-64
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "probe.cpp"
            src.write_text(code)
            try:
                self.compiler.compile([str(src)], output_dir=tmp, extra_postargs=[*flags, "-w"])
            except Exception:  # noqa: BLE001 - CompileError and friends
                return False
        return True

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure leaves the pure-Python fallback
            self._report(exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._report(exc)

    @staticmethod
    def _report(exc: Exception) -> None:
        print(
            f"WARNING: the C++ MoE kernel extension engine._hmoe_cpu was not built ({exc}); "
            "the engine falls back to the PyTorch reference expert backend",
            file=sys.stderr,
        )


def extensions() -> list:
    try:
        from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
    except ImportError:
        print(
            "WARNING: pybind11 is not installed: the C++ MoE kernel extension is not built",
            file=sys.stderr,
        )
        return []
    # Compile the sources in parallel (HMOE_BUILD_JOBS, default: all CPUs).
    ParallelCompile("HMOE_BUILD_JOBS").install()
    extra = shlex.split(os.environ.get("HMOE_KERNEL_CFLAGS", ""))
    ldextra = shlex.split(os.environ.get("HMOE_KERNEL_LDFLAGS", ""))
    ext = Pybind11Extension(
        "engine._hmoe_cpu",
        sources=[str(Path("engine") / "csrc" / s) for s in SOURCES],
        include_dirs=[str(CSRC)],
        extra_compile_args=CFLAGS + extra,
        extra_link_args=["-pthread", *ldextra],
        libraries=["dl"] if sys.platform.startswith("linux") else [],
        cxx_std=17,
    )
    ext.optional = True
    return [ext]


# -- Provenance stamp (separate from the kernel build above) ---------------------------------
def stamp_build_info() -> None:
    """Record which commit this tree is in experiments/_build_info.py (git-ignored), so a
    copy without .git still tells provenance which code produced its rows. Without git and
    HMOE_GIT_COMMIT the existing stamp is kept; a failure here never fails the install."""
    sys.path.insert(0, str(ROOT))
    try:
        from experiments.provenance import stamp_build_info as stamp

        info = stamp(ROOT)
        if info:
            print(f"provenance stamp: commit {info['commit']} ({info['source']})", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - provenance falls back to 'unknown'
        print(f"WARNING: provenance stamp not written ({exc})", file=sys.stderr)
    finally:
        sys.path.remove(str(ROOT))


stamp_build_info()
setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

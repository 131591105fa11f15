"""Load llama.cpp's shared libraries before numpy's, in the processes that run llama.cpp.

On the GPU host (llama-cpp-python 0.3.36 built with CUDA sm_90 + native CPU, numpy 2.5 with
scipy-openblas, Python 3.12) every model load segfaults in ``llama_model::print_info`` when
numpy was imported before ``llama_cpp``; imported after it, the same load runs. torch
imports numpy, which is how it first showed (and why llama.cpp runs in its own process,
:mod:`baselines.llamacpp.worker`, since the harness has both loaded long before). Those
processes call :func:`load_llama_cpp_first` before any import that could load numpy.
Standard library only.
"""

from __future__ import annotations

import contextlib
import sys


def load_llama_cpp_first() -> None:
    """Import ``llama_cpp`` (its libraries load, then it imports numpy itself) if installed.

    Does nothing when llama-cpp-python is missing or its libraries do not load: the caller
    reports that when it needs llama.cpp. RuntimeError when numpy is already loaded and
    llama_cpp is not, since loading it now would give the crash this module exists to avoid.
    """
    if "llama_cpp" in sys.modules:
        return
    if "numpy" in sys.modules:
        raise RuntimeError(
            "numpy was imported before llama_cpp in a llama.cpp process; llama.cpp's CUDA "
            "build crashes on load in that order (see baselines.llamacpp.load_order)"
        )
    with contextlib.suppress(ImportError, OSError, RuntimeError):
        import llama_cpp  # noqa: F401

"""Enqueue a C host function on a CUDA stream (``cudaLaunchHostFunc``) without compiling.

The CPU expert kernels expose plain C entry points (``void fn(void* slot)``) to submit a
task slot and wait for it; this module calls the CUDA runtime's ``cudaLaunchHostFunc``
through ctypes so that submission and synchronisation of CPU work are stream operations:
they run in stream order, the Python thread never blocks on them, and a CUDA Graph
captures them as host nodes. It uses the very ``libcudart`` PyTorch loaded (found in the
process's memory map), so streams and graphs are those of PyTorch's runtime.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import cache
from pathlib import Path

import torch

from engine.errors import EngineUnavailable


def _loaded_cudart() -> str | None:
    """Path of the libcudart this process already mapped (PyTorch's), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if "libcudart" in os.path.basename(path) and os.path.isfile(path):
            return path
    return None


def _candidate_cudarts() -> list[str]:
    torch_lib = Path(torch.__file__).resolve().parent / "lib"
    found = sorted(glob.glob(str(torch_lib / "libcudart*.so*")))
    for root in (Path(torch.__file__).resolve().parents[1] / "nvidia",):
        found += sorted(glob.glob(str(root / "**" / "libcudart.so*"), recursive=True))
    return found + ["libcudart.so"]


@cache
def _launch_host_func():  # noqa: ANN202 - a ctypes function
    if not torch.cuda.is_available():
        raise EngineUnavailable("CUDA host functions need a CUDA GPU")
    torch.cuda.init()
    errors = []
    for path in [p for p in (_loaded_cudart(),) if p] + _candidate_cudarts():
        try:
            lib = ctypes.CDLL(path)
            fn = lib.cudaLaunchHostFunc
        except (OSError, AttributeError) as exc:
            errors.append(f"{path}: {exc}")
            continue
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        fn.restype = ctypes.c_int
        return fn
    raise EngineUnavailable("cudaLaunchHostFunc not found: " + "; ".join(errors))


def launch_host_func(
    fn_address: int, user_data: int, stream: torch.cuda.Stream | None = None
) -> None:
    """Enqueue ``fn(user_data)`` on ``stream`` (the current stream by default)."""
    stream = stream or torch.cuda.current_stream()
    code = _launch_host_func()(ctypes.c_void_p(stream.cuda_stream), ctypes.c_void_p(fn_address),
                               ctypes.c_void_p(user_data))  # fmt: skip
    if code != 0:
        raise RuntimeError(f"cudaLaunchHostFunc failed with CUDA error {code}")

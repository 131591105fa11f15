"""What machine this is: CPU model and ISA flags, cores, NUMA nodes, memory, GPUs.

Used to choose the profile (cpu / gpu) and recorded in every run's provenance.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

import psutil

_FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def numa_node_count() -> int:
    """NUMA nodes the kernel reports (1 where it reports none)."""
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    return max(1, len(nodes))


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs seen by NVML (empty without a driver), else by torch."""
    found: list[dict[str, Any]] = []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else name
                mem = pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30
                found.append({"name": name, "memory_gb": round(mem, 1), "driver": driver})
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML, no driver, no GPU: all mean "none"
        found = []
    return found


def cuda_available() -> bool:
    """True when torch can use a CUDA device."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@functools.lru_cache(maxsize=1)
def describe() -> dict[str, Any]:
    """A JSON-ready description of this machine."""
    model, flags = _cpuinfo()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": model,
        "cpu_flags": {f: (f in flags) for f in _FLAGS_OF_INTEREST},
        "cores_physical": psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        "cores_logical": psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        "numa_nodes": numa_node_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpus(),
    }


def detect_profile() -> tuple[str, str]:
    """The profile to use on this machine and why: ``gpu`` with a CUDA GPU, else ``cpu``."""
    if cuda_available():
        names = ", ".join(g["name"] for g in gpus()) or "a CUDA device"
        return "gpu", f"CUDA GPU found ({names})"
    return "cpu", "no CUDA GPU found"

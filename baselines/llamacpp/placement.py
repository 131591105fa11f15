"""Where llama.cpp puts the model: the paper's hybrid placement as llama.cpp model parameters.

With a GPU backend every layer is offloaded (``-ngl 1000``) except the tensors matching
the CPU patterns, by default the routed experts (``exps``: ``ffn_{gate,up,down}_exps``),
which stay in CPU memory through llama.cpp's tensor buffer-type overrides (``-ot
exps=CPU``); the KV cache stays on the CPU when asked (``-nkvo``). llama.cpp by default still
runs a large batch's ops on those CPU-resident weights on the GPU, copying the weights
over for each batch ("op offload"); ``op_offload: false`` keeps them on the CPU
(``--no-op-offload``). Without a GPU backend
(or with ``device: cpu``) everything runs on the CPU. Weights in CPU memory may be
repacked into llama.cpp's "extra" buffer types (CPU_REPACK, AMX; ``--no-repack`` turns that
off): ``extra_buffers`` None (auto) keeps llama.cpp's default except on a CPU-only placement
on a CPU with AMX, where llama.cpp's AMX matmul crashes the process on quantized weights
(SIGSEGV/SIGILL in ``ggml_backend_amx_mul_mat``, llama.cpp issue #20824, seen on this
project's AMX development machine with llama-cpp-python 0.3.36; on a GPU placement the
CPU tensors sit in pinned ``CUDA_Host`` buffers and the AMX path is not used). This module
also reads what ggml reports about its devices and buffer types, for the placement facts
in provenance.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from experiments.system_api import SystemUnavailable

INSTALL_HINT = (
    "install it with `pip install -e .[llamacpp]` (CPU build) or "
    '`CMAKE_ARGS="-DGGML_CUDA=on" pip install -e .[llamacpp]` (CUDA build); '
    "either builds llama.cpp from source for this machine's CPU"
)
ALL_LAYERS = 1000  # the paper's -ngl 1000: more than any model's layer count
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


def import_llama_cpp() -> ModuleType:
    """The ``llama_cpp`` module, or SystemUnavailable saying how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise SystemUnavailable(f"llama-cpp-python is not installed; {INSTALL_HINT}") from exc
    except (OSError, RuntimeError) as exc:  # its shared library failed to load
        raise SystemUnavailable(
            f"llama-cpp-python is installed but its llama.cpp library does not load ({exc}); "
            f"reinstall: {INSTALL_HINT}"
        ) from exc
    return llama_cpp


def physical_cores() -> int:
    """Physical CPU cores usable by this process (llama.cpp's own default thread count)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or usable or 1, usable or 1))


@dataclass(frozen=True)
class Placement:
    """The placement one load uses; ``describe()`` reports it as is."""

    device: str  # "gpu" (layers offloaded) or "cpu" (nothing offloaded)
    n_gpu_layers: int
    cpu_tensor_patterns: tuple[str, ...]  # regexes of tensors kept in CPU memory
    kv_on_cpu: bool
    threads: int
    use_mmap: bool
    # large batches' ops on CPU-resident weights run on the GPU, the weights copied over
    # (llama.cpp's default; False = --no-op-offload: they run on the CPU)
    op_offload: bool = True
    # weight repacking into CPU_REPACK/AMX buffers; None = auto (see resolve_extra_buffers)
    extra_buffers: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_tensor_patterns"] = list(self.cpu_tensor_patterns)
        out["kv_cache"] = "cpu" if self.kv_on_cpu or self.device == "cpu" else "gpu"
        return out


def plan_placement(
    device: str,
    gpu_offload_supported: bool,
    *,
    cpu_tensors: list[str] | tuple[str, ...] = ("exps",),
    kv_on_cpu: bool = True,
    threads: int | None = None,
    use_mmap: bool = False,
    op_offload: bool = True,
    extra_buffers: bool | None = None,
) -> Placement:
    """The placement for ``device`` (auto|cpu|cuda|gpu) on this llama.cpp build.

    ``cuda``/``gpu`` without a GPU backend in llama.cpp is SystemUnavailable (it would
    silently run on the CPU); ``auto`` falls back to the CPU.
    """
    if device not in ("auto", "cpu", "cuda", "gpu") and not device.startswith("cuda:"):
        raise ValueError(f"llamacpp device must be auto, cpu, cuda or gpu, got {device!r}")
    for pattern in cpu_tensors:
        re.compile(pattern)  # a bad regex fails here, not inside llama.cpp
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"llamacpp threads must be a positive int or null, got {threads!r}")
    on_gpu = device != "cpu" and gpu_offload_supported
    if device not in ("auto", "cpu") and not gpu_offload_supported:
        raise SystemUnavailable(
            f"llamacpp device {device!r} asked for, but this llama-cpp-python was built "
            'without a GPU backend; reinstall with CMAKE_ARGS="-DGGML_CUDA=on" '
            "pip install --force-reinstall --no-cache-dir -e .[llamacpp]"
        )
    return Placement(
        device="gpu" if on_gpu else "cpu",
        n_gpu_layers=ALL_LAYERS if on_gpu else 0,
        cpu_tensor_patterns=tuple(cpu_tensors) if on_gpu else (),
        kv_on_cpu=bool(kv_on_cpu) or not on_gpu,
        threads=threads or physical_cores(),
        use_mmap=bool(use_mmap),
        op_offload=bool(op_offload),
        extra_buffers=None if extra_buffers is None else bool(extra_buffers),
    )


AMX_CRASH = (
    "off on a CPU-only placement on an AMX CPU: llama.cpp's AMX matmul crashes on quantized "
    "weights there (llama.cpp issue #20824); system.options.extra_buffers=true forces it on"
)


def resolve_extra_buffers(placement: Placement, system_info: str) -> tuple[bool, str]:
    """Whether llama.cpp may repack weights into its extra buffer types, and why.

    ``placement.extra_buffers`` True/False is used as given; None (auto) is llama.cpp's
    default (on), except off for a CPU-only placement when llama.cpp reports ``AMX_INT8``.
    """
    if placement.extra_buffers is not None:
        return placement.extra_buffers, "as configured"
    if placement.device == "cpu" and "AMX_INT8" in cpu_features(system_info):
        return False, AMX_CRASH
    return True, "llama.cpp's default"


class _BuftOverride(ctypes.Structure):
    """``struct llama_model_tensor_buft_override`` (llama.h): a pattern and a buffer type."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


class Ggml:
    """The few ggml backend-registry calls this project needs (devices, buffer types)."""

    def __init__(self, llama_cpp: ModuleType) -> None:
        self.lib = self._load(llama_cpp)
        for name, argtypes, restype in (
            ("ggml_backend_dev_count", [], ctypes.c_size_t),
            ("ggml_backend_dev_get", [ctypes.c_size_t], ctypes.c_void_p),
            ("ggml_backend_dev_name", [ctypes.c_void_p], ctypes.c_char_p),
            ("ggml_backend_dev_description", [ctypes.c_void_p], ctypes.c_char_p),
            ("ggml_backend_dev_type", [ctypes.c_void_p], ctypes.c_int),
            ("ggml_backend_dev_buffer_type", [ctypes.c_void_p], ctypes.c_void_p),
            ("ggml_backend_buft_name", [ctypes.c_void_p], ctypes.c_char_p),
            (
                "ggml_backend_dev_memory",
                [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
                None,
            ),
        ):
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = argtypes, restype

    @staticmethod
    def _load(llama_cpp: ModuleType) -> ctypes.CDLL:
        try:
            from llama_cpp import _ggml

            return _ggml.libggml
        except (ImportError, AttributeError, OSError, RuntimeError):
            pass
        lib_dir = Path(llama_cpp.__file__).parent / "lib"
        for name in ("libggml.so", "libggml.dylib", "ggml.dll"):
            if (lib_dir / name).is_file():
                return ctypes.CDLL(str(lib_dir / name))
        raise SystemUnavailable(f"llama-cpp-python has no ggml library in {lib_dir}")

    def devices(self) -> list[dict[str, Any]]:
        """Every ggml device: name, description, type, buffer type and memory."""
        out = []
        for i in range(self.lib.ggml_backend_dev_count()):
            dev = self.lib.ggml_backend_dev_get(i)
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            self.lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            buft = self.lib.ggml_backend_dev_buffer_type(dev)
            out.append(
                {
                    "name": (self.lib.ggml_backend_dev_name(dev) or b"").decode(),
                    "description": (self.lib.ggml_backend_dev_description(dev) or b"").decode(),
                    "type": _DEVICE_TYPES.get(self.lib.ggml_backend_dev_type(dev), "other"),
                    "buffer_type": (
                        (self.lib.ggml_backend_buft_name(buft) or b"").decode() if buft else ""
                    ),
                    "memory_total_bytes": int(total.value),
                }
            )
        return out

    def buffer_type(self, name: str) -> int:
        """The buffer type named ``name`` (e.g. ``CPU``), looked up as ``-ot`` does."""
        names = []
        for i in range(self.lib.ggml_backend_dev_count()):
            buft = self.lib.ggml_backend_dev_buffer_type(self.lib.ggml_backend_dev_get(i))
            if buft:
                names.append((self.lib.ggml_backend_buft_name(buft) or b"").decode())
                if names[-1] == name:
                    return int(buft)
        raise SystemUnavailable(f"llama.cpp has no buffer type {name!r} (it has {names})")


def model_params(
    llama_cpp: ModuleType, ggml: Ggml, placement: Placement, extra_buffers: bool = True
) -> tuple[Any, list[Any]]:
    """``llama_model_params`` for ``placement`` (``extra_buffers``: llama.cpp's
    ``use_extra_bufts``), and the ctypes objects that must stay alive."""
    params = llama_cpp.llama_model_default_params()
    fields = {f[0] for f in type(params)._fields_}
    params.n_gpu_layers = placement.n_gpu_layers
    if "use_extra_bufts" in fields:
        params.use_extra_bufts = extra_buffers
    elif not extra_buffers:
        raise SystemUnavailable(
            f"llama-cpp-python {llama_cpp.__version__} cannot turn weight repacking off "
            "(no use_extra_bufts in llama_model_params); upgrade llama-cpp-python"
        )
    if "load_mode" in fields:
        params.load_mode = (
            llama_cpp.LLAMA_LOAD_MODE_MMAP if placement.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        )
    else:
        params.use_mmap = placement.use_mmap
    keep: list[Any] = []
    if placement.cpu_tensor_patterns:
        if "tensor_buft_overrides" not in fields:
            raise SystemUnavailable(
                f"llama-cpp-python {llama_cpp.__version__} cannot keep tensors on the CPU "
                "(no tensor_buft_overrides in llama_model_params); upgrade llama-cpp-python"
            )
        cpu = ggml.buffer_type("CPU")
        patterns = [p.encode() for p in placement.cpu_tensor_patterns]
        table = (_BuftOverride * (len(patterns) + 1))()
        for i, pattern in enumerate(patterns):
            table[i].pattern, table[i].buft = pattern, cpu
        table[len(patterns)].pattern, table[len(patterns)].buft = None, None
        params.tensor_buft_overrides = ctypes.cast(table, ctypes.c_void_p)
        keep += [table, patterns]
    return params, keep


_BUFFER_RE = re.compile(r"(\S+) (model|KV|compute) buffer size\s*=\s*([\d.]+) MiB")
_OVERRIDE_RE = re.compile(r"tensor (\S+) .*buffer type overrid+en to (\S+)")  # old: "overriden"


def buffers_from_log(log_text: str) -> dict[str, dict[str, float]]:
    """MiB per buffer kind and buffer name as llama.cpp logged them while loading.

    ``{"model": {"CUDA0": 812.0, "CPU": 15360.0}, "KV": {"CPU": 64.0}, ...}``; this is the
    placement llama.cpp actually made, not the one asked for.
    """
    out: dict[str, dict[str, float]] = {}
    for name, kind, mib in _BUFFER_RE.findall(log_text):
        name = name.split(":")[-1]
        out.setdefault(kind, {})
        out[kind][name] = out[kind].get(name, 0.0) + float(mib)
    return out


def overridden_tensors(log_text: str) -> dict[str, int]:
    """How many tensors llama.cpp logged as moved to each buffer type by an override."""
    counts: dict[str, int] = {}
    for _, buft in _OVERRIDE_RE.findall(log_text):
        counts[buft] = counts.get(buft, 0) + 1
    return counts


def cpu_features(system_info: str) -> list[str]:
    """The features llama.cpp's system_info marks as on (``AVX2 = 1``, ``AMX_INT8 = 1``...)."""
    return sorted(set(re.findall(r"\b(\w+) = 1(?=\s*(?:\||$))", system_info)))

"""Python wrapper over the C++ CPU MoE kernel extension ``engine._hmoe_cpu``.

The extension (sources in ``engine/csrc``, built by ``setup.py``) is optional: when it is
missing :func:`available` is False and :func:`build_error` says why, and callers fall back to
the PyTorch reference backend. Tensors cross the boundary as raw pointers (``data_ptr()``), so
the extension has no build dependency on PyTorch.

:class:`MoEEngine` owns one engine: a persistent thread pool, a FIFO task queue and the packed
weights of any number of layers. ``forward`` is synchronous; ``submit`` returns a ticket at once
and ``sync`` waits; :meth:`MoEEngine.make_slot` builds a task slot for CUDA host functions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

import torch

from engine.errors import EngineError

try:  # "cannot run on this machine/build"
    from engine.errors import EngineUnavailable
except ImportError:  # pragma: no cover - older engine.errors
    EngineUnavailable = EngineError  # type: ignore[misc,assignment]

try:  # the compiled extension is optional
    from engine import _hmoe_cpu as _ext

    _BUILD_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the build
    _ext = None
    _BUILD_ERROR = (
        f"engine._hmoe_cpu could not be imported ({type(exc).__name__}: {exc}); build it with "
        "`python setup.py build_ext --inplace` or `pip install -e .` (needs a C++17 compiler "
        "and pybind11)"
    )

PRECISIONS = ("bf16", "int8", "int4")
METHODS = ("auto", "amx", "avx512", "portable")
SCHEDULERS = ("static", "dynamic")
FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_bf16",
    "avx512_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_os_permitted",
)
_CPUINFO_FLAGS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512dq": "avx512dq",
    "avx512_bf16": "avx512_bf16",
    "avx512_vnni": "avx512_vnni",
    "amx_tile": "amx_tile",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
}


def available() -> bool:
    """True when the compiled extension imported."""
    return _ext is not None


def build_error() -> str | None:
    """Why the extension is unavailable (the import error), or None when it is available."""
    return _BUILD_ERROR


def stale_build() -> str | None:
    """Why the loaded extension is older than engine/csrc (a rebuild is due), or None."""
    if _ext is None or not getattr(_ext, "__file__", None):
        return None
    from pathlib import Path

    so = Path(_ext.__file__)
    csrc = Path(__file__).resolve().parents[1] / "csrc"
    newer = sorted(p.name for p in csrc.glob("*.*") if p.stat().st_mtime > so.stat().st_mtime + 1)
    if newer:
        return f"{so.name} is older than engine/csrc/{', '.join(newer)}: rebuild it"
    return None


def _require() -> Any:
    if _ext is None:
        raise EngineUnavailable(f"the C++ MoE kernels are unavailable: {_BUILD_ERROR}")
    return _ext


def cpu_features() -> dict[str, bool]:
    """ISA features of this CPU (cpuid/xgetbv + the AMX OS permission; /proc/cpuinfo fallback)."""
    if _ext is not None:
        got = _ext.cpu_features()
        return {name: bool(got.get(name, False)) for name in FEATURES}
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    feats = {name: flag in flags for name, flag in _CPUINFO_FLAGS.items()}
    feats["amx_os_permitted"] = False  # unknown without the extension's arch_prctl request
    return {name: feats[name] for name in FEATURES}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    if _ext is not None:
        return str(_ext.cpu_model())
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def missing_for(method: str, precision: str, int8_w8a8: bool = False) -> str:
    """What ``method`` ("amx"/"avx512") lacks on this CPU for ``precision`` ("" = usable)."""
    if method in ("auto", "portable"):
        return ""
    if _ext is None:
        return f"the compiled kernel extension ({_BUILD_ERROR})"
    return str(_ext.missing_for(method, precision, int8_w8a8))


def usable_cpus() -> list[int]:
    """CPUs this process may run on (os.sched_getaffinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def _check_tensor(name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...], dims: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise EngineError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu" or not t.is_contiguous():
        raise EngineError(f"{name} must be a contiguous CPU tensor")
    if t.dtype not in dtypes:
        raise EngineError(f"{name} must be {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if t.dim() != dims:
        raise EngineError(f"{name} must be {dims}-D, got shape {tuple(t.shape)}")


def _bf16_cpu(name: str, t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU bf16 version of a 3-D weight tensor (no copy when it already is)."""
    if not isinstance(t, torch.Tensor) or t.dim() != 3 or not t.is_floating_point():
        raise EngineError(f"{name} must be a 3-D floating-point tensor")
    return t.to(device="cpu", dtype=torch.bfloat16).contiguous()


class Slot:
    """A task slot: one call's fixed arguments, submitted/synced from CUDA host functions.

    ``address`` is the ``void*`` to pass as ``user_data`` to ``submit_fn``/``sync_fn``
    (``void fn(void*)``, the addresses of ``hmoe_slot_submit``/``hmoe_slot_sync``). The token
    count is read from ``tokens[0]`` (int32) when the task starts, so a stream may write it
    first. The slot keeps its buffers alive.
    """

    def __init__(self, engine: MoEEngine, handle: Any, buffers: tuple[torch.Tensor, ...]) -> None:
        self._engine = engine
        self._handle = handle
        self._buffers = buffers

    @property
    def address(self) -> int:
        return int(self._handle.address)

    @property
    def submit_fn(self) -> int:
        return int(_require().slot_submit_addr)

    @property
    def sync_fn(self) -> int:
        return int(_require().slot_sync_addr)

    @property
    def ticket(self) -> int:
        return int(self._handle.ticket)

    def submit(self) -> int:
        try:
            return int(self._handle.submit())
        except RuntimeError as exc:
            raise EngineError(str(exc)) from None

    def sync(self) -> None:
        try:
            self._handle.sync()
        except RuntimeError as exc:
            raise EngineError(str(exc)) from None

    def take_error(self) -> str | None:
        """The last error a C-level submit/sync recorded (cleared), or None."""
        return self._handle.take_error()


class MoEEngine:
    """One engine: thread pool, FIFO task queue and packed layers (see the module docstring).

    ``threads`` defaults to every usable CPU. ``numa_nodes`` > 1 splits each expert's
    intermediate dimension into that many shards with their own thread groups (and memory on
    node n when the machine has that many NUMA nodes; otherwise "simulated": same code, one
    node). ``method``: auto (AMX for experts with >= ``amx_threshold`` tokens, else AVX-512,
    else portable), amx, avx512 or portable. ``int8_w8a8``: the AMX int8 path quantizes
    activations to int8 per token (tdpbssd, fastest prefill, ~1-3% error on Gaussian data);
    by default it dequantizes weights to bf16 in L2-sized chunks (W8A16, accurate).
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        cpus: list[int] | None = None,
        pin_threads: bool = False,
        numa_nodes: int = 1,
        scheduler: str = "static",
        method: str = "auto",
        amx_threshold: int = 32,
        int8_w8a8: bool = False,
        spin_us: int = 50,
        tunables: Mapping[str, int] | None = None,
    ) -> None:
        ext = _require()
        if scheduler not in SCHEDULERS:
            raise EngineError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        if method not in METHODS:
            raise EngineError(f"method must be one of {METHODS}, got {method!r}")
        if numa_nodes < 1:
            raise EngineError(f"numa_nodes must be >= 1, got {numa_nodes}")
        cpu_list = list(cpus) if cpus is not None else usable_cpus()
        n = int(threads) if threads is not None else len(cpu_list)
        if n < 1:
            raise EngineError(f"threads must be >= 1, got {threads}")
        if n < numa_nodes:
            raise EngineError(f"numa_nodes={numa_nodes} needs at least that many threads, got {n}")
        self.method = method
        self.scheduler = scheduler
        self.int8_w8a8 = bool(int8_w8a8)
        try:
            self._eng = ext.Engine(
                threads=n,
                cpus=cpu_list,
                pin=bool(pin_threads),
                numa_nodes=int(numa_nodes),
                dynamic=scheduler == "dynamic",
                method=method,
                amx_threshold=int(amx_threshold),
                int8_w8a8=self.int8_w8a8,
                spin_us=int(spin_us),
                tunables=dict(tunables or {}),
            )
        except RuntimeError as exc:  # a method this CPU/build cannot run
            raise EngineUnavailable(f"kernel engine: {exc}") from None
        except ValueError as exc:
            raise EngineError(f"kernel engine: {exc}") from None
        self._layers: dict[int, tuple[int, int, int, str]] = {}
        self._pending: dict[int, tuple[torch.Tensor, ...]] = {}

    # ---- layers ----
    def add_layer(
        self,
        layer_id: int,
        precision: str,
        gate_up: torch.Tensor,
        down: torch.Tensor,
        group_size: int = 32,
    ) -> None:
        """Pack stacked experts ``gate_up[E, 2I, H]`` and ``down[E, H, I]`` (any float dtype).

        The weights are rounded to bf16 first (int8/int4 are quantized from that rounding, in
        C++, bit-identical to engine/quant); the engine copies them, the caller may free them.
        """
        gu = _bf16_cpu("gate_up", gate_up)
        dn = _bf16_cpu("down", down)
        e, two_i, h = gu.shape
        i = two_i // 2
        if tuple(dn.shape) != (e, h, i):
            raise EngineError(
                f"gate_up {tuple(gu.shape)} needs down {(e, h, i)}, got {tuple(dn.shape)}"
            )
        self._add(
            layer_id,
            precision,
            e,
            h,
            i,
            group_size,
            "bf16",
            gu.data_ptr(),
            gu.data_ptr() + i * h * 2,
            2 * i,
            dn.data_ptr(),
            0,
            0,
            0,
        )

    def add_layer_split(
        self,
        layer_id: int,
        precision: str,
        gate: torch.Tensor,
        up: torch.Tensor,
        down: torch.Tensor,
        group_size: int = 32,
    ) -> None:
        """Like :meth:`add_layer` from separate ``gate[E, I, H]``, ``up[E, I, H]``, ``down``."""
        g = _bf16_cpu("gate", gate)
        u = _bf16_cpu("up", up)
        dn = _bf16_cpu("down", down)
        e, i, h = g.shape
        if tuple(u.shape) != (e, i, h) or tuple(dn.shape) != (e, h, i):
            raise EngineError(
                f"gate {tuple(g.shape)}, up {tuple(u.shape)}, down {tuple(dn.shape)} disagree"
            )
        self._add(
            layer_id,
            precision,
            e,
            h,
            i,
            group_size,
            "bf16",
            g.data_ptr(),
            u.data_ptr(),
            i,
            dn.data_ptr(),
            0,
            0,
            0,
        )

    def add_layer_quantized(
        self,
        layer_id: int,
        precision: str,
        gate_up_q: torch.Tensor,
        gate_up_scale: torch.Tensor,
        down_q: torch.Tensor,
        down_scale: torch.Tensor,
        group_size: int = 32,
    ) -> None:
        """Pack weights already quantized by engine/quant (per expert stacked along dim 0).

        int8: ``q[E, 2I, H]`` int8 + ``scale[E, 2I]``; down ``[E, H, I]`` + ``[E, H]``.
        int4: ``packed[E, 2I, H/2]`` uint8 + ``scale[E, 2I, H/g]``; down ``[E, H, I/2]`` +
        ``[E, H, I/g]`` (the layouts quantize_int8/quantize_int4 return, stacked).
        """
        if precision not in ("int8", "int4"):
            raise EngineError(f"pre-quantized weights must be int8 or int4, got {precision!r}")
        for name, t in (("gate_up_q", gate_up_q), ("down_q", down_q)):
            want = torch.int8 if precision == "int8" else torch.uint8
            _check_tensor(name, t, (want,), 3)
        for name, t in (("gate_up_scale", gate_up_scale), ("down_scale", down_scale)):
            _check_tensor(name, t, (torch.float32,), 2 if precision == "int8" else 3)
        e, two_i = gate_up_q.shape[:2]
        i = two_i // 2
        h = gate_up_q.shape[2] * (1 if precision == "int8" else 2)
        row_bytes = h if precision == "int8" else h // 2
        srow = 1 if precision == "int8" else h // group_size
        kind = "q8" if precision == "int8" else "q4"
        self._add(
            layer_id,
            precision,
            e,
            h,
            i,
            group_size,
            kind,
            gate_up_q.data_ptr(),
            gate_up_q.data_ptr() + i * row_bytes,
            2 * i,
            down_q.data_ptr(),
            gate_up_scale.data_ptr(),
            gate_up_scale.data_ptr() + i * srow * 4,
            down_scale.data_ptr(),
        )

    def _add(
        self,
        layer_id: int,
        precision: str,
        e: int,
        h: int,
        i: int,
        group: int,
        kind: str,
        gate: int,
        up: int,
        estride: int,
        down: int,
        gs: int,
        us: int,
        ds: int,
    ) -> None:
        if precision not in PRECISIONS:
            raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "int4" and group not in (32, 64):
            raise EngineError(f"int4 group size must be 32 or 64, got {group}")
        try:
            self._eng.add_layer(
                int(layer_id),
                precision,
                int(e),
                int(h),
                int(i),
                int(group),
                kind,
                gate,
                up,
                int(estride),
                down,
                gs,
                us,
                ds,
            )
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"layer {layer_id}: {exc}") from None
        self._layers[int(layer_id)] = (int(e), int(h), int(i), precision)

    def remove_layer(self, layer_id: int) -> None:
        self._eng.remove_layer(int(layer_id))
        self._layers.pop(int(layer_id), None)

    def num_experts(self, layer_id: int) -> int:
        try:
            return self._layers[int(layer_id)][0]
        except KeyError:
            raise EngineError(f"kernel engine has no layer {layer_id}") from None

    def layer_shape(self, layer_id: int) -> tuple[int, int, int, str]:
        """(experts, hidden, intermediate, precision) of a packed layer."""
        try:
            return self._layers[int(layer_id)]
        except KeyError:
            raise EngineError(f"kernel engine has no layer {layer_id}") from None

    def packed_bytes(self, layer_id: int | None = None) -> int:
        return int(self._eng.packed_bytes(-1 if layer_id is None else int(layer_id)))

    # ---- calls ----
    def _args(
        self,
        layer_id: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor,
    ) -> tuple:
        _, h, _, _ = self.layer_shape(layer_id)
        _check_tensor("hidden", hidden, (torch.bfloat16,), 2)
        _check_tensor("out", out, (torch.bfloat16,), 2)
        _check_tensor("expert_ids", expert_ids, (torch.int32, torch.int64), 2)
        _check_tensor("weights", weights, (torch.float32,), 2)
        t, k = expert_ids.shape
        if hidden.shape[1] != h or hidden.shape[0] != t or out.shape != hidden.shape:
            raise EngineError(
                f"layer {layer_id} (hidden size {h}): hidden {tuple(hidden.shape)}, expert_ids "
                f"{tuple(expert_ids.shape)}, out {tuple(out.shape)}"
            )
        if tuple(weights.shape) != (t, k):
            raise EngineError(f"weights {tuple(weights.shape)} must match expert_ids {(t, k)}")
        return (
            int(layer_id),
            int(t),
            int(k),
            hidden.data_ptr(),
            expert_ids.data_ptr(),
            expert_ids.dtype == torch.int64,
            weights.data_ptr(),
            out.data_ptr(),
        )

    def forward(
        self,
        layer_id: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synchronous call; bfloat16 ``hidden``/``out``; returns ``out``."""
        if out is None:
            out = torch.empty_like(hidden)
        args = self._args(layer_id, hidden, expert_ids, weights, out)
        try:
            self._eng.forward(*args)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(str(exc)) from None
        return out

    def submit(
        self,
        layer_id: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor,
    ) -> int:
        """Start a call; returns its ticket at once (the tensors are kept alive until synced)."""
        args = self._args(layer_id, hidden, expert_ids, weights, out)
        ticket = int(self._eng.submit(*args))
        self._pending[ticket] = (hidden, expert_ids, weights, out)
        return ticket

    def sync(self, ticket: int | None = None) -> None:
        """Wait for ``ticket`` (every submission when None); raises EngineError on a failure."""
        t = 0 if ticket is None else int(ticket)
        try:
            self._eng.sync(t)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(str(exc)) from None
        finally:
            if t == 0:
                self._pending.clear()
            else:
                for done in [x for x in self._pending if x <= t]:
                    del self._pending[done]

    def make_slot(
        self,
        layer_id: int,
        k: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor,
        tokens: torch.Tensor,
    ) -> Slot:
        """A :class:`Slot` over caller-owned buffers of ``max_tokens = hidden.shape[0]`` rows."""
        _check_tensor("tokens", tokens, (torch.int32,), 1)
        if tokens.numel() < 1:
            raise EngineError("tokens must hold at least one int32")
        args = self._args(layer_id, hidden, expert_ids, weights, out)
        if args[2] != k:
            raise EngineError(f"expert_ids has {args[2]} columns, the slot's k is {k}")
        handle = self._eng.make_slot(
            args[0],
            int(k),
            args[3],
            args[4],
            args[5],
            args[6],
            args[7],
            tokens.data_ptr(),
            int(hidden.shape[0]),
        )
        return Slot(self, handle, (hidden, expert_ids, weights, out, tokens))

    def set_policy(
        self,
        *,
        method: str | None = None,
        scheduler: str | None = None,
        amx_threshold: int | None = None,
        int8_w8a8: bool | None = None,
    ) -> None:
        """Change method/scheduler/threshold/int8 mode between calls (no repacking)."""
        info = self.info()
        method = info["method"] if method is None else method
        scheduler = info["scheduler"] if scheduler is None else scheduler
        if method not in METHODS or scheduler not in SCHEDULERS:
            raise EngineError(f"method {method!r} / scheduler {scheduler!r} unknown")
        thr = info["amx_threshold"] if amx_threshold is None else int(amx_threshold)
        w8a8 = info["int8_w8a8"] if int8_w8a8 is None else bool(int8_w8a8)
        try:
            self._eng.set_policy(method, scheduler == "dynamic", thr, w8a8)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"kernel engine: {exc}") from None
        self.method, self.scheduler, self.int8_w8a8 = method, scheduler, w8a8

    # ---- facts and measurements ----
    def stats(self) -> dict[str, Any]:
        """Cumulative busy time of the worker threads and wall time of tasks, last phases."""
        s = dict(self._eng.stats())
        wall, busy, n = s["wall_ns"], s["busy_ns"], s["threads"]
        s["utilization"] = busy / (wall * n) if wall > 0 else 0.0
        return s

    def reset_stats(self) -> None:
        self._eng.reset_stats()

    def info(self) -> dict[str, Any]:
        return dict(self._eng.info())

    def isa_for(self, precision: str, tokens: int) -> str:
        """The ISA an expert with ``tokens`` tokens runs on ("amx", "avx512", "portable")."""
        return str(self._eng.isa_for(precision, int(tokens)))

    def bench_read_gbs(self, nbytes: int, reps: int = 5) -> float:
        """Best multi-threaded read bandwidth (GB/s) over a buffer of ``nbytes`` bytes."""
        return float(self._eng.bench_read_gbs(int(nbytes), int(reps)))

    def bench_peak(self, kind: str, seconds: float = 0.5) -> float:
        """Register-only peak of ``kind`` (avx512_bf16, amx_bf16, amx_int8) in ops/s."""
        try:
            return float(self._eng.bench_peak(kind, float(seconds)))
        except (RuntimeError, ValueError) as exc:
            raise EngineError(str(exc)) from None

    def close(self) -> None:
        """Finish pending work and release the threads and packed weights."""
        eng = getattr(self, "_eng", None)
        if eng is not None:
            with contextlib.suppress(RuntimeError):
                eng.sync(0)
            self._pending.clear()
            self._layers.clear()
            del self._eng


__all__ = [
    "FEATURES",
    "METHODS",
    "PRECISIONS",
    "SCHEDULERS",
    "MoEEngine",
    "Slot",
    "available",
    "build_error",
    "cpu_features",
    "cpu_model",
    "missing_for",
    "stale_build",
    "usable_cpus",
]

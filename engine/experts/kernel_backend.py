"""The C++ kernel expert backend: AMX / AVX-512 / portable MoE kernels (engine/csrc).

Implements the :class:`~engine.experts.backend.ExpertBackend` contract on top of
:class:`engine.kernels.MoEEngine`: weights are repacked once at :meth:`prepare` (int8/int4
quantized in C++ from the bf16 rounding, bit-identical to engine/quant), and calls go through
the engine's FIFO task queue (``submit`` returns a ticket at once, ``sync`` waits).

Dtypes: bfloat16 ``hidden``/``out`` are passed zero-copy. Other dtypes are converted by this
adapter: ``hidden`` is copied to bfloat16 at submit and the bfloat16 result is copied into
``out`` at sync (so such a call allocates two temporaries).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from engine import kernels
from engine.errors import EngineError
from engine.experts.backend import ExpertBackend, StackedExperts, check_call

try:  # "cannot run on this machine/build": recorded as NOT RUN by the harness
    from engine.errors import EngineUnavailable
except ImportError:  # pragma: no cover - older engine.errors
    EngineUnavailable = EngineError  # type: ignore[misc,assignment]


class KernelExpertBackend(ExpertBackend):
    """Routed experts run by the C++ kernel engine (see the module docstring).

    Options: ``precision`` bf16 | int8 | int4; ``group_size`` (int4: 32 | 64); ``method``
    auto | amx | avx512 | portable (one this CPU or build lacks raises EngineUnavailable, an
    EngineError, naming what is missing); ``amx_threshold`` (auto: AMX for experts with at
    least this many tokens; 0 = always, very large = never); ``scheduler`` static | dynamic;
    ``numa_nodes`` >= 1 (tensor-parallel shards, "simulated" on a machine with fewer nodes);
    ``threads`` (None = every usable CPU); ``pin_threads``; ``int8_w8a8`` (AMX int8 with int8
    activations: faster prefill, W8A8 accuracy); ``spin_us`` (worker spin before sleeping);
    ``tunables`` (work decomposition, see docs/kernels.md).
    """

    name = "kernel"

    def __init__(
        self,
        precision: str = "bf16",
        group_size: int = 32,
        method: str = "auto",
        amx_threshold: int = 32,
        scheduler: str = "static",
        numa_nodes: int = 1,
        threads: int | None = None,
        pin_threads: bool = False,
        int8_w8a8: bool = False,
        spin_us: int = 50,
        tunables: dict[str, int] | None = None,
    ) -> None:
        if precision not in kernels.PRECISIONS:
            raise EngineError(
                f"kernel backend precision must be one of {kernels.PRECISIONS}, got {precision!r}"
            )
        if precision == "int4" and group_size not in (32, 64):
            raise EngineError(f"int4 group size must be 32 or 64, got {group_size}")
        if method not in kernels.METHODS:
            raise EngineError(f"kernel method must be one of {kernels.METHODS}, got {method!r}")
        if scheduler not in kernels.SCHEDULERS:
            raise EngineError(f"scheduler must be one of {kernels.SCHEDULERS}, got {scheduler!r}")
        if not kernels.available():
            raise EngineUnavailable(
                f"the C++ kernel backend is unavailable: {kernels.build_error()}"
            )
        missing = kernels.missing_for(method, precision, int8_w8a8)
        if missing:
            raise EngineUnavailable(
                f"kernel method {method!r} for {precision} needs CPU features this machine "
                f"lacks: {missing}"
            )
        self.precision = precision
        self.group_size = group_size
        self.method = method
        self.amx_threshold = amx_threshold
        self.scheduler = scheduler
        self.numa_nodes = numa_nodes
        self.int8_w8a8 = int8_w8a8
        self._engine = kernels.MoEEngine(
            threads=threads,
            pin_threads=pin_threads,
            numa_nodes=numa_nodes,
            scheduler=scheduler,
            method=method,
            amx_threshold=amx_threshold,
            int8_w8a8=int8_w8a8,
            spin_us=spin_us,
            tunables=tunables,
        )
        # ticket -> (bf16 result, caller's out) for calls whose out is not bfloat16
        self._converted: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def engine(self) -> kernels.MoEEngine:
        return self._engine

    def prepare(self, layer_idx: int, experts: StackedExperts) -> None:
        self._engine.add_layer(
            layer_idx, self.precision, experts.gate_up, experts.down, self.group_size
        )

    def num_experts(self, layer_idx: int) -> int:
        return self._engine.num_experts(layer_idx)

    def submit(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor,
    ) -> int:
        check_call(hidden, expert_ids, weights, out)
        if hidden.dtype == torch.bfloat16:
            return self._engine.submit(layer_idx, hidden, expert_ids, weights, out)
        h = hidden.to(torch.bfloat16)
        o = torch.empty_like(h)
        ticket = self._engine.submit(layer_idx, h, expert_ids, weights, o)
        self._converted[ticket] = (o, out)
        return ticket

    def sync(self, ticket: int | None = None) -> None:
        try:
            self._engine.sync(ticket)
        finally:
            done = [t for t in self._converted if ticket is None or t <= ticket]
            for t in sorted(done):
                o, out = self._converted.pop(t)
                out.copy_(o)

    def cpu_stats(self) -> dict[str, Any]:
        """Busy time of the expert threads, task wall time, utilization, last call's phases."""
        return self._engine.stats()

    def reset_stats(self) -> None:
        self._engine.reset_stats()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        eng = self._engine.info()
        feats = kernels.cpu_features()
        info.update(
            {
                "kernel_method_requested": self.method,
                "kernel_method_decode": self._engine.isa_for(self.precision, 1),
                "kernel_method_prefill": self._engine.isa_for(self.precision, 1 << 20),
                "kernel_amx_threshold": self.amx_threshold,
                "kernel_int8_activations": (
                    ("int8" if self.int8_w8a8 else "bf16 (weights dequantized per chunk)")
                    + " on AMX, int16 on AVX-512/portable"
                    if self.precision == "int8"
                    else (
                        "bf16 on AMX, int16 on AVX-512/portable"
                        if self.precision == "int4"
                        else "bf16"
                    )
                ),
                "kernel_isa": feats,
                "kernel_cpu_model": kernels.cpu_model(),
                "kernel_threads": eng["threads"],
                "kernel_pinned": eng["pinned"],
                "kernel_thread_cpus": eng["thread_cpus"],
                "kernel_scheduler": eng["scheduler"],
                "kernel_numa_nodes": eng["numa_shards"],
                "kernel_numa_simulated": eng["numa_simulated"],
                "kernel_numa_node_bound_memory": eng["numa_node_bound_memory"],
                "kernel_tunables": eng["tunables"],
                "expert_bytes": self._engine.packed_bytes(),
            }
        )
        if self.precision == "int4":
            info["int4_group_size"] = self.group_size
        return info

    def close(self) -> None:
        with contextlib.suppress(EngineError):
            self.sync()
        self._engine.close()

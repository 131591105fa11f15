"""Routed-expert backends (CPU) and the runners through which model code calls them.

Backends are registered by name (lazy ``module:Class``); :func:`make_expert_backend` builds
one from the engine's ``cpu_kernel`` option: ``reference`` is the pure-PyTorch loop,
every other value (``auto``, ``amx``, ``avx512``, ``portable``) a method of the C++ kernel
backend.
"""

from __future__ import annotations

from typing import Any

from engine.errors import EngineUnavailable
from engine.experts.backend import ExpertBackend, StackedExperts
from engine.experts.reference import ReferenceExpertBackend
from engine.experts.runner import ExpertRunner, ImmediateExpertRunner, split_topk
from engine.registry import Registry, RegistryError

EXPERT_BACKENDS = Registry(
    "expert backend",
    {
        "reference": "engine.experts.reference:ReferenceExpertBackend",
        "kernel": "engine.experts.kernel_backend:KernelExpertBackend",
    },
)
KERNEL_METHODS = ("auto", "amx", "avx512", "portable")
KERNEL_PRECISIONS = ("bf16", "int8", "int4")  # what the C++ kernels hold
CPU_KERNELS = ("reference", *KERNEL_METHODS)


def make_expert_backend(
    cpu_kernel: str,
    precision: str,
    *,
    group_size: int = 32,
    threads: int | None = None,
    scheduler: str = "static",
    numa_nodes: int = 1,
    **kernel_options: Any,
) -> ExpertBackend:
    """The backend running ``cpu_kernel`` with experts in ``precision``.

    EngineUnavailable when the kernel cannot run here (the extension is not built, the CPU
    lacks the ISA, or the reference backend is asked for dynamic scheduling or NUMA).
    """
    if cpu_kernel not in CPU_KERNELS:
        raise EngineUnavailable(
            f"unknown cpu_kernel {cpu_kernel!r}; available: {', '.join(CPU_KERNELS)}"
        )
    if cpu_kernel == "auto" and precision not in KERNEL_PRECISIONS:
        # (scheduler and numa_nodes are the C++ kernels' knobs: nothing to apply here)
        backend = ReferenceExpertBackend(precision, group_size, threads)
        backend.fallback_reason = f"{precision} experts run on the PyTorch reference backend"
        return backend
    if cpu_kernel == "auto" and not _kernels_built():
        # The C++ extension did not build here: the PyTorch reference runs instead, and says
        # so (describe() carries the reason into provenance).
        import warnings

        from engine import kernels

        why = f"C++ kernels not built ({kernels.build_error()}): using the reference backend"
        warnings.warn(why, RuntimeWarning, stacklevel=2)
        backend = ReferenceExpertBackend(precision, group_size, threads)
        backend.fallback_reason = why
        return backend
    if cpu_kernel == "reference":
        if scheduler != "static" or numa_nodes != 1:
            raise EngineUnavailable(
                "the reference expert backend has no dynamic scheduling or NUMA sharding "
                f"(scheduler={scheduler}, numa_nodes={numa_nodes}); use a C++ cpu_kernel"
            )
        return ReferenceExpertBackend(precision, group_size, threads)
    try:
        cls = EXPERT_BACKENDS.load("kernel")
    except RegistryError as exc:
        raise EngineUnavailable(f"the C++ expert kernels are not available: {exc}") from exc
    return cls(
        precision=precision,
        group_size=group_size,
        method=cpu_kernel,
        threads=threads,
        scheduler=scheduler,
        numa_nodes=numa_nodes,
        **kernel_options,
    )


def _kernels_built() -> bool:
    try:
        from engine import kernels
    except ImportError:
        return False
    return kernels.available()


__all__ = [
    "CPU_KERNELS",
    "EXPERT_BACKENDS",
    "ExpertBackend",
    "ExpertRunner",
    "ImmediateExpertRunner",
    "ReferenceExpertBackend",
    "StackedExperts",
    "make_expert_backend",
    "split_topk",
]

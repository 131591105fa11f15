"""Routed-expert backends (CPU) and the hook through which model code calls them."""

from __future__ import annotations

from engine.errors import EngineError
from engine.experts.backend import ExpertBackend
from engine.experts.reference import ReferenceExpertBackend
from engine.experts.runner import ExpertRunner, ImmediateExpertRunner, split_topk

BACKENDS = ("reference",)


def make_expert_backend(name: str, precision: str, group_size: int = 32) -> ExpertBackend:
    """Build the backend called ``name`` holding experts in ``precision``."""
    if name == "reference":
        return ReferenceExpertBackend(precision=precision, group_size=group_size)
    raise EngineError(f"unknown expert backend {name!r}; available: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "ExpertBackend",
    "ExpertRunner",
    "ImmediateExpertRunner",
    "ReferenceExpertBackend",
    "make_expert_backend",
    "split_topk",
]

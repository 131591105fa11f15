"""The ExpertBackend interface: where a model's routed experts live and run (always the CPU).

A backend owns its weight layout. The loader hands it each MoE layer's experts once, as
per-expert ``[out, in]`` matrices in the checkpoint's orientation (``gate``/``up``:
``[I, H]``, ``down``: ``[H, I]``); the backend converts them to its precision and packs
them however its kernels want (the C++ kernels repack for AVX-512/AMX here).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class ExpertBackend(ABC):
    """Routed experts of every MoE layer, computed on the CPU.

    ``forward(layer_idx, hidden[T, H], expert_ids[T, k], weights[T, k]) -> [T, H]`` returns
    ``sum_j weights[t, j] * expert_{ids[t, j]}(hidden[t])`` accumulated in float32 and cast to
    ``hidden.dtype``; an id of -1 contributes nothing (that slot is skipped). All tensors are
    CPU tensors; ``expert_ids`` is int64.
    """

    name: str = "abstract"
    precision: str = "bf16"

    @abstractmethod
    def prepare(
        self,
        layer_idx: int,
        gate: list[torch.Tensor],
        up: list[torch.Tensor],
        down: list[torch.Tensor],
    ) -> None:
        """Take ownership of layer ``layer_idx``'s experts (one tensor per expert, any dtype)."""

    @abstractmethod
    def forward(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """Weighted sum of the selected experts' outputs for each token (see class doc)."""

    @abstractmethod
    def num_experts(self, layer_idx: int) -> int:
        """How many routed experts layer ``layer_idx`` holds."""

    def describe(self) -> dict[str, Any]:
        """Facts for provenance: backend name, precision and layout details."""
        return {"expert_backend": self.name, "expert_precision": self.precision}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold only tensors
        """Release weights and worker threads."""

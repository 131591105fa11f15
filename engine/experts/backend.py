"""The ExpertBackend contract: where a model's routed experts live and how they are run.

A backend owns one MoE layer's routed experts as a *stacked* set (:class:`StackedExperts`):
``gate_up[E, 2I, H]`` (rows ``0..I-1`` the gate projection, ``I..2I-1`` the up projection)
and ``down[E, H, I]``, in the checkpoint's ``[out, in]`` orientation. A whole layer is thus
two contiguous tensors that can be pinned, streamed to a GPU or repacked in bulk; a
backend converts them once, at :meth:`ExpertBackend.prepare`, to its precision and layout.

Calling it: :meth:`ExpertBackend.submit` starts
``out[t] = sum_j weights[t, j] * down_e(silu(gate_e(x_t)) * up_e(x_t))`` with
``e = expert_ids[t, j]`` (an id of -1 contributes nothing) and returns at once; it writes
into the caller's ``out`` buffer, so steady-state calls allocate nothing. :meth:`sync`
waits for a submission. Submissions complete in the order they were made.

Dtypes: ``hidden`` and ``out`` ``[T, H]`` in the model dtype (bfloat16 normally), CPU,
contiguous (pinned where a GPU exists); ``expert_ids`` ``[T, k]`` int32 or int64, ranked
best first; ``weights`` ``[T, k]`` float32. Sums are accumulated in float32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import EngineError, WeightsError


@dataclass(frozen=True)
class StackedExperts:
    """One MoE layer's routed experts as two contiguous CPU tensors (any float dtype).

    ``gate_up[E, 2I, H]``: per expert, the gate rows then the up rows; ``down[E, H, I]``.
    """

    gate_up: torch.Tensor
    down: torch.Tensor

    def __post_init__(self) -> None:
        if self.gate_up.dim() != 3 or self.down.dim() != 3:
            raise WeightsError(
                f"stacked experts must be 3-D, got gate_up {tuple(self.gate_up.shape)} "
                f"and down {tuple(self.down.shape)}"
            )
        e, two_i, h = self.gate_up.shape
        if two_i % 2 or tuple(self.down.shape) != (e, h, two_i // 2):
            raise WeightsError(
                f"stacked expert shapes disagree: gate_up {tuple(self.gate_up.shape)} needs "
                f"down {(e, h, two_i // 2)}, got {tuple(self.down.shape)}"
            )

    @property
    def num_experts(self) -> int:
        return int(self.gate_up.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.gate_up.shape[2])

    @property
    def intermediate_size(self) -> int:
        return int(self.gate_up.shape[1]) // 2

    @classmethod
    def from_lists(
        cls, gate: list[torch.Tensor], up: list[torch.Tensor], down: list[torch.Tensor]
    ) -> StackedExperts:
        """Stack per-expert ``[I, H]``/``[I, H]``/``[H, I]`` matrices (one copy, no views)."""
        if not (len(gate) == len(up) == len(down)) or not gate:
            raise WeightsError(
                f"expert lists differ in length or are empty "
                f"(gate {len(gate)}, up {len(up)}, down {len(down)})"
            )
        e, (i, h) = len(gate), tuple(gate[0].shape)
        gate_up = torch.empty((e, 2 * i, h), dtype=gate[0].dtype)
        stacked_down = torch.empty((e, h, i), dtype=down[0].dtype)
        for n, (g, u, d) in enumerate(zip(gate, up, down, strict=True)):
            gate_up[n, :i].copy_(g)
            gate_up[n, i:].copy_(u)
            stacked_down[n].copy_(d)
        return cls(gate_up, stacked_down)


def check_call(
    hidden: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor, out: torch.Tensor
) -> None:
    """Raise EngineError unless the arguments of a submit/forward follow the contract."""
    if hidden.dim() != 2 or expert_ids.dim() != 2 or weights.shape != expert_ids.shape:
        raise EngineError(
            f"expert call shapes: hidden {tuple(hidden.shape)}, expert_ids "
            f"{tuple(expert_ids.shape)}, weights {tuple(weights.shape)}"
        )
    if expert_ids.shape[0] != hidden.shape[0] or out.shape != hidden.shape:
        raise EngineError(
            f"expert call: {hidden.shape[0]} tokens in hidden, {expert_ids.shape[0]} in "
            f"expert_ids, out {tuple(out.shape)}"
        )
    if expert_ids.dtype not in (torch.int32, torch.int64) or weights.dtype != torch.float32:
        raise EngineError(
            f"expert_ids must be int32/int64 and weights float32, got {expert_ids.dtype} "
            f"and {weights.dtype}"
        )
    for name, t in (("hidden", hidden), ("expert_ids", expert_ids), ("weights", weights)):
        if t.device.type != "cpu" or not t.is_contiguous():
            raise EngineError(f"{name} must be a contiguous CPU tensor")
    if out.device.type != "cpu" or not out.is_contiguous() or out.dtype != hidden.dtype:
        raise EngineError("out must be a contiguous CPU tensor of hidden's dtype")


class ExpertBackend(ABC):
    """Routed experts of every MoE layer, computed on the CPU (see the module docstring)."""

    name: str = "abstract"
    precision: str = "bf16"

    @abstractmethod
    def prepare(self, layer_idx: int, experts: StackedExperts) -> None:
        """Take layer ``layer_idx``'s experts (converted/repacked; the input may be freed)."""

    @abstractmethod
    def submit(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor,
    ) -> int:
        """Start the layer's routed experts for ``hidden`` into ``out``; return a ticket.

        Returns at once; the inputs must stay unchanged and ``out`` untouched until
        :meth:`sync` of this ticket (or a later one) returns.
        """

    @abstractmethod
    def sync(self, ticket: int | None = None) -> None:
        """Wait until submission ``ticket`` (every submission when None) has completed."""

    @abstractmethod
    def num_experts(self, layer_idx: int) -> int:
        """How many routed experts layer ``layer_idx`` holds."""

    def forward(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synchronous convenience: :meth:`submit` then :meth:`sync`; returns ``out``."""
        if out is None:
            out = torch.empty_like(hidden)
        self.sync(self.submit(layer_idx, hidden, expert_ids, weights, out))
        return out

    def describe(self) -> dict[str, Any]:
        """Facts for provenance: backend name, precision and layout details."""
        return {"expert_backend": self.name, "expert_precision": self.precision}

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold only tensors
        """Release weights and worker threads."""

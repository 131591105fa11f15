"""The model's hook for routed experts: ExpertRunner, the default immediate runner, top-k splits.

Extension point: every MoE layer of a loaded model calls
``model.expert_runner(layer_idx, hidden, expert_ids, weights)`` with device tensors
(``hidden[T, H]`` in the model dtype, ``expert_ids[T, k]`` int64 ranked best first,
``weights[T, k]``) and adds the returned ``[T, H]`` (same device and dtype as ``hidden``) to
the shared-expert output. Any callable with that signature can be installed by assigning
``model.expert_runner``; the model code does not change. The default,
:class:`ImmediateExpertRunner`, moves hidden/ids/weights to the CPU once, runs all k
experts on the backend, and moves the result back once. A deferring runner (runtime issue)
uses :func:`split_topk` to run the first ``j`` slots now and hand the rest (ids set to -1
elsewhere) to the CPU to finish while the GPU runs the next layer, adding that output later.
"""

from __future__ import annotations

from typing import Protocol

import torch

from engine.experts.backend import ExpertBackend


class ExpertRunner(Protocol):
    """What a MoE layer calls for its routed experts (see module docstring)."""

    def __call__(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor: ...


class ImmediateExpertRunner:
    """Runs all of a token's top-k experts now: one copy to the CPU, one copy back."""

    def __init__(self, backend: ExpertBackend) -> None:
        self.backend = backend

    def __call__(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        cpu = torch.device("cpu")
        out = self.backend.forward(layer_idx, hidden.to(cpu), expert_ids.to(cpu), weights.to(cpu))
        return out.to(hidden.device)


def split_topk(expert_ids: torch.Tensor, n_now: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``expert_ids[T, k]`` into the first ``n_now`` slots and the rest, by masking.

    Both results keep the ``[T, k]`` shape (and so pair with the unchanged ``weights``); a
    slot that belongs to the other part is -1. Running both and summing equals running all.
    """
    k = expert_ids.shape[1]
    if not 0 <= n_now <= k:
        raise ValueError(f"n_now must be in [0, {k}], got {n_now}")
    now = expert_ids.clone()
    later = expert_ids.clone()
    now[:, n_now:] = -1
    later[:, :n_now] = -1
    return now, later

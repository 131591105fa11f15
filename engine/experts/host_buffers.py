"""Caller-owned CPU buffers for one expert call: hidden, ids, weights, out (grow-only).

Where the model runs on a GPU the buffers are pinned, so activations cross PCIe by DMA
(``non_blocking`` copies) instead of staged pageable copies; they grow to the largest token
count seen and are reused, so steady-state calls allocate nothing on the host.
"""

from __future__ import annotations

import torch


class HostBuffers:
    """``hidden``/``out`` ``[cap, H]`` in the model dtype, ``ids`` int64 and ``weights``
    float32 ``[cap, k]``; :meth:`stage` copies a call's device tensors in."""

    def __init__(self, hidden_size: int, top_k: int, dtype: torch.dtype, pin: bool) -> None:
        self.hidden_size, self.top_k, self.dtype, self.pin = hidden_size, top_k, dtype, pin
        self.capacity = 0
        self._grow(1)

    def _grow(self, tokens: int) -> None:
        cap = max(tokens, 2 * self.capacity)

        def alloc(cols: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.empty((cap, cols), dtype=dtype, pin_memory=self.pin)

        self.hidden = alloc(self.hidden_size, self.dtype)
        self.out = alloc(self.hidden_size, self.dtype)
        self.ids = alloc(self.top_k, torch.int64)
        self.weights = alloc(self.top_k, torch.float32)
        self.capacity = cap

    def output(self, tokens: int) -> torch.Tensor:
        """The first ``tokens`` rows of ``out`` (growing the buffers when needed)."""
        if tokens > self.capacity:
            self._grow(tokens)
        return self.out[:tokens]

    def stage(
        self, hidden: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copy a call's inputs in (asynchronously from a GPU: synchronize before reading).

        Returns views ``(hidden, ids, weights, out)`` of the first T rows.
        """
        t = int(hidden.shape[0])
        if t > self.capacity:
            self._grow(t)
        views = (self.hidden[:t], self.ids[:t], self.weights[:t], self.out[:t])
        views[0].copy_(hidden, non_blocking=True)
        views[1].copy_(expert_ids, non_blocking=True)
        views[2].copy_(weights, non_blocking=True)
        return views

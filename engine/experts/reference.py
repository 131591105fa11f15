"""The pure-PyTorch reference expert backend: a per-expert loop, any precision, float32 sums.

It is the correctness reference for the C++ kernels and the fallback where they are not
built. It computes inside :meth:`ReferenceExpertBackend.submit` (so ``sync`` only checks
the ticket): simple and exact, with no CPU/GPU overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import EngineError
from engine.experts.backend import ExpertBackend, StackedExperts, check_call
from engine.quant.weights import PRECISIONS, QuantizedWeight, quantize_weight


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (None: leave as is), then restore."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ReferenceExpertBackend(ExpertBackend):
    """Each layer kept as two stacked :class:`QuantizedWeight` matrices (``gate_up`` as
    ``[E * 2I, H]``, ``down`` as ``[E * H, I]``), run one expert at a time.

    Activations are computed in ``hidden``'s dtype (quantized weights are dequantized to it
    on the fly, one expert at a time); each expert's output is scaled by its routing weight
    and summed in float32. ``threads`` sets PyTorch's intra-op threads for the expert work
    only (restored afterwards).
    """

    name = "reference"

    def __init__(
        self, precision: str = "bf16", group_size: int = 32, threads: int | None = None
    ) -> None:
        if precision not in PRECISIONS:
            raise EngineError(
                f"unknown expert precision {precision!r}; expected one of {PRECISIONS}"
            )
        self.precision = precision
        self.group_size = group_size
        self.threads = threads
        self._layers: dict[int, tuple[int, int, int, QuantizedWeight, QuantizedWeight]] = {}
        self._tickets = 0
        self.fallback_reason: str | None = None  # set when it stands in for the C++ kernels

    def prepare(self, layer_idx: int, experts: StackedExperts) -> None:
        e, h, i = experts.num_experts, experts.hidden_size, experts.intermediate_size
        gate_up = quantize_weight(experts.gate_up.reshape(e * 2 * i, h), self.precision,
                                  self.group_size)  # fmt: skip
        down = quantize_weight(experts.down.reshape(e * h, i), self.precision, self.group_size)
        self._layers[layer_idx] = (e, h, i, gate_up, down)

    def num_experts(self, layer_idx: int) -> int:
        return self._layer(layer_idx)[0]

    def _layer(self, layer_idx: int) -> tuple[int, int, int, QuantizedWeight, QuantizedWeight]:
        try:
            return self._layers[layer_idx]
        except KeyError:
            raise EngineError(f"expert backend has no layer {layer_idx}") from None

    def submit(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        out: torch.Tensor,
    ) -> int:
        check_call(hidden, expert_ids, weights, out)
        with torch_threads(self.threads):
            out.copy_(self._compute(layer_idx, hidden, expert_ids, weights))
        self._tickets += 1
        return self._tickets

    def sync(self, ticket: int | None = None) -> None:
        if ticket is not None and not 0 < ticket <= self._tickets:
            raise EngineError(f"expert backend: unknown ticket {ticket}")

    def _compute(
        self, layer_idx: int, hidden: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        e, h, i, gate_up, down = self._layer(layer_idx)
        t, k = expert_ids.shape
        out = torch.zeros(t, hidden.shape[1], dtype=torch.float32)
        flat_ids = expert_ids.reshape(-1).to(torch.int64)
        valid = flat_ids >= 0
        if not bool(valid.any()):
            return out
        ids = flat_ids[valid]
        if int(ids.max()) >= e:
            raise EngineError(f"layer {layer_idx}: expert id {int(ids.max())} >= {e}")
        tokens = torch.arange(t).repeat_interleave(k)[valid]
        slot_weights = weights.reshape(-1)[valid].to(torch.float32)
        order = torch.argsort(ids, stable=True)
        ids, tokens, slot_weights = ids[order], tokens[order], slot_weights[order]
        counts = torch.bincount(ids, minlength=e).tolist()
        dtype = hidden.dtype
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = tokens[start : start + count]
            x = hidden[rows]
            gu = F.linear(x, gate_up.rows(expert * 2 * i, (expert + 1) * 2 * i, dtype))
            act = F.silu(gu[:, :i]) * gu[:, i:]
            y = F.linear(act, down.rows(expert * h, (expert + 1) * h, dtype))
            out.index_add_(0, rows, y.to(torch.float32) * slot_weights[start : start + count, None])
            start += count
        return out

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.precision == "int4":
            info["int4_group_size"] = self.group_size
        info["expert_bytes"] = sum(gu.nbytes + d.nbytes for *_, gu, d in self._layers.values())
        info["expert_threads"] = self.threads or torch.get_num_threads()
        if self.fallback_reason:
            info["kernel_fallback"] = self.fallback_reason
        return info

    def close(self) -> None:
        self._layers.clear()

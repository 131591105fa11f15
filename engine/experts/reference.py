"""The pure-PyTorch reference expert backend: a per-expert loop, any precision, float32 sums."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import EngineError, WeightsError
from engine.experts.backend import ExpertBackend
from engine.quant.weights import PRECISIONS, QuantizedWeight, quantize_weight


class ReferenceExpertBackend(ExpertBackend):
    """Experts stored per expert as :class:`QuantizedWeight` and run one expert at a time.

    Activations are computed in ``hidden``'s dtype (quantized weights are dequantized to it
    on the fly); each expert's output is scaled by its routing weight and summed in float32.
    """

    name = "reference"

    def __init__(self, precision: str = "bf16", group_size: int = 32) -> None:
        if precision not in PRECISIONS:
            raise EngineError(
                f"unknown expert precision {precision!r}; expected one of {PRECISIONS}"
            )
        self.precision = precision
        self.group_size = group_size
        self._layers: dict[int, list[tuple[QuantizedWeight, QuantizedWeight, QuantizedWeight]]] = {}

    def prepare(
        self,
        layer_idx: int,
        gate: list[torch.Tensor],
        up: list[torch.Tensor],
        down: list[torch.Tensor],
    ) -> None:
        if not (len(gate) == len(up) == len(down)) or not gate:
            raise WeightsError(
                f"layer {layer_idx}: expert lists differ in length or are empty "
                f"(gate {len(gate)}, up {len(up)}, down {len(down)})"
            )
        experts = []
        for g, u, d in zip(gate, up, down, strict=True):
            experts.append(
                (
                    quantize_weight(g, self.precision, self.group_size),
                    quantize_weight(u, self.precision, self.group_size),
                    quantize_weight(d, self.precision, self.group_size),
                )
            )
        self._layers[layer_idx] = experts

    def num_experts(self, layer_idx: int) -> int:
        return len(self._experts(layer_idx))

    def _experts(self, layer_idx: int) -> list[tuple[QuantizedWeight, ...]]:
        try:
            return self._layers[layer_idx]
        except KeyError:
            raise EngineError(f"expert backend has no layer {layer_idx}") from None

    def forward(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        experts = self._experts(layer_idx)
        t, k = expert_ids.shape
        out = torch.zeros(t, hidden.shape[1], dtype=torch.float32)
        flat_ids = expert_ids.reshape(-1)
        valid = flat_ids >= 0
        if not bool(valid.any()):
            return out.to(hidden.dtype)
        ids = flat_ids[valid]
        if int(ids.max()) >= len(experts):
            raise EngineError(f"layer {layer_idx}: expert id {int(ids.max())} >= {len(experts)}")
        tokens = torch.arange(t).repeat_interleave(k)[valid]
        slot_weights = weights.reshape(-1)[valid].to(torch.float32)
        order = torch.argsort(ids, stable=True)
        ids, tokens, slot_weights = ids[order], tokens[order], slot_weights[order]
        counts = torch.bincount(ids, minlength=len(experts)).tolist()
        dtype = hidden.dtype
        start = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            rows = tokens[start : start + count]
            x = hidden[rows]
            gate_w, up_w, down_w = experts[expert]
            act = F.silu(F.linear(x, gate_w.dequantize(dtype))) * F.linear(
                x, up_w.dequantize(dtype)
            )
            y = F.linear(act, down_w.dequantize(dtype))
            out.index_add_(0, rows, y.to(torch.float32) * slot_weights[start : start + count, None])
            start += count
        return out.to(dtype)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.precision == "int4":
            info["int4_group_size"] = self.group_size
        info["expert_bytes"] = sum(
            w.nbytes for layer in self._layers.values() for triple in layer for w in triple
        )
        return info

    def close(self) -> None:
        self._layers.clear()

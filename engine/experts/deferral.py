"""Expert deferral: run a token's top ``immediate`` experts now, the lowest-ranked rest later.

KTransformers' expert deferral: of each token's top-k routed experts, the ``k - immediate``
lowest-ranked ones are *deferred*: their output (computed on the layer's input) is not
added to this layer's output but to the output of the next MoE layer, so the CPU can
compute them while the GPU already runs the next layer. The last MoE layer of the model
has no next layer and runs all of its experts immediately.

:class:`DeferredExpertRunner` implements these semantics synchronously through the model's
``expert_runner`` hook (engine.experts.runner): results are exactly what the overlapped
runtime must produce, without the overlap (so without its speed-up). It is the reference
for accuracy measurements and for the asynchronous runtime's tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.errors import EngineError
from engine.experts.backend import ExpertBackend
from engine.experts.runner import ImmediateExpertRunner, split_topk


class DeferredExpertRunner:
    """Defers each token's experts ranked below ``immediate`` to the next MoE layer."""

    def __init__(self, backend: ExpertBackend, immediate: int, moe_layers: Sequence[int]) -> None:
        if immediate < 1:
            raise EngineError(f"immediate experts must be >= 1, got {immediate}")
        if not moe_layers:
            raise EngineError("expert deferral needs at least one MoE layer")
        self.backend = backend
        self.immediate = immediate
        self.first = min(moe_layers)
        self.last = max(moe_layers)
        self.pending: torch.Tensor | None = None  # deferred output waiting for the next layer

    def __call__(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        if layer_idx == self.first:
            self.pending = None  # a new forward pass starts
        cpu = torch.device("cpu")
        h, ids, w = hidden.to(cpu), expert_ids.to(cpu), weights.to(cpu)
        if layer_idx == self.last or self.immediate >= ids.shape[1]:
            out, deferred = self.backend.forward(layer_idx, h, ids, w), None
        else:
            now, later = split_topk(ids, self.immediate)
            out = self.backend.forward(layer_idx, h, now, w)
            deferred = self.backend.forward(layer_idx, h, later, w)
        if self.pending is not None:
            if self.pending.shape != out.shape:
                raise EngineError("deferred expert output does not match the next layer's tokens")
            out = out + self.pending
        self.pending = deferred
        return out.to(hidden.device)


def moe_layer_indices(model: object) -> list[int]:
    """Indices of the model's layers whose MLP is a MoE block (routed experts)."""
    from engine.models.moe import MoEBlock

    return [
        layer.mlp.layer_idx
        for layer in model.layers  # type: ignore[attr-defined]
        if isinstance(layer.mlp, MoEBlock)
    ]


def set_expert_split(model: object, immediate: int | None, top_k: int) -> None:
    """Install the runner for ``immediate`` of ``top_k`` experts now (None or k: no deferral)."""
    backend = model.expert_backend  # type: ignore[attr-defined]
    if immediate is None or immediate == top_k:
        runner = ImmediateExpertRunner(backend)
    elif 1 <= immediate < top_k:
        runner = DeferredExpertRunner(backend, immediate, moe_layer_indices(model))
    else:
        raise EngineError(f"immediate experts must be in 1..{top_k}, got {immediate}")
    model.expert_runner = runner  # type: ignore[attr-defined]

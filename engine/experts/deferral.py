"""Expert deferral: run a token's top ``immediate`` experts now, the lowest-ranked rest later.

KTransformers' expert deferral: of each token's top-k routed experts, the ``k - immediate``
lowest-ranked ones are *deferred*: their output (computed on the layer's input) is not
added to this layer's output but to the output of the next MoE layer, so the CPU can
compute them while the GPU already runs the next layer. The last MoE layer of the model
has no next layer and runs all of its experts immediately.

:class:`DeferredExpertRunner` submits both parts at ``begin``; ``finish`` waits for the
immediate part only and adds the previous layer's deferred part, so a backend that runs
asynchronously computes deferred experts while the model moves on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from engine.errors import EngineError
from engine.experts.backend import ExpertBackend
from engine.experts.runner import (
    ExpertRunner,
    ImmediateExpertRunner,
    StagedCalls,
    Submission,
    split_topk,
    to_device,
)

if TYPE_CHECKING:
    from engine.models.model import MoECausalLM


def check_expert_split(top_k: int, immediate: int | None, deferred: int = 0) -> tuple[int, int]:
    """``(immediate, deferred)`` with None meaning ``top_k - deferred``; EngineError unless
    immediate >= 1, deferred >= 0 and they sum to the model's ``top_k``."""
    now = top_k - deferred if immediate is None else immediate
    if now < 1 or deferred < 0 or now + deferred != top_k:
        raise EngineError(
            f"immediate ({now}) + deferred ({deferred}) experts must equal the model's "
            f"top-k ({top_k}), with at least one immediate expert"
        )
    return now, deferred


class DeferredExpertRunner:
    """Defers each token's experts ranked below ``immediate`` to the next MoE layer."""

    NOW, DEFERRED = 0, (1, 2)  # buffer slots: deferred ones alternate between layers

    def __init__(
        self,
        backend: ExpertBackend,
        immediate: int,
        moe_layers: Sequence[int],
        hidden_size: int,
        top_k: int,
    ) -> None:
        if immediate < 1:
            raise EngineError(f"immediate experts must be >= 1, got {immediate}")
        if not moe_layers:
            raise EngineError("expert deferral needs at least one MoE layer")
        self.backend = backend
        self.immediate = immediate
        self.last = max(moe_layers)
        self.calls = StagedCalls(backend, hidden_size, top_k, slots=3)
        self._now: dict[int, Submission] = {}
        self._later: Submission | None = None  # this layer's deferred part
        self._pending: Submission | None = None  # the previous MoE layer's deferred part
        self._parity = 0

    def start_pass(self) -> None:
        for sub in (*self._now.values(), self._later, self._pending):
            if sub is not None:
                self.backend.sync(sub.ticket)
        self._now.clear()
        self._later = self._pending = None

    def begin(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        if layer_idx == self.last or self.immediate >= expert_ids.shape[1]:
            self._now[layer_idx] = self.calls.submit(
                self.NOW, layer_idx, hidden, expert_ids, weights
            )
            self._later = None
            return
        now, later = split_topk(expert_ids, self.immediate)
        self._now[layer_idx] = self.calls.submit(self.NOW, layer_idx, hidden, now, weights)
        self._parity ^= 1
        self._later = self.calls.submit(
            self.DEFERRED[self._parity], layer_idx, hidden, later, weights
        )

    def finish(self, layer_idx: int) -> torch.Tensor:
        sub = self._now.pop(layer_idx, None)
        if sub is None:
            raise EngineError(f"expert runner: finish({layer_idx}) without begin")
        self.backend.sync(sub.ticket)
        out = sub.out
        if self._pending is not None:
            if self._pending.out.shape != out.shape:
                raise EngineError("deferred expert output does not match the next layer's tokens")
            self.backend.sync(self._pending.ticket)
            out = out + self._pending.out
        self._pending, self._later = self._later, None
        return to_device(out, sub.like)


def moe_layer_indices(model: MoECausalLM) -> list[int]:
    """Indices of the model's layers whose MLP is a MoE block (routed experts)."""
    from engine.models.moe import MoEBlock

    return [layer.mlp.layer_idx for layer in model.layers if isinstance(layer.mlp, MoEBlock)]


def streams_experts(model: MoECausalLM) -> bool:
    """True when the model's experts go through CUDA-stream host functions: a CUDA model
    whose backend has task slots (the C++ kernels)."""
    engine = getattr(model.expert_backend, "engine", None)
    return model.device.type == "cuda" and hasattr(engine, "make_slot")


def make_runner(model: MoECausalLM, immediate: int | None, deferred: int = 0) -> ExpertRunner:
    """The runner for ``immediate`` + ``deferred`` of the model's top-k experts (stream
    runners, which hold pinned buffers, are made once per split and reused)."""
    c = model.config
    now, later = check_expert_split(c.top_k, immediate, deferred)
    if streams_experts(model):
        from engine.experts.stream_runner import StreamExpertRunner

        cached = model.runners.get(now)
        if cached is None:
            cached = StreamExpertRunner(
                model.expert_backend, moe_layer_indices(model), c.hidden_size, c.top_k,
                model.max_tokens_per_forward, now,
            )  # fmt: skip
            model.runners[now] = cached
        return cached
    if later == 0:
        return ImmediateExpertRunner(model.expert_backend, c.hidden_size, c.top_k)
    return DeferredExpertRunner(
        model.expert_backend, now, moe_layer_indices(model), c.hidden_size, c.top_k
    )


@contextmanager
def expert_split(
    model: MoECausalLM, immediate: int | None, deferred: int = 0
) -> Iterator[MoECausalLM]:
    """Run the block with ``immediate + deferred`` experts per token, then restore the
    runner that was installed before (also when the block raises)."""
    runner = make_runner(model, immediate, deferred)
    before = model.expert_runner
    model.expert_runner = runner
    try:
        yield model
    finally:
        runner.start_pass()  # wait for anything still running on the CPU
        model.expert_runner = before

"""How a MoE layer runs its routed experts: the ExpertRunner hook and the immediate runner.

Every MoE layer of a model calls ``runner.begin(layer_idx, hidden, expert_ids, weights)``
right after its router (device tensors: ``hidden[T, H]`` in the model dtype, ``expert_ids``
``[T, k]`` int64 ranked best first, ``weights[T, k]``), then computes its shared expert on
the model device, then calls ``runner.finish(layer_idx)`` for the routed output (same
device and dtype as ``hidden``; on a CPU model it may be the runner's own buffer, valid
until the next ``begin``). Between the two, the CPU backend can work while the device
computes the shared expert. ``start_pass()`` is called once at the start of every forward.

:class:`ImmediateExpertRunner` runs all k experts of the layer: inputs staged into
caller-owned (pinned, on a GPU) host buffers, one backend submission, one copy back.
:mod:`engine.experts.deferral` adds runners that defer some experts to the next layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from engine.errors import EngineError
from engine.experts.backend import ExpertBackend
from engine.experts.host_buffers import HostBuffers


class ExpertRunner(Protocol):
    """What a MoE layer calls for its routed experts (see the module docstring)."""

    def start_pass(self) -> None: ...

    def begin(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None: ...

    def finish(self, layer_idx: int) -> torch.Tensor: ...


@dataclass
class Submission:
    """One backend submission: its ticket, the host ``out`` it writes, and the tensors it
    reads (kept alive until it is synced) plus ``like`` (the device and dtype of results)."""

    ticket: int
    out: torch.Tensor
    like: torch.Tensor
    inputs: tuple[torch.Tensor, ...]


class StagedCalls:
    """Moves a layer's inputs to host buffers and submits them; one set of buffers per
    ``slot`` so that a call still running on the CPU is never overwritten."""

    def __init__(self, backend: ExpertBackend, hidden_size: int, top_k: int, slots: int) -> None:
        self.backend = backend
        self.hidden_size, self.top_k, self.slots = hidden_size, top_k, slots
        self._buffers: list[HostBuffers] = []

    def _buffers_for(self, hidden: torch.Tensor) -> list[HostBuffers]:
        pin = hidden.device.type == "cuda"
        if (
            not self._buffers
            or self._buffers[0].dtype != hidden.dtype
            or (self._buffers[0].pin != pin)
        ):
            self._buffers = [
                HostBuffers(self.hidden_size, self.top_k, hidden.dtype, pin)
                for _ in range(self.slots)
            ]
        return self._buffers

    def submit(
        self,
        slot: int,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> Submission:
        """Stage the inputs (a GPU's by async copies, then one stream sync) and submit."""
        buffers = self._buffers_for(hidden)[slot]
        if hidden.device.type == "cpu":
            h = hidden.contiguous()
            ids = expert_ids.contiguous()
            w = weights.to(torch.float32).contiguous()
            out = buffers.output(int(h.shape[0]))
        else:
            h, ids, w, out = buffers.stage(hidden, expert_ids, weights.to(torch.float32))
            torch.cuda.current_stream(hidden.device).synchronize()
        ticket = self.backend.submit(layer_idx, h, ids, w, out)
        return Submission(ticket, out, hidden, (h, ids, w))


def to_device(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A host result onto ``like``'s device. On the CPU it is the host buffer itself (no
    copy): valid until the runner's next ``begin``, which is all a MoE block needs."""
    if like.device.type == "cpu":
        return out
    return out.to(like.device, non_blocking=True)


class ImmediateExpertRunner:
    """Runs all of a token's top-k experts now: one staged submission, one copy back."""

    def __init__(self, backend: ExpertBackend, hidden_size: int, top_k: int) -> None:
        self.backend = backend
        self.calls = StagedCalls(backend, hidden_size, top_k, slots=1)
        self._pending: dict[int, Submission] = {}

    def start_pass(self) -> None:
        for sub in self._pending.values():
            self.backend.sync(sub.ticket)
        self._pending.clear()

    def begin(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        self._pending[layer_idx] = self.calls.submit(0, layer_idx, hidden, expert_ids, weights)

    def finish(self, layer_idx: int) -> torch.Tensor:
        sub = self._pending.pop(layer_idx, None)
        if sub is None:
            raise EngineError(f"expert runner: finish({layer_idx}) without begin")
        self.backend.sync(sub.ticket)
        return to_device(sub.out, sub.like)


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

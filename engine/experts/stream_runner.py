"""Routed experts overlapped with the GPU: CPU work submitted and synced on the CUDA stream.

Per MoE layer, in stream order and without blocking the Python thread:

    router ─► D2H copies (hidden, ids, weights, token count) into pinned slot buffers
           ─► host function: submit the slot to the C++ kernels (returns at once)
           ─► shared expert on the GPU                       (overlaps the CPU experts)
           ─► host function: wait for the slot ─► H2D copy of its output ─► add

Deferral (``immediate`` < top-k): the lowest-ranked experts go to a second slot that is
synced only after the *next* MoE layer's immediate experts, so the CPU computes them while
the GPU runs the next layer; the last MoE layer defers nothing. Every step is a stream
operation, so a whole decode step can be captured in a CUDA Graph (host functions become
graph nodes). Buffers: one pinned set for immediate experts and two for deferred ones
(alternating by MoE layer), each of ``capacity`` rows, shared by every layer's slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from engine.errors import EngineError
from engine.experts.runner import split_topk
from engine.runtime.cuda_host import launch_host_func


class SlotSet:
    """Pinned buffers for one role and one kernel slot per MoE layer over them."""

    def __init__(
        self, engine, layers: Sequence[int], capacity: int, hidden_size: int, top_k: int  # noqa: ANN001
    ) -> None:  # fmt: skip
        def pinned(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, pin_memory=True)

        self.hidden = pinned((capacity, hidden_size), torch.bfloat16)
        self.out = pinned((capacity, hidden_size), torch.bfloat16)
        self.ids = pinned((capacity, top_k), torch.int64)
        self.weights = pinned((capacity, top_k), torch.float32)
        self.tokens = pinned((1,), torch.int32)
        self.slots = {
            layer: engine.make_slot(
                layer, top_k, self.hidden, self.ids, self.weights, self.out, self.tokens
            )
            for layer in layers
        }
        first = next(iter(self.slots.values()))
        self.submit_fn, self.sync_fn = first.submit_fn, first.sync_fn

    def errors(self) -> list[str]:
        """Errors the C-level submits/syncs recorded since the last call (cleared)."""
        return [e for e in (s.take_error() for s in self.slots.values()) if e]


class StreamExpertRunner:
    """The hybrid runner for a CUDA model whose experts run on the C++ kernel backend."""

    def __init__(
        self,
        backend,  # noqa: ANN001 - a KernelExpertBackend
        moe_layers: Sequence[int],
        hidden_size: int,
        top_k: int,
        capacity: int,
        immediate: int | None = None,
    ) -> None:
        if not moe_layers:
            raise EngineError("the stream expert runner needs at least one MoE layer")
        engine = backend.engine
        self.capacity = capacity
        self.top_k = top_k
        self.immediate = top_k if immediate is None else immediate
        self.last = max(moe_layers)
        self.parity = {layer: i % 2 for i, layer in enumerate(sorted(moe_layers))}
        self.now = SlotSet(engine, moe_layers, capacity, hidden_size, top_k)
        self.deferred: tuple[SlotSet, ...] = ()
        if self.immediate < top_k:
            self.deferred = tuple(
                SlotSet(engine, moe_layers, capacity, hidden_size, top_k) for _ in range(2)
            )
        self._counts: dict[tuple[torch.device, int], torch.Tensor] = {}
        self._now: dict[int, tuple[int, torch.Tensor]] = {}
        self._later: tuple[SlotSet, int, int] | None = None
        self._pending: tuple[SlotSet, int, int] | None = None

    def _count(self, tokens: int, device: torch.device) -> torch.Tensor:
        key = (device, tokens)
        if key not in self._counts:
            self._counts[key] = torch.full((1,), tokens, dtype=torch.int32, device=device)
        return self._counts[key]

    def _stage_and_submit(
        self,
        slots: SlotSet,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        t = int(hidden.shape[0])
        slots.hidden[:t].copy_(hidden, non_blocking=True)
        slots.ids[:t].copy_(expert_ids, non_blocking=True)
        slots.weights[:t].copy_(weights, non_blocking=True)
        slots.tokens.copy_(self._count(t, hidden.device), non_blocking=True)
        launch_host_func(slots.submit_fn, slots.slots[layer_idx].address)

    def start_pass(self) -> None:
        """A new forward: forget per-pass state (the stream orders the rest)."""
        self._now.clear()
        self._later = self._pending = None

    def begin(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        t = int(hidden.shape[0])
        if t > self.capacity:
            raise EngineError(f"{t} tokens exceed the expert runner's capacity {self.capacity}")
        w = weights.to(torch.float32)
        if self.deferred and layer_idx != self.last:
            now, later = split_topk(expert_ids, self.immediate)
            self._stage_and_submit(self.now, layer_idx, hidden, now, w)
            slots = self.deferred[self.parity[layer_idx]]
            self._stage_and_submit(slots, layer_idx, hidden, later, w)
            self._later = (slots, layer_idx, t)
        else:
            self._stage_and_submit(self.now, layer_idx, hidden, expert_ids, w)
            self._later = None
        self._now[layer_idx] = (t, hidden)

    def _collect(self, slots: SlotSet, layer_idx: int, t: int, like: torch.Tensor) -> torch.Tensor:
        launch_host_func(slots.sync_fn, slots.slots[layer_idx].address)
        return slots.out[:t].to(like.device, like.dtype, non_blocking=True)

    def finish(self, layer_idx: int) -> torch.Tensor:
        if layer_idx not in self._now:
            raise EngineError(f"expert runner: finish({layer_idx}) without begin")
        t, like = self._now.pop(layer_idx)
        out = self._collect(self.now, layer_idx, t, like)
        if self._pending is not None:
            slots, layer, t_prev = self._pending
            if t_prev != t:
                raise EngineError("deferred expert output does not match the next layer's tokens")
            out = out + self._collect(slots, layer, t_prev, like)
        self._pending, self._later = self._later, None
        return out

    def errors(self) -> list[str]:
        """Errors the CPU side recorded (call after the stream is synchronised)."""
        return [e for s in (self.now, *self.deferred) for e in s.errors()]

"""Routed experts streamed from host memory and computed on the model's device (GPU).

:class:`GpuExpertStreamer` keeps its own copy of every MoE layer's routed experts in host
memory (pinned on a CUDA device) in the form that crosses PCIe: bf16/fp32 ``gate_up
[E, 2I, H]`` and ``down [E, H, I]``, or int8/int4 data plus float32 scales exactly as
:mod:`engine.quant` makes them (so fewer bytes cross, dequantized on the device, equal to
the CPU backends' dequantized weights). Two staging slots on the device hold one layer's
experts each (all of them, or a chosen subset packed in front); a dedicated copy stream
fills a slot while the compute stream reads the other, and CUDA events order the two: a
copy waits until the compute that last read its slot is done, a compute waits for its
slot's copy. So the copy of layer l+1 overlaps the computation of layer l.

Compute (:meth:`GpuExpertStreamer.compute`): per expert, in increasing id order, gather its
tokens, ``x @ gate_up^T``, ``silu(gate) * up``, ``@ down^T``, scale by the routing weight
and ``index_add`` into a float32 output; id -1 is skipped: the reference backend's math,
on the streamer's device. It runs on its own stream (after the caller's stream reaches the
router) and the caller waits on the returned event, so the caller's stream can run other
work (the shared expert, the CPU experts' copies) meanwhile; one host synchronisation per
layer reads the per-expert token counts. On a CPU device everything runs in order with no
streams, events or pinning, which lets the math be tested anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import EngineError
from engine.experts.backend import StackedExperts
from engine.quant import dequantize_int4, dequantize_int8, quantize_weight
from engine.quant.weights import PRECISIONS

ALIGN = 256  # byte alignment of each tensor inside a flat buffer
ROW_BUCKET = 64  # on a GPU, experts' token rows padded to a multiple of this (see __init__)


@dataclass(frozen=True)
class TensorSpec:
    """One per-layer tensor of the streamed form: ``[E, *shape]`` of ``dtype``."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def expert_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


def _layout(specs: Sequence[TensorSpec], experts: int) -> tuple[list[int], int]:
    """Byte offsets of each spec's ``[experts, ...]`` tensor in one flat buffer, and its size."""
    offsets, total = [], 0
    for spec in specs:
        total = -(-total // ALIGN) * ALIGN
        offsets.append(total)
        total += experts * spec.expert_bytes
    return offsets, total


def _carve(
    flat: torch.Tensor, specs: Sequence[TensorSpec], experts: int
) -> dict[str, torch.Tensor]:
    """Typed ``[experts, ...]`` views of ``flat`` (uint8) laid out by :func:`_layout`."""
    offsets, _ = _layout(specs, experts)
    out = {}
    for spec, off in zip(specs, offsets, strict=True):
        n = experts * spec.expert_bytes
        out[spec.name] = flat[off : off + n].view(spec.dtype).view(experts, *spec.shape)
    return out


def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ids as ``(start, stop)`` runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for x in ids:
        if runs and runs[-1][1] == x:
            runs[-1] = (runs[-1][0], x + 1)
        else:
            runs.append((x, x + 1))
    return runs


@dataclass
class HostLayer:
    """One layer's experts in host memory: a flat buffer and typed ``[E, ...]`` views."""

    num_experts: int
    flat: torch.Tensor
    tensors: dict[str, torch.Tensor]


@dataclass
class Slot:
    """A device staging buffer for one layer: which layer and experts it holds, the event
    its last copy recorded and the event the last compute reading it recorded."""

    flat: torch.Tensor
    tensors: dict[str, torch.Tensor]
    layer: int | None = None
    position: dict[int, int] = field(default_factory=dict)  # expert id -> row in the slot
    copied: Any = None  # torch.cuda.Event
    used: Any = None  # torch.cuda.Event
    stamp: int = 0  # last staged (LRU)
    pending: bool = False  # staged for a compute that has not been issued yet


@dataclass
class StreamResult:
    """A computation issued on the streamer's stream: float32 ``out [T, H]``, the event
    that marks it done (None on a CPU device) and every expert's token count."""

    out: torch.Tensor
    done: Any
    counts: list[int]
    computed: list[int]

    def wait(self) -> torch.Tensor:
        """``out``, once the caller's current stream is ordered after the computation."""
        if self.done is not None:
            torch.cuda.current_stream(self.out.device).wait_event(self.done)
        return self.out


class GpuExpertStreamer:
    """Routed experts in host memory, copied to device staging slots and computed there
    (see the module docstring). ``precision``: fp32 | bf16 | int8 | int4 (``group_size``
    32 | 64 for int4); ``device``: a CUDA device, or ``cpu`` (same math, no streams)."""

    def __init__(
        self,
        device: torch.device | str,
        precision: str,
        group_size: int = 32,
        slots: int = 2,
        row_bucket: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise EngineError(f"streamed expert precision must be one of {PRECISIONS}")
        if slots < 2:
            raise EngineError("the expert streamer needs at least two staging slots")
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:  # "cuda" -> "cuda:N", as tensors report
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = precision
        self.group_size = group_size
        # Each expert's token rows are padded to a multiple of row_bucket before its matmuls
        # (the padding rows are computed and dropped), so that prompts of one length reuse
        # a few matmul shapes instead of bringing new ones (one per expert's exact token
        # count) that the GPU BLAS library must choose a kernel for on first use. Default:
        # ROW_BUCKET on a CUDA device, none (exact shapes) on the CPU.
        bucket = (ROW_BUCKET if self.cuda else 0) if row_bucket is None else row_bucket
        if bucket < 0:
            raise EngineError(f"row_bucket must be >= 0, got {row_bucket}")
        self.row_bucket = bucket
        self.num_slots = slots
        self._layers: dict[int, HostLayer] = {}
        self._specs: tuple[TensorSpec, ...] = ()
        self._slots: list[Slot] = []
        self._clock = 0
        self.pinning = "pinned (pinned host allocator)" if self.cuda else "pageable (cpu device)"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.compute_stream = torch.cuda.Stream(self.device) if self.cuda else None

    # -- weights -----------------------------------------------------------------------------
    def _convert(self, experts: StackedExperts) -> dict[str, torch.Tensor]:
        """The streamed form of ``experts`` (quantized exactly as engine.quant does)."""
        e, h, i = experts.num_experts, experts.hidden_size, experts.intermediate_size
        if self.precision in ("fp32", "bf16"):
            dtype = torch.float32 if self.precision == "fp32" else torch.bfloat16
            return {"gate_up": experts.gate_up.to(dtype), "down": experts.down.to(dtype)}
        out = {}
        for name, mat, rows in (("gate_up", experts.gate_up, 2 * i), ("down", experts.down, h)):
            q = quantize_weight(mat.reshape(e * rows, -1), self.precision, self.group_size)
            assert q.scale is not None
            out[name] = q.data.view(e, rows, -1)
            # int8: one scale per row [E, rows]; int4: one per group [E, rows, K / group]
            scale_shape = (e, rows) if self.precision == "int8" else (e, rows, -1)
            out[f"{name}_scale"] = q.scale.view(*scale_shape)
        return out

    def add_layer(self, layer_idx: int, experts: StackedExperts) -> None:
        """Keep a copy of layer ``layer_idx``'s experts (converted; ``experts`` may be freed)."""
        if layer_idx in self._layers:
            raise EngineError(f"expert streamer: layer {layer_idx} added twice")
        if self._slots:
            raise EngineError("expert streamer: layers must be added before staging is allocated")
        parts = self._convert(experts)
        specs = tuple(
            TensorSpec(name, tuple(t.shape[1:]), t.dtype) for name, t in sorted(parts.items())
        )
        if self._specs and specs != self._specs:
            raise EngineError(f"expert streamer: layer {layer_idx}'s experts differ in shape")
        self._specs = specs
        e = experts.num_experts
        _, total = _layout(specs, e)
        # Pinned from the start (PyTorch's pinned host allocator): registering pageable
        # memory in place (cudaHostRegister) failed on the GPU host when a freed registered
        # range was reused ("memory range already mapped"), and left a sticky CUDA error.
        flat = torch.empty(total, dtype=torch.uint8, pin_memory=self.cuda)
        tensors = _carve(flat, specs, e)
        for name, t in parts.items():
            tensors[name].copy_(t)
        self._layers[layer_idx] = HostLayer(e, flat, tensors)

    @property
    def layers(self) -> list[int]:
        return sorted(self._layers)

    def num_experts(self, layer_idx: int) -> int:
        return self._layer(layer_idx).num_experts

    def _layer(self, layer_idx: int) -> HostLayer:
        try:
            return self._layers[layer_idx]
        except KeyError:
            raise EngineError(f"expert streamer has no layer {layer_idx}") from None

    @property
    def expert_bytes(self) -> int:
        """Bytes one expert's weights take on the wire (data + scales)."""
        return sum(s.expert_bytes for s in self._specs)

    def layer_bytes(self, layer_idx: int) -> int:
        """Bytes a whole layer's experts take on the wire."""
        return self.num_experts(layer_idx) * self.expert_bytes

    @property
    def host_bytes(self) -> int:
        """Host memory this streamer's own copy of the experts takes."""
        return sum(int(layer.flat.numel()) for layer in self._layers.values())

    # -- staging -----------------------------------------------------------------------------
    def allocate(self) -> None:
        """Allocate the device staging slots, each the size of the largest layer."""
        if self._slots or not self._layers:
            return
        e = max(layer.num_experts for layer in self._layers.values())
        _, total = _layout(self._specs, e)
        for _ in range(self.num_slots):
            flat = torch.empty(total, dtype=torch.uint8, device=self.device)
            self._slots.append(Slot(flat, _carve(flat, self._specs, e)))

    @property
    def staging_bytes(self) -> int:
        """Device memory of the staging slots (allocated or, before :meth:`allocate`, to be)."""
        if self._slots:
            return sum(int(s.flat.numel()) for s in self._slots)
        if not self._layers:
            return 0
        e = max(layer.num_experts for layer in self._layers.values())
        return self.num_slots * _layout(self._specs, e)[1]

    def new_pass(self) -> None:
        """A new forward pass: every slot becomes free and holds nothing. Weights are never
        reused from an earlier pass, so a model of a few layers (a layer slice standing for
        a deep model) pays for every copy, as the full model would."""
        for slot in self._slots:
            slot.pending, slot.layer, slot.position = False, None, {}

    def _find(self, layer_idx: int, experts: Sequence[int]) -> Slot | None:
        for slot in self._slots:
            if slot.layer == layer_idx and all(x in slot.position for x in experts):
                return slot
        return None

    def stage(self, layer_idx: int, experts: Sequence[int] | None = None) -> Slot:
        """Copy layer ``layer_idx``'s ``experts`` (all when None) into a staging slot on the
        copy stream, unless a slot already holds them; returns the slot (its ``copied``
        event marks the copy's end). The least recently staged free slot is reused."""
        self.allocate()
        host = self._layer(layer_idx)
        want = list(range(host.num_experts)) if experts is None else sorted(set(experts))
        if want and not 0 <= want[0] <= want[-1] < host.num_experts:
            raise EngineError(f"layer {layer_idx}: experts {want} outside 0..{host.num_experts}")
        slot = self._find(layer_idx, want)
        self._clock += 1
        if slot is not None:
            slot.stamp, slot.pending = self._clock, True
            return slot
        free = [s for s in self._slots if not s.pending]
        if not free:
            raise EngineError("expert streamer: every staging slot holds an unused prefetch")
        slot = min(free, key=lambda s: s.stamp)
        slot.layer, slot.position = layer_idx, {}
        with self._on(self.copy_stream, wait_current=False):
            if slot.used is not None:
                self.copy_stream.wait_event(slot.used)  # type: ignore[union-attr]
            row = 0
            for start, stop in _runs(want):
                n = stop - start
                for name, src in host.tensors.items():
                    slot.tensors[name][row : row + n].copy_(src[start:stop], non_blocking=True)
                for x in range(start, stop):
                    slot.position[x] = row + x - start
                row += n
            slot.copied = self._record(self.copy_stream)
        slot.stamp, slot.pending = self._clock, True
        return slot

    # -- compute -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _on(self, stream: Any, wait_current: bool = True) -> Iterator[None]:
        """Run the block on ``stream`` (ordered after the current stream when asked)."""
        if stream is None:
            yield
            return
        if wait_current:
            stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            yield

    @staticmethod
    def _record(stream: Any) -> Any:
        if stream is None:
            return None
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def _weights(
        self, slot: Slot, row: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One expert's ``gate_up [2I, H]`` and ``down [H, I]`` in ``dtype``."""
        t = slot.tensors
        if self.precision in ("fp32", "bf16"):
            return t["gate_up"][row].to(dtype), t["down"][row].to(dtype)
        if self.precision == "int8":
            return (
                dequantize_int8(t["gate_up"][row], t["gate_up_scale"][row], dtype),
                dequantize_int8(t["down"][row], t["down_scale"][row], dtype),
            )
        gs = self.group_size
        return (
            dequantize_int4(t["gate_up"][row], t["gate_up_scale"][row], gs, dtype),
            dequantize_int4(t["down"][row], t["down_scale"][row], gs, dtype),
        )

    def compute(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
        experts: Sequence[int] | None = None,
    ) -> StreamResult:
        """Issue the routed experts of ``hidden [T, H]`` on the device: only ``experts``
        (all when None; the others contribute nothing). Experts a slot does not hold yet
        are copied first (after routing, so that copy is not overlapped). Returns at once
        apart from reading the token counts; call ``.wait()`` on the result for ``out``."""
        host = self._layer(layer_idx)
        e = host.num_experts
        t, k = expert_ids.shape
        if hidden.device != self.device or hidden.shape[0] != t or weights.shape != (t, k):
            raise EngineError(
                f"expert streamer on {self.device}: hidden {tuple(hidden.shape)} on "
                f"{hidden.device}, ids {tuple(expert_ids.shape)}, weights {tuple(weights.shape)}"
            )
        out = torch.zeros((t, hidden.shape[1]), dtype=torch.float32, device=self.device)
        if self.compute_stream is not None:  # the caching allocator must not hand these
            for tensor in (hidden, expert_ids, weights, out):  # out while we still read them
                tensor.record_stream(self.compute_stream)
        with self._on(self.compute_stream):
            flat = expert_ids.reshape(-1).to(torch.int64)
            valid = flat >= 0
            ids = flat[valid]
            tokens = torch.arange(t, device=self.device).repeat_interleave(k)[valid]
            slot_w = weights.reshape(-1).to(torch.float32)[valid]
            order = torch.argsort(ids, stable=True)
            ids, tokens, slot_w = ids[order], tokens[order], slot_w[order]
            counts = torch.bincount(ids, minlength=e).tolist()  # the one host sync
            if len(counts) > e:
                raise EngineError(f"layer {layer_idx}: expert id {len(counts) - 1} >= {e}")
            allowed = set(range(e)) if experts is None else set(experts)
            mine = [x for x in range(e) if counts[x] and x in allowed]
            if not mine:
                return StreamResult(out, self._record(self.compute_stream), counts, mine)
            slot = self._find(layer_idx, mine)
            if slot is None:
                slot = self.stage(layer_idx, mine)
            if slot.copied is not None:
                self.compute_stream.wait_event(slot.copied)  # type: ignore[union-attr]
            slot.pending = False
            starts = [0] * (e + 1)
            for x in range(e):
                starts[x + 1] = starts[x] + counts[x]
            dtype = hidden.dtype
            inter = int(slot.tensors["gate_up"].shape[1]) // 2
            gathered, padded_starts = self._gather(hidden, tokens, ids, counts, starts, mine)
            for x in mine:
                lo, hi = starts[x], starts[x + 1]
                rows = tokens[lo:hi]
                w_gu, w_down = self._weights(slot, slot.position[x], dtype)
                if gathered is None:
                    xs = hidden[rows]
                else:  # this expert's rows, padded: a view of the one gather
                    xs = gathered[padded_starts[x] : padded_starts[x + 1]]
                gu = F.linear(xs, w_gu)
                act = F.silu(gu[:, :inter]) * gu[:, inter:]
                y = F.linear(act, w_down)[: hi - lo]
                out.index_add_(0, rows, y.to(torch.float32) * slot_w[lo:hi, None])
            slot.used = self._record(self.compute_stream)
            done = self._record(self.compute_stream)
        return StreamResult(out, done, counts, mine)

    def _gather(
        self,
        hidden: torch.Tensor,
        tokens: torch.Tensor,
        ids: torch.Tensor,
        counts: list[int],
        starts: list[int],
        mine: list[int],
    ) -> tuple[torch.Tensor | None, list[int]]:
        """With row bucketing: the token rows of every expert in ``mine`` in one gather,
        each expert's block padded to a multiple of ``row_bucket`` (padding rows repeat
        token 0 and are dropped after the matmuls), and the block starts (indexed by expert
        id; other experts get empty blocks); ``(None, [])`` without bucketing."""
        b = self.row_bucket
        if not b:
            return None, []
        chosen = set(mine)
        padded_starts = [0] * (len(counts) + 1)
        for x, n in enumerate(counts):
            size = -(-n // b) * b if x in chosen else 0
            padded_starts[x + 1] = padded_starts[x] + size
        # sorted assignment j of expert x goes to padded_starts[x] + (j - starts[x])
        shift = [p - s for p, s in zip(padded_starts[:-1], starts[:-1], strict=True)]
        keep = [1 if x in chosen else 0 for x in range(len(counts))]
        table = torch.tensor([shift, keep], dtype=torch.int64).to(self.device, non_blocking=True)
        total = padded_starts[-1]
        dest = torch.arange(ids.numel(), device=self.device) + table[0][ids]
        # other experts' assignments go to one spare slot past the end (a boolean mask
        # would need a host synchronisation to size its result)
        dest = torch.where(table[1][ids].bool(), dest, total)
        index = torch.zeros(total + 1, dtype=torch.int64, device=self.device)
        index[dest] = tokens
        return hidden[index[:total]], padded_starts

    def synchronize(self) -> None:
        """Wait for every copy and computation this streamer issued."""
        for stream in (self.copy_stream, self.compute_stream):
            if stream is not None:
                stream.synchronize()

    def close(self) -> None:
        """Free the staging slots and drop the (pinned) host copy."""
        self.synchronize()
        self._slots.clear()
        self._layers.clear()

    def describe(self) -> dict[str, Any]:
        """Facts for provenance: precision, bytes on the wire, host and staging memory."""
        first = self.layers[0] if self._layers else None
        return {
            "stream_precision": self.precision,
            "stream_expert_bytes": self.expert_bytes,
            "stream_layer_bytes": None if first is None else self.layer_bytes(first),
            "stream_host_bytes": self.host_bytes,
            "stream_host_memory": self.pinning,
            "stream_staging_bytes": self.staging_bytes,
            "stream_staging_slots": self.num_slots,
            "stream_row_bucket": self.row_bucket,
        }

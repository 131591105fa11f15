"""Prefill placement of routed experts per MoE layer and batch: cpu | gpu_stream | split | auto.

:class:`PrefillPlacement` decides, for each MoE layer of a forward pass, where its routed
experts run (engine.runtime.cost_model.choose) and remembers what it chose;
:class:`PlacementRunner` is the ExpertRunner that carries it out around the engine's own
runner (the ``inner`` runner: CPU experts, with or without CUDA-stream host functions):

- ``cpu``: the inner runner, unchanged (every batch of one token, i.e. decode, goes here);
- ``gpu_stream``: the GPU streamer (engine.experts.gpu_stream) computes every expert;
- ``split``: the GPU computes the experts whose weights it was given, the inner runner the
  others (their ids masked to -1 for it), and the two outputs are summed in float32.

The first MoE layer of a pass decides after its routing; while layer ``l`` starts, the
next MoE layer's choice is made and, when it streams, its weights (the whole layer, or the
GPU's share for split) are copied on the copy stream, overlapping layer ``l``. For split the
GPU gets the experts that had the most tokens in that layer during the previous pass (the
lowest ids before any). A runner that defers experts (expert deferral) is never wrapped,
so decode with deferral behaves exactly as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import EngineError, EngineUnavailable
from engine.experts.gpu_stream import GpuExpertStreamer, StreamResult
from engine.experts.runner import ExpertRunner
from engine.runtime.cost_model import POLICIES, Calibration, Choice, choose

HISTORY = 64  # forward passes whose choices are kept for summary()


class PrefillPlacement:
    """The placement policy of one engine and what it chose (see the module docstring).

    ``streamer`` None: nothing can leave the CPU (``unavailable`` says why, when asked
    for more). ``calibrate(cpu)`` measures the cost model's inputs (the CPU backend's
    times only when ``cpu``); it runs when a policy first needs them.
    """

    def __init__(
        self,
        requested: str,
        *,
        streamer: GpuExpertStreamer | None = None,
        moe_layers: Sequence[int] = (),
        top_k: int = 1,
        calibration: Calibration | None = None,
        calibrate: Callable[[bool], Calibration] | None = None,
        unavailable: str | None = None,
    ) -> None:
        if requested not in POLICIES:
            raise EngineError(f"prefill_placement must be one of {list(POLICIES)}: {requested!r}")
        self.requested = requested
        self._policy = requested
        self.streamer = streamer
        self.moe_layers = sorted(moe_layers)
        self._next = dict(zip(self.moe_layers, self.moe_layers[1:], strict=False))
        self.top_k = top_k
        self.calibration = calibration
        self._calibrate = calibrate
        self.unavailable = unavailable
        self._plan: dict[int, Choice] = {}
        self._gpu_sets: dict[int, list[int]] = {}
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}
        self._popularity: dict[int, list[int]] = {}
        self._history: deque[dict[int, Choice]] = deque(maxlen=HISTORY)
        self._current: dict[int, Choice] = {}
        self._wrappers: dict[int, tuple[ExpertRunner, PlacementRunner]] = {}
        self.memory: dict[str, Any] = {}  # GPU memory facts measured at load
        self._inner_name = ""  # the runner the last wrapper ran CPU experts through

    # -- configuration -----------------------------------------------------------------------
    @property
    def policy(self) -> str:
        """The policy in force (the configured one, or the one :meth:`using` set)."""
        return self._policy

    def _require(self, policy: str) -> None:
        if policy not in POLICIES:
            raise EngineError(f"prefill placement must be one of {list(POLICIES)}: {policy!r}")
        if policy in ("gpu_stream", "split") and self.streamer is None:
            raise EngineUnavailable(
                f"prefill placement {policy!r} is unavailable: "
                f"{self.unavailable or 'the engine was loaded with prefill_placement cpu'}"
            )
        if self.streamer is None:
            return
        needs_cpu = policy in ("split", "auto")
        cal = self.calibration
        if policy != "cpu" and (cal is None or (needs_cpu and not cal.cpu_seconds)):
            if self._calibrate is None:
                raise EngineError(f"prefill placement {policy!r} needs a calibration")
            self.calibration = self._calibrate(needs_cpu)

    @contextmanager
    def using(self, policy: str) -> Iterator[PrefillPlacement]:
        """Run the block with ``policy`` in force (calibrating first when it needs it)."""
        self._require(policy)
        before = self._policy
        self._policy = policy
        try:
            yield self
        finally:
            self._policy = before

    def wrap(self, inner: ExpertRunner, reusable: bool = False) -> ExpertRunner:
        """The runner to install around ``inner``: ``inner`` itself when no prefill can
        leave the CPU or when ``inner`` defers experts. A ``reusable`` inner runner (one the
        model keeps, e.g. a stream runner a CUDA Graph was captured with) always gets the
        same wrapper object."""
        immediate = getattr(inner, "immediate", None)
        if self.streamer is None or (immediate is not None and immediate < self.top_k):
            return inner
        if isinstance(inner, PlacementRunner):
            return inner
        cached = self._wrappers.get(id(inner))
        if cached is not None and cached[0] is inner:
            return cached[1]
        wrapper = PlacementRunner(inner, self)
        self._inner_name = type(inner).__name__
        if reusable:
            self._wrappers[id(inner)] = (inner, wrapper)
        return wrapper

    # -- one forward pass --------------------------------------------------------------------
    def start_pass(self) -> None:
        """A new forward pass: forget the plan, file the last pass's choices."""
        if self._current:
            self._history.append(self._current)
            self._current = {}
        self._plan.clear()
        self._gpu_sets.clear()
        if self.streamer is not None:
            self.streamer.new_pass()

    def _decide(self, layer_idx: int, tokens: int, first: bool) -> Choice:
        if tokens > 1 and self._policy != "cpu":
            self._require(self._policy)
        return choose(self._policy, tokens, self.calibration, first=first)

    def choice(self, layer_idx: int, tokens: int) -> Choice:
        """Layer ``layer_idx``'s choice: planned when the previous MoE layer started, else
        decided now (the first MoE layer of the pass: nothing was copied ahead)."""
        planned = self._plan.get(layer_idx)
        if planned is None:
            planned = self._plan[layer_idx] = self._decide(layer_idx, tokens, first=True)
        self._current[layer_idx] = planned
        return planned

    def prepare_next(self, layer_idx: int, tokens: int) -> None:
        """Plan the MoE layer after ``layer_idx`` and start copying its weights when it
        streams them ahead of its routing."""
        nxt = self._next.get(layer_idx)
        if nxt is None or nxt in self._plan or tokens <= 1:
            return
        choice = self._plan[nxt] = self._decide(nxt, tokens, first=False)
        if choice.policy == "cpu" or not choice.prefetch or self.streamer is None:
            return
        self.streamer.stage(nxt, self.gpu_experts(nxt, choice))

    def gpu_experts(self, layer_idx: int, choice: Choice) -> list[int] | None:
        """The experts the GPU computes for ``choice`` (None: all of them)."""
        if choice.policy != "split":
            return None
        chosen = self._gpu_sets.get(layer_idx)
        if chosen is None:
            counts = self._popularity.get(layer_idx)
            ids = range(choice.num_experts)
            if counts is not None:
                ids = sorted(ids, key=lambda x: (-counts[x], x))
            chosen = self._gpu_sets[layer_idx] = sorted(ids[: choice.gpu_experts])
        return chosen

    def gpu_mask(
        self, experts: Sequence[int], num_experts: int, device: torch.device
    ) -> torch.Tensor:
        """Boolean ``[num_experts]`` on ``device``: True for ``experts``."""
        key = (num_experts, device.index or 0, *experts)
        mask = self._masks.get(key)
        if mask is None:
            if len(self._masks) >= HISTORY:  # sets change with the routing: keep a few
                self._masks.clear()
            host = torch.zeros(num_experts, dtype=torch.bool)
            host[list(experts)] = True
            if device.type == "cuda":  # an asynchronous copy: no wait for the stream
                host = host.pin_memory()
            mask = self._masks[key] = host.to(device, non_blocking=True)
        return mask

    def observed(self, layer_idx: int, counts: list[int]) -> None:
        """Token counts per expert that layer ``layer_idx``'s routing produced."""
        self._popularity[layer_idx] = counts

    # -- what was chosen ---------------------------------------------------------------------
    def start_record(self) -> None:
        """Forget the choices recorded so far (a new prefill starts)."""
        self._history.clear()
        self._current = {}

    def layer_labels(self) -> dict[int, str]:
        """Per MoE layer, the labels of its choices since :meth:`start_record` (several
        joined by ``+`` when chunks of a long prompt differed)."""
        out: dict[int, list[str]] = {}
        for record in (*self._history, self._current):
            for layer, choice in record.items():
                labels = out.setdefault(layer, [])
                if (label := choice.label()) not in labels:
                    labels.append(label)
        return {layer: "+".join(v) for layer, v in sorted(out.items())}

    def summary(self) -> str:
        """One string for the results: the label when every MoE layer had the same one,
        else ``L<a>-<b>=<label>`` groups of consecutive layers joined by ``;``."""
        labels = self.layer_labels()
        if not labels:
            return Choice("cpu", 0, 0, requested=self.requested).label()
        groups: list[tuple[int, int, str]] = []
        for layer, label in labels.items():
            if groups and groups[-1][2] == label:
                groups[-1] = (groups[-1][0], layer, label)
            else:
                groups.append((layer, layer, label))
        if len(groups) == 1:
            return groups[0][2]
        return ";".join(
            f"L{a}={label}" if a == b else f"L{a}-{b}={label}" for a, b, label in groups
        )

    def describe(self) -> dict[str, Any]:
        """Facts for provenance: policy, last prefill's choices, cost-model inputs, memory."""
        cal = self.calibration
        info: dict[str, Any] = {
            "prefill_placement": self.requested,
            "prefill_placement_unavailable": self.unavailable,
            "placement_last_prefill": self.summary(),
            "placement_last_prefill_layers": self.layer_labels(),
            "placement_cost_model": None if cal is None else cal.as_dict(),
            "placement_cpu_runner": self._inner_name or None,
            **self.memory,
        }
        if self.streamer is not None:
            info.update(self.streamer.describe())
            info["stream_host_copy_note"] = (
                f"the GPU streamer keeps its own copy of the routed experts in host memory "
                f"({self.streamer.host_bytes / 1e9:.2f} GB) besides the CPU backend's, "
                "because prefill_placement is not cpu"
            )
        return info

    def close(self) -> None:
        """Free the streamer's host copy and staging buffers."""
        self._wrappers.clear()
        self._masks.clear()
        if self.streamer is not None:
            self.streamer.close()
            self.streamer = None


@dataclass
class _Pending:
    choice: Choice
    result: StreamResult | None
    dtype: torch.dtype


class PlacementRunner:
    """ExpertRunner applying a :class:`PrefillPlacement` around ``inner`` (module docstring)."""

    def __init__(self, inner: ExpertRunner, placement: PrefillPlacement) -> None:
        from engine.experts.stream_runner import StreamExpertRunner

        self.inner = inner
        self.placement = placement
        # a stream runner only enqueues its CPU work; others compute inside begin()
        self._inner_enqueues = isinstance(inner, StreamExpertRunner)
        self._pending: dict[int, _Pending] = {}

    def start_pass(self) -> None:
        self.inner.start_pass()
        self.placement.start_pass()
        self._pending.clear()

    def begin(
        self,
        layer_idx: int,
        hidden: torch.Tensor,
        expert_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        tokens = int(hidden.shape[0])
        place = self.placement
        choice = place.choice(layer_idx, tokens)
        if choice.policy == "cpu":
            place.prepare_next(layer_idx, tokens)
            self.inner.begin(layer_idx, hidden, expert_ids, weights)
            self._pending[layer_idx] = _Pending(choice, None, hidden.dtype)
            return
        streamer = place.streamer
        assert streamer is not None
        gpu = place.gpu_experts(layer_idx, choice)
        cpu_ids = None
        if gpu is not None:  # split: the CPU gets every other expert
            mask = place.gpu_mask(gpu, choice.num_experts, expert_ids.device)
            cpu_ids = torch.where(mask[expert_ids.clamp(min=0)], -1, expert_ids)
            if self._inner_enqueues:
                self.inner.begin(layer_idx, hidden, cpu_ids, weights)
        result = streamer.compute(layer_idx, hidden, expert_ids, weights.to(torch.float32), gpu)
        place.observed(layer_idx, result.counts)
        place.prepare_next(layer_idx, tokens)
        if cpu_ids is not None and not self._inner_enqueues:
            self.inner.begin(layer_idx, hidden, cpu_ids, weights)
        self._pending[layer_idx] = _Pending(choice, result, hidden.dtype)

    def finish(self, layer_idx: int) -> torch.Tensor:
        pending = self._pending.pop(layer_idx, None)
        if pending is None:
            raise EngineError(f"expert runner: finish({layer_idx}) without begin")
        if pending.result is None:
            return self.inner.finish(layer_idx)
        cpu_out = self.inner.finish(layer_idx) if pending.choice.policy == "split" else None
        out = pending.result.wait()
        if cpu_out is not None:
            out.add_(cpu_out.to(torch.float32))
        return out.to(pending.dtype)

    def errors(self) -> list[str]:
        """The inner runner's recorded CPU errors (call after synchronising the stream)."""
        errors = getattr(self.inner, "errors", None)
        return list(errors()) if errors is not None else []

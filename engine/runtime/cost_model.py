"""The prefill placement cost model: for one MoE layer and batch, the cheapest of cpu /
gpu_stream / split, from measurements taken at load (:class:`Calibration`).

Per-expert cost curves. A calibration point is one layer run on ``T`` tokens routed
uniformly at random: ``a(T) = E (1 - (1 - k/E)^T)`` experts are then active with
``n(T) = T k / a(T)`` tokens each, so one active expert holding ``n`` tokens costs
``s / a(T)`` seconds. The CPU backend's points give ``c_cpu(n)`` and the GPU streamer's
compute points (weights already on the GPU) ``c_gpu(n)``; both are interpolated linearly in
``n``, held at the first point below it and extrapolated along the last segment above it.
Copying ``x`` experts costs ``x * expert_bytes / h2d_bytes_per_s``.

Predicted seconds per MoE layer for ``T`` tokens (``a = a(T)``, ``n = n(T)``, ``p = a / E``):

========================  =============================================================
cpu                       ``a c_cpu(n)``
gpu_stream, prefetched    ``max(copy(E), a c_gpu(n))``: the whole layer is copied while
                          the previous layer computes (double-buffered)
gpu_stream, after routing ``copy(a) + a c_gpu(n)``: only the selected experts, nothing
                          to overlap with (always so for the first MoE layer of a pass)
split, ``g`` on the GPU   ``max((E - g) p c_cpu(n), gpu)`` with ``gpu = max(copy(g),
                          g p c_gpu(n))`` prefetched, ``copy(g p) + g p c_gpu(n)`` for
                          the first MoE layer (only its selected experts are copied);
                          ``g`` in ``1..E-1`` minimising it, so that the CPU and the GPU
                          finish together
========================  =============================================================

:func:`choose` applies the configured policy: ``cpu`` always runs on the CPU; every policy
runs a batch of one token (decode) on the CPU; ``gpu_stream`` streams with the cheaper copy
mode; ``split`` splits with the best ``g``; ``auto`` takes the cheapest of the three (ties:
cpu, then gpu_stream, then split) and, without a GPU, ``cpu``. The model ignores non-expert
work (the same for every policy) and assumes uniform routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError, EngineUnavailable

POLICIES = ("cpu", "gpu_stream", "split", "auto")
TIE_ORDER = ("cpu", "gpu_stream", "split")  # among equal predictions, the simpler policy


@dataclass(frozen=True)
class Calibration:
    """What the cost model knows about one MoE layer shape on this machine.

    ``cpu_seconds``/``gpu_seconds``: ``(tokens, seconds)`` per layer under uniform random
    routing (CPU backend; GPU compute with the weights resident); ``h2d_bytes_per_s``: pinned
    host-to-device bandwidth (None without a GPU); ``expert_bytes``: bytes one expert's
    weights take on the wire (quantized data + scales).
    """

    num_experts: int
    top_k: int
    expert_bytes: int
    h2d_bytes_per_s: float | None
    cpu_seconds: tuple[tuple[int, float], ...] = ()
    gpu_seconds: tuple[tuple[int, float], ...] = ()
    cpu_backend: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_experts < 1 or not 1 <= self.top_k <= self.num_experts:
            raise EngineError(
                f"calibration: {self.top_k} of {self.num_experts} experts is not a routing"
            )
        if self.expert_bytes < 0:
            raise EngineError(f"calibration: negative expert bytes {self.expert_bytes}")
        for name in ("cpu_seconds", "gpu_seconds"):
            for tokens, seconds in getattr(self, name):
                if tokens < 1 or seconds < 0:
                    raise EngineError(f"calibration {name}: bad point ({tokens}, {seconds})")

    @property
    def gpu(self) -> bool:
        """Whether a GPU can stream experts (a measured H2D bandwidth)."""
        return bool(self.h2d_bytes_per_s)

    @property
    def layer_bytes(self) -> int:
        return self.expert_bytes * self.num_experts

    def as_dict(self) -> dict[str, Any]:
        """Plain values for provenance."""
        bw = self.h2d_bytes_per_s
        return {
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "expert_bytes": self.expert_bytes,
            "layer_bytes": self.layer_bytes,
            "h2d_gb_per_s": None if bw is None else round(bw / 1e9, 3),
            "pcie_floor_ms_per_layer": (None if not bw else round(1e3 * self.layer_bytes / bw, 3)),
            "cpu_ms_per_layer": {t: round(1e3 * s, 3) for t, s in self.cpu_seconds},
            "gpu_compute_ms_per_layer": {t: round(1e3 * s, 3) for t, s in self.gpu_seconds},
            "cpu_backend": self.cpu_backend,
            **self.notes,
        }


@dataclass(frozen=True)
class Choice:
    """Where one MoE layer's routed experts run for one batch.

    ``gpu_experts``: how many experts' weights the GPU gets (0 for cpu, all for
    gpu_stream); ``prefetch``: copied before the layer's routing, overlapping earlier work;
    ``seconds``: the predicted time (None when not modelled); ``requested``: the policy
    asked for (``auto`` labels its pick ``auto->...``).
    """

    policy: str
    gpu_experts: int
    num_experts: int
    prefetch: bool = False
    seconds: float | None = None
    requested: str = "cpu"

    @property
    def cpu_experts(self) -> int:
        return self.num_experts - self.gpu_experts

    def label(self) -> str:
        """``cpu``, ``gpu_stream`` or ``split:<cpu experts>/<gpu experts>``, prefixed
        ``auto->`` when auto picked it."""
        base = self.policy
        if self.policy == "split":
            base = f"split:{self.cpu_experts}/{self.gpu_experts}"
        return f"auto->{base}" if self.requested == "auto" else base


def expected_active(tokens: int, num_experts: int, top_k: int) -> float:
    """Expected distinct experts selected by ``tokens`` tokens routed uniformly at random."""
    if tokens <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def per_expert_curve(
    points: Sequence[tuple[int, float]], num_experts: int, top_k: int
) -> list[tuple[float, float]]:
    """``(tokens per active expert, seconds per active expert)`` from per-layer points."""
    curve = []
    for tokens, seconds in sorted(points):
        active = expected_active(tokens, num_experts, top_k)
        curve.append((tokens * top_k / active, seconds / active))
    return curve


def interpolate(curve: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear ``curve`` at ``x``: held below the first point, extended along the
    last segment above the last (never below the last value)."""
    if not curve:
        raise EngineError("the cost model has no measurements for this curve")
    if len(curve) == 1 or x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = curve[-2], curve[-1]
    slope = 0.0 if x1 == x0 else (y1 - y0) / (x1 - x0)
    return max(y1, y1 + slope * (x - x1))


class CostModel:
    """Predicted seconds per MoE layer of each policy (see the module docstring)."""

    def __init__(self, cal: Calibration) -> None:
        self.cal = cal
        e, k = cal.num_experts, cal.top_k
        self._cpu = per_expert_curve(cal.cpu_seconds, e, k)
        self._gpu = per_expert_curve(cal.gpu_seconds, e, k)

    def _shape(self, tokens: int) -> tuple[float, float, float]:
        e, k = self.cal.num_experts, self.cal.top_k
        active = expected_active(tokens, e, k)
        return active, tokens * k / active, active / e

    def copy(self, experts: float) -> float:
        """Seconds to copy ``experts`` experts' weights to the GPU."""
        bw = self.cal.h2d_bytes_per_s
        if not bw:
            raise EngineUnavailable("streaming experts needs a GPU (no H2D bandwidth measured)")
        return experts * self.cal.expert_bytes / bw

    def gpu_compute(self, tokens: int, experts: float) -> float:
        """GPU seconds for ``experts`` of the layer's experts (each active with p = a/E)."""
        if not self._gpu:
            return 0.0  # not measured: streaming is bounded by the copy
        _, n, p = self._shape(tokens)
        return experts * p * interpolate(self._gpu, n)

    def cpu(self, tokens: int, experts: float | None = None) -> float:
        """CPU backend seconds for ``experts`` of the layer's experts (all when None)."""
        _, n, p = self._shape(tokens)
        e = self.cal.num_experts if experts is None else experts
        return e * p * interpolate(self._cpu, n)

    def stream(self, tokens: int, prefetch: bool) -> float:
        """gpu_stream: the whole layer prefetched, or the selected experts after routing."""
        e = self.cal.num_experts
        if prefetch:
            return max(self.copy(e), self.gpu_compute(tokens, e))
        active, _, _ = self._shape(tokens)
        return self.copy(active) + self.gpu_compute(tokens, e)

    def split(self, tokens: int, gpu_experts: int, prefetch: bool) -> float:
        """split with ``gpu_experts`` experts' weights on the GPU, the rest on the CPU."""
        g = gpu_experts
        _, _, p = self._shape(tokens)
        compute = self.gpu_compute(tokens, g)
        # prefetched: all g experts copied before routing, overlapping the previous layer;
        # else copied after routing: only the selected ones among them, not overlapped
        gpu = max(self.copy(g), compute) if prefetch else self.copy(g * p) + compute
        return max(self.cpu(tokens, self.cal.num_experts - g), gpu)

    def best_split(self, tokens: int, prefetch: bool) -> tuple[int, float]:
        """``(g, seconds)`` of the cheapest split with ``g`` in ``1..E-1`` (fewest GPU
        experts among equals)."""
        e = self.cal.num_experts
        if e < 2:
            raise EngineError("a layer with one expert cannot be split")
        return min(
            ((g, self.split(tokens, g, prefetch)) for g in range(1, e)),
            key=lambda gs: (gs[1], gs[0]),
        )


def choose(requested: str, tokens: int, cal: Calibration | None, *, first: bool) -> Choice:
    """The placement of one MoE layer for a batch of ``tokens`` tokens.

    ``first``: the layer is the first MoE layer of its forward pass, so its weights cannot
    have been copied before its routing. Raises EngineUnavailable for gpu_stream/split
    without a GPU (``cal`` None or without bandwidth) and EngineError for an unknown policy.
    """
    if requested not in POLICIES:
        raise EngineError(f"prefill placement must be one of {list(POLICIES)}, got {requested!r}")
    e = cal.num_experts if cal is not None else 0
    if requested == "cpu" or tokens <= 1:
        return Choice("cpu", 0, e, requested=requested)
    if cal is None or not cal.gpu:
        if requested == "auto":
            return Choice("cpu", 0, e, requested=requested)
        raise EngineUnavailable(f"prefill placement {requested!r} needs a CUDA GPU")
    model = CostModel(cal)
    prefetch = not first
    modes = [False, True] if prefetch else [False]
    stream_prefetch, stream_s = min(
        ((m, model.stream(tokens, m)) for m in modes), key=lambda ms: (ms[1], ms[0])
    )
    stream = Choice("gpu_stream", e, e, stream_prefetch, stream_s, requested)
    if requested == "gpu_stream":
        return stream
    g, split_s = model.best_split(tokens, prefetch)
    split = Choice("split", g, e, prefetch, split_s, requested)
    if requested == "split":
        return split
    cpu = Choice("cpu", 0, e, False, model.cpu(tokens), requested)
    options = (cpu, stream, split)
    return min(options, key=lambda c: (c.seconds, TIE_ORDER.index(c.policy)))

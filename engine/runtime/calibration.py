"""Load-time measurements for the placement cost model (engine.runtime.cost_model).

- pinned host-to-device bandwidth: a copy of a few hundred MB from page-locked host memory
  (:func:`measure_h2d`);
- the CPU expert backend the engine is configured with, timed on one MoE layer with tokens
  routed uniformly at random at a few batch sizes (:func:`time_cpu_backend`): its time per
  layer as a function of tokens per expert;
- the GPU streamer's compute on the same layer with its weights already on the device
  (:func:`time_stream_compute`).

Each point is the fastest of a few runs after a warm-up (the first call of a backend pays
for allocations and thread start-up). Everything here runs before the first prefill.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from engine.experts.backend import ExpertBackend
from engine.experts.gpu_stream import GpuExpertStreamer
from engine.runtime.cost_model import Calibration

CALIBRATION_TOKENS = (1, 32, 256, 2048, 8192)
H2D_PROBE_BYTES = 256 << 20
REPEATS_SMALL = 3  # runs per point at up to 256 tokens (the fastest is kept)
REPEATS_LARGE = 1  # runs per point above that (long; their noise is relatively small)


def random_routing(
    tokens: int, num_experts: int, top_k: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(expert_ids int64 [T, k], weights float32 [T, k])``: k distinct experts per token,
    uniformly at random, equal weights 1/k."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.rand(tokens, num_experts, generator=gen).topk(top_k, dim=1).indices
    weights = torch.full((tokens, top_k), 1.0 / top_k, dtype=torch.float32)
    return ids.contiguous(), weights


def _fastest(run: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _no_sync() -> None:
    return None


def measure_h2d(
    device: torch.device, nbytes: int = H2D_PROBE_BYTES, repeats: int = 3
) -> float | None:
    """Pinned host-to-device bytes per second (the fastest of ``repeats`` copies after a
    warm-up); None on a non-CUDA device."""
    if device.type != "cuda":
        return None
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    stream = torch.cuda.Stream(device)

    def copy() -> None:
        dst.copy_(src, non_blocking=True)

    try:
        with torch.cuda.stream(stream):
            copy()  # warm-up
            seconds = _fastest(copy, repeats, stream.synchronize)
    finally:
        stream.synchronize()
    return nbytes / seconds


def _repeats(tokens: int) -> int:
    return REPEATS_SMALL if tokens <= 256 else REPEATS_LARGE


@torch.inference_mode()
def time_cpu_backend(
    backend: ExpertBackend,
    layer_idx: int,
    hidden_size: int,
    top_k: int,
    tokens: Sequence[int],
    dtype: torch.dtype = torch.bfloat16,
) -> tuple[tuple[int, float], ...]:
    """``(tokens, seconds)`` of ``backend.forward`` on layer ``layer_idx`` (random routing)."""
    e = backend.num_experts(layer_idx)
    gen = torch.Generator().manual_seed(1)
    points = []
    for n, t in enumerate(sorted(set(tokens))):
        hidden = torch.randn(t, hidden_size, generator=gen).to(dtype)
        ids, weights = random_routing(t, e, top_k, seed=n)
        out = torch.empty_like(hidden)

        def run(h: torch.Tensor = hidden, i: torch.Tensor = ids, w: torch.Tensor = weights,
                o: torch.Tensor = out) -> None:  # fmt: skip
            backend.forward(layer_idx, h, i, w, o)

        if n == 0:
            run()  # warm-up: thread pool start, first allocations
        points.append((t, _fastest(run, _repeats(t), _no_sync)))
    return tuple(points)


@torch.inference_mode()
def time_stream_compute(
    streamer: GpuExpertStreamer,
    layer_idx: int,
    hidden_size: int,
    top_k: int,
    tokens: Sequence[int],
    dtype: torch.dtype = torch.bfloat16,
) -> tuple[tuple[int, float], ...]:
    """``(tokens, seconds)`` of the streamer's compute on layer ``layer_idx`` with all its
    experts already staged on the device (random routing)."""
    device = streamer.device
    e = streamer.num_experts(layer_idx)
    streamer.stage(layer_idx)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else _no_sync
    gen = torch.Generator().manual_seed(2)
    points = []
    for n, t in enumerate(sorted(set(tokens))):
        hidden = torch.randn(t, hidden_size, generator=gen).to(device, dtype)
        ids, weights = (x.to(device) for x in random_routing(t, e, top_k, seed=100 + n))

        def run(h: torch.Tensor = hidden, i: torch.Tensor = ids, w: torch.Tensor = weights) -> None:
            streamer.compute(layer_idx, h, i, w).wait()

        # Warm-up at every size, not only the first: each size brings new matmul shapes
        # (one per expert's token count), and the GPU BLAS library picks a kernel per new
        # shape on first use. Without it the GPU host's calibration read ~65 ms per layer
        # at 2048-8192 tokens (as long as the whole PCIe copy) while a streamed layer,
        # copy and compute together, took 71 ms at 2048, so auto picked split where
        # streaming alone was faster. GPU runs are short: keep the fastest of REPEATS_SMALL.
        run()
        points.append((t, _fastest(run, REPEATS_SMALL, sync)))
    streamer.new_pass()
    return tuple(points)


def calibrate(
    *,
    backend: ExpertBackend,
    streamer: GpuExpertStreamer,
    layer_idx: int,
    hidden_size: int,
    top_k: int,
    max_tokens: int,
    dtype: torch.dtype,
    cpu: bool,
    tokens: Sequence[int] = CALIBRATION_TOKENS,
) -> Calibration:
    """The cost model's inputs for this engine: H2D bandwidth and the GPU compute always,
    the CPU backend's times when ``cpu`` (needed by split and auto). Token counts above
    ``max_tokens`` (the prefill chunk) are left out."""
    points = [t for t in tokens if t <= max_tokens] or [min(tokens)]
    t0 = time.perf_counter()
    bandwidth = measure_h2d(streamer.device)
    gpu = time_stream_compute(streamer, layer_idx, hidden_size, top_k, points, dtype)
    cpu_points = (
        time_cpu_backend(backend, layer_idx, hidden_size, top_k, points, dtype) if cpu else ()
    )
    return Calibration(
        num_experts=streamer.num_experts(layer_idx),
        top_k=top_k,
        expert_bytes=streamer.expert_bytes,
        h2d_bytes_per_s=bandwidth,
        cpu_seconds=cpu_points,
        gpu_seconds=gpu,
        cpu_backend=_backend_name(backend),
        notes={
            "calibration_layer": layer_idx,
            "calibration_seconds": round(time.perf_counter() - t0, 3),
            "routing": "uniform random, equal weights",
        },
    )


def _backend_name(backend: ExpertBackend) -> str:
    """``reference`` or ``kernel (<ISA used for prefill>)``, from the backend's own facts."""
    facts = backend.describe()
    name = str(facts.get("expert_backend", backend.name))
    isa = facts.get("kernel_method_prefill")
    return f"{name} ({isa})" if isa else name

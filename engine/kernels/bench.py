"""Micro-benchmark of the CPU MoE kernels (and the PyTorch loop / kt-kernel on the same inputs).

Library functions (the ``hmoe bench-moe`` CLI and the results table build on them):
:func:`machine_info`, :func:`measure_bandwidth`, :func:`measure_peaks`, :func:`bench_kernel`,
:func:`bench_torch_loop`, :func:`bench_kt_kernel`, :func:`run` (a whole matrix) and
:func:`format_table`. ``python -m engine.kernels.bench [--quick|--full] [--out rows.json]``
prints a table (progress on stderr) and writes ``{"machine": ..., "rows": [...]}``.

Honest decode numbers: every trial draws new random experts, and calls rotate over enough
packed layers that the weights exceed the last-level cache several times, so weights come from
DRAM. Bytes read = the distinct selected experts' packed bytes; FLOPs = 2 * 3 * H * I * T * k.
Both are reported as fractions of the measured read bandwidth and register-only peak (AMX
BF16 or INT8 when present, else AVX-512 BF16), plus the ratio to the time it takes to read the
selected experts once at the measured bandwidth ("x read floor").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine import kernels


@dataclass(frozen=True)
class Shape:
    name: str
    experts: int
    hidden: int
    intermediate: int
    top_k: int

    def expert_params(self) -> int:
        return 3 * self.hidden * self.intermediate


SHAPES = {
    "qwen2-57b": Shape("qwen2-57b-a14b", 64, 3584, 2560, 8),
    "ds3": Shape("deepseek-v3", 256, 7168, 2048, 8),
    # small shapes for sanity runs on small machines
    "mini": Shape("mini", 16, 1024, 512, 4),
}
T_VALUES = (1, 32, 512, 2048, 8192)
# kt-kernel aborts the whole process (C++ abort, no exception) on small shapes: only these.
KT_SHAPES = ("qwen2-57b", "ds3")


@dataclass
class BenchConfig:
    shapes: list[str] = field(default_factory=lambda: ["qwen2-57b"])
    t_values: list[int] = field(default_factory=lambda: list(T_VALUES))
    shape_t_values: dict[str, list[int]] = field(default_factory=dict)  # per-shape override
    precisions: list[str] = field(default_factory=lambda: ["bf16", "int8", "int4"])
    methods: list[str] = field(default_factory=lambda: ["avx512", "amx", "auto"])
    schedulers: list[str] = field(default_factory=lambda: ["static"])
    routings: list[float] = field(default_factory=lambda: [0.0])  # 0 = uniform, else Zipf s
    threads: int | None = None
    numa_nodes: int = 1
    group_size: int = 32
    trials: int = 5
    warmup: int = 2
    decode_trials: int = 30  # T < 32: many cheap trials
    amx_threshold: int = 32
    int8_w8a8: list[bool] = field(default_factory=lambda: [False])
    torch_loop: bool = True
    torch_t_values: list[int] | None = None  # None: same as t_values
    kt: bool = True
    scheduler_study: bool = True  # static vs dynamic x uniform vs Zipf on one point
    study_t: int = 2048
    study_skew: float = 1.2
    llc_multiple: float = 4.0  # decode: packed bytes rotated >= this x LLC
    max_gb: float | None = None  # memory budget for packed layers (default: 60% of available)
    bw_bytes: int | None = None  # read-bandwidth buffer (default: max(1 GiB, 8 x LLC))
    peak_seconds: float = 0.5
    seed: int = 0
    rows_jsonl: str | None = None  # also append every row here as it is measured


def quick_config() -> BenchConfig:
    """The default matrix: about 5 minutes on a 16-core AMX host."""
    return BenchConfig(
        shapes=["qwen2-57b", "ds3"],
        t_values=[1, 32, 512, 8192],
        shape_t_values={"ds3": [1, 8192]},
        trials=3,
        warmup=1,
        decode_trials=20,
        torch_t_values=[1, 512, 8192],
        int8_w8a8=[False, True],
    )


def full_config() -> BenchConfig:
    return BenchConfig(
        shapes=["qwen2-57b", "ds3"],
        t_values=list(T_VALUES),
        schedulers=["static", "dynamic"],
        routings=[0.0, 1.2],
        trials=5,
        warmup=2,
        int8_w8a8=[False, True],
    )


# ---------------------------------------------------------------- machine


def llc_bytes() -> int:
    """Size of the largest CPU cache level (sysfs), 32 MiB if unknown."""
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in base.glob("index*"):
        try:
            size = (idx / "size").read_text().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
            val = int(size[:-1]) * mult if size[-1] in "KMG" else int(size)
            best = max(best, val)
        except (OSError, ValueError):
            continue
    return best or (32 << 20)


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU model, usable CPUs, threads used, ISA features, NUMA nodes, LLC size, memory."""
    info: dict[str, Any] = {
        "cpu_model": kernels.cpu_model(),
        "usable_cpus": len(kernels.usable_cpus()),
        "threads": threads or len(kernels.usable_cpus()),
        "features": kernels.cpu_features(),
        "llc_bytes": llc_bytes(),
        "kernels_available": kernels.available(),
        "kernels_build_error": kernels.build_error(),
        "torch": torch.__version__,
    }
    if kernels.available():
        from engine import _hmoe_cpu as ext

        info["numa_nodes"] = int(ext.numa_node_count())
        info["libnuma"] = bool(ext.libnuma_available())
        info["build"] = dict(ext.build_info)
        info["prefetch_bytes"] = int(ext.prefetch_distance())
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    return info


def measure_bandwidth(engine: kernels.MoEEngine, nbytes: int | None = None, reps: int = 5) -> float:
    """Multi-threaded read (sum) bandwidth in GB/s over a buffer >> LLC (best of ``reps``)."""
    if nbytes is None:
        nbytes = max(1 << 30, 8 * llc_bytes())
    return engine.bench_read_gbs(nbytes, reps)


def measure_peaks(engine: kernels.MoEEngine, seconds: float = 0.5) -> dict[str, float | None]:
    """Register-only peaks in TFLOPS/TOPS: amx_bf16, amx_int8, avx512_bf16 (None: absent)."""
    peaks: dict[str, float | None] = {}
    for kind in ("amx_bf16", "amx_int8", "avx512_bf16"):
        try:
            peaks[kind] = engine.bench_peak(kind, seconds) / 1e12
        except Exception:  # noqa: BLE001 - an ISA this CPU lacks
            peaks[kind] = None
    return peaks


# ---------------------------------------------------------------- inputs


def random_weights(shape: Shape, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bf16 gate [E, I, H], up [E, I, H], down [E, H, I] (values ~ N(0, 0.02)).

    Filled from a 16M-value random pool at random offsets: values do not affect the speed, and
    this is ~memcpy speed instead of minutes of torch.randn for a DeepSeek-V3 layer.
    """
    gen = torch.Generator().manual_seed(seed)
    pool = (torch.randn(1 << 24, generator=gen) * 0.02).to(torch.bfloat16)
    e, h, i = shape.experts, shape.hidden, shape.intermediate

    def fill(t: torch.Tensor) -> torch.Tensor:
        flat = t.view(-1)
        n = flat.numel()
        pos = 0
        while pos < n:
            off = int(torch.randint(0, pool.numel() // 2, (1,), generator=gen))
            take = min(n - pos, pool.numel() - off)
            flat[pos : pos + take].copy_(pool[off : off + take])
            pos += take
        return t

    gate = fill(torch.empty(e, i, h, dtype=torch.bfloat16))
    up = fill(torch.empty(e, i, h, dtype=torch.bfloat16))
    down = fill(torch.empty(e, h, i, dtype=torch.bfloat16))
    return gate, up, down


def make_routing(
    t: int, experts: int, k: int, skew: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [T, k] int32 (distinct per token) and weights [T, k] float32.

    skew 0: uniform; skew s > 0: expert popularity ~ 1 / rank^s over a random expert order.
    """
    if skew <= 0:
        ids = torch.rand(t, experts, generator=gen).topk(k, dim=1).indices
    else:
        ranks = torch.randperm(experts, generator=gen).double() + 1.0
        probs = ranks.pow(-skew)
        ids = torch.multinomial(probs.expand(t, experts), k, replacement=False, generator=gen)
    w = torch.rand(t, k, generator=gen)
    w = w / w.sum(dim=1, keepdim=True)
    return ids.to(torch.int32).contiguous(), w.contiguous()


def _stats(times: list[float]) -> dict[str, float]:
    ms = [x * 1e3 for x in times]
    return {
        "ms_mean": statistics.fmean(ms),
        "ms_sd": statistics.stdev(ms) if len(ms) > 1 else 0.0,
        "ms_min": min(ms),
        "trials": len(ms),
    }


def _derived(
    row: dict[str, Any],
    shape: Shape,
    t: int,
    bytes_read: float,
    bw_gbs: float | None,
    peak_tflops: float | None,
) -> dict[str, Any]:
    sec = row["ms_mean"] / 1e3
    flops = 2.0 * shape.expert_params() * t * shape.top_k
    row["bytes_read"] = bytes_read
    row["gbs"] = bytes_read / sec / 1e9
    row["tflops"] = flops / sec / 1e12
    row["bw_fraction"] = row["gbs"] / bw_gbs if bw_gbs else None
    row["peak_fraction"] = row["tflops"] / peak_tflops if peak_tflops else None
    row["x_read_floor"] = sec / (bytes_read / (bw_gbs * 1e9)) if bw_gbs else None
    return row


def _peak_for(precision: str, isa: str, w8a8: bool, peaks: dict[str, float | None]) -> float | None:
    if "amx" in isa:
        key = "amx_int8" if precision == "int8" and w8a8 else "amx_bf16"
        return peaks.get(key)
    return peaks.get("avx512_bf16")


# ---------------------------------------------------------------- one measurement


def bench_kernel(
    engine: kernels.MoEEngine,
    layers: list[int],
    shape: Shape,
    precision: str,
    t: int,
    *,
    method: str,
    scheduler: str,
    skew: float,
    trials: int,
    warmup: int,
    bw_gbs: float | None,
    peaks: dict[str, float | None],
    amx_threshold: int = 32,
    int8_w8a8: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Time one (method, scheduler, routing, T) point; calls rotate over ``layers``."""
    engine.set_policy(
        method=method, scheduler=scheduler, amx_threshold=amx_threshold, int8_w8a8=int8_w8a8
    )
    gen = torch.Generator().manual_seed(seed + 7919 * t)
    x = (torch.randn(t, shape.hidden, generator=gen)).to(torch.bfloat16)
    out = torch.empty_like(x)
    bytes_per_expert = engine.packed_bytes(layers[0]) / shape.experts
    times: list[float] = []
    read: list[float] = []
    isa_seen: set[str] = set()
    for n in range(warmup + trials):
        ids, w = make_routing(t, shape.experts, shape.top_k, skew, gen)
        layer = layers[n % len(layers)]
        t0 = time.perf_counter()
        engine.forward(layer, x, ids, w, out)
        dt = time.perf_counter() - t0
        if n >= warmup:
            times.append(dt)
            read.append(int(ids.unique().numel()) * bytes_per_expert)
            st = engine.stats()
            for name in ("amx", "avx512", "portable"):
                if st[f"last_{name}_experts"]:
                    isa_seen.add(name)
    row = {
        "kind": "kernel",
        "shape": shape.name,
        "precision": precision,
        "method": method,
        "isa": "+".join(sorted(isa_seen)),
        "scheduler": scheduler,
        "routing": "uniform" if skew <= 0 else f"zipf{skew:g}",
        "T": t,
        "k": shape.top_k,
        "threads": engine.info()["threads"],
        "numa_nodes": engine.info()["numa_shards"],
        "int8_w8a8": bool(int8_w8a8 and precision == "int8"),
        "layers_rotated": len(layers),
        **_stats(times),
    }
    peak = _peak_for(precision, row["isa"], int8_w8a8, peaks)
    return _derived(row, shape, t, statistics.fmean(read), bw_gbs, peak)


def torch_moe(
    x: torch.Tensor,
    ids: torch.Tensor,
    w: torch.Tensor,
    gate: torch.Tensor,
    up: torch.Tensor,
    down: torch.Tensor,
) -> torch.Tensor:
    """The PyTorch per-expert loop (like engine/experts/reference.py): gather, F.linear, add."""
    t, k = ids.shape
    flat = ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=gate.shape[0]).tolist()
    tokens = torch.arange(t).repeat_interleave(k)[order]
    sw = w.reshape(-1)[order]
    out = torch.zeros(t, x.shape[1], dtype=torch.float32)
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        rows = tokens[start : start + c]
        xe = x[rows]
        a = F.silu(F.linear(xe, gate[e])) * F.linear(xe, up[e])
        y = F.linear(a, down[e])
        out.index_add_(0, rows, y.float() * sw[start : start + c, None])
        start += c
    return out.to(x.dtype)


def bench_torch_loop(
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    shape: Shape,
    t: int,
    *,
    threads: int,
    trials: int,
    warmup: int,
    bw_gbs: float | None,
    peaks: dict[str, float | None],
    skew: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """The PyTorch loop on bf16 weights with torch.set_num_threads(threads)."""
    gate, up, down = weights
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(seed + 7919 * t)
        x = torch.randn(t, shape.hidden, generator=gen).to(torch.bfloat16)
        times, read = [], []
        bytes_per_expert = shape.expert_params() * 2
        for n in range(warmup + trials):
            ids, w = make_routing(t, shape.experts, shape.top_k, skew, gen)
            t0 = time.perf_counter()
            torch_moe(x, ids, w, gate, up, down)
            dt = time.perf_counter() - t0
            if n >= warmup:
                times.append(dt)
                read.append(int(ids.unique().numel()) * bytes_per_expert)
    finally:
        torch.set_num_threads(old)
    row = {
        "kind": "torch-loop",
        "shape": shape.name,
        "precision": "bf16",
        "method": "torch",
        "isa": "torch",
        "scheduler": "-",
        "routing": "uniform" if skew <= 0 else f"zipf{skew:g}",
        "T": t,
        "k": shape.top_k,
        "threads": threads,
        "numa_nodes": 1,
        "int8_w8a8": False,
        "layers_rotated": 1,
        **_stats(times),
    }
    return _derived(row, shape, t, statistics.fmean(read), bw_gbs, peaks.get("amx_bf16"))


# ---------------------------------------------------------------- kt-kernel


def _kt_module() -> Any:
    try:
        from kt_kernel import kt_kernel_ext  # type: ignore[import-not-found]

        return kt_kernel_ext
    except ImportError:
        import kt_kernel_ext  # type: ignore[import-not-found]

        return kt_kernel_ext


def kt_available() -> str | None:
    """None when kt-kernel imports, else why not."""
    try:
        _kt_module()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


class KtMoE:
    """kt-kernel's AMX MoE of one layer through its CPUInfer task API (defensive wrapper)."""

    CLASSES = {"bf16": "AMXBF16_MOE", "int8": "AMXInt8_MOE", "int4": "AMXInt4_MOE"}

    def __init__(
        self,
        weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        shape: Shape,
        precision: str,
        threads: int,
        max_len: int,
    ) -> None:
        ext = _kt_module()
        self.ext = ext
        self.cpu = ext.CPUInfer(threads)
        self.weights = weights  # kept alive: some versions read them lazily
        gate, up, down = weights
        try:
            cfg = ext.moe.MOEConfig(shape.experts, shape.top_k, shape.hidden, shape.intermediate, 0)
        except TypeError:
            cfg = ext.moe.MOEConfig(shape.experts, shape.top_k, shape.hidden, shape.intermediate)
        cfg.max_len = max_len
        cfg.gate_proj = gate.data_ptr()
        cfg.up_proj = up.data_ptr()
        cfg.down_proj = down.data_ptr()
        for name in ("gate_scale", "up_scale", "down_scale"):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(cfg, name, 0)
        cfg.pool = self.cpu.backend_
        cls_name = self.CLASSES[precision]
        self.class_name = cls_name
        self.moe = getattr(ext.moe, cls_name)(cfg)
        self.p2l = torch.arange(shape.experts, dtype=torch.int64)
        try:
            self.cpu.submit(self.moe.load_weights_task(self.p2l.data_ptr()))
        except TypeError:
            self.cpu.submit(self.moe.load_weights_task())
        self.cpu.sync()
        with contextlib.suppress(AttributeError, TypeError, RuntimeError):
            self.cpu.submit(self.moe.warm_up_task())
            self.cpu.sync()
        self.bsz = torch.zeros(1, dtype=torch.int64)

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, out: torch.Tensor
    ) -> None:
        self.bsz[0] = x.shape[0]
        ids64 = ids.to(torch.int64).contiguous()
        self.cpu.submit(
            self.moe.forward_task(
                self.bsz.data_ptr(),
                ids.shape[1],
                ids64.data_ptr(),
                w.data_ptr(),
                x.data_ptr(),
                out.data_ptr(),
                False,
            )
        )
        self.cpu.sync()


def bench_kt_kernel(
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    shape: Shape,
    precision: str,
    t_values: Iterable[int],
    *,
    threads: int,
    trials: int,
    warmup: int,
    decode_trials: int,
    bw_gbs: float | None,
    peaks: dict[str, float | None],
    seed: int = 0,
) -> list[dict[str, Any]]:
    """kt-kernel's AMX MoE on the same weights; any failure becomes a row with "error"."""
    base = {
        "kind": "kt-kernel",
        "shape": shape.name,
        "precision": precision,
        "method": "kt-amx",
        "scheduler": "-",
        "routing": "uniform",
        "k": shape.top_k,
        "threads": threads,
        "numa_nodes": 1,
        "int8_w8a8": precision == "int8",
        "layers_rotated": 1,
    }
    t_values = list(t_values)
    try:
        kt = KtMoE(weights, shape, precision, threads, max(t_values))
    except Exception as exc:  # noqa: BLE001
        return [{**base, "T": t, "error": f"{type(exc).__name__}: {exc}"} for t in t_values]
    rows = []
    for t in t_values:
        try:
            gen = torch.Generator().manual_seed(seed + 7919 * t)
            x = torch.randn(t, shape.hidden, generator=gen).to(torch.bfloat16)
            out = torch.empty_like(x)
            n_trials = decode_trials if t < 32 else trials
            times, read = [], []
            bytes_per_expert = (
                shape.expert_params() * {"bf16": 2, "int8": 1, "int4": 0.5}[precision]
            )
            for n in range(warmup + n_trials):
                ids, w = make_routing(t, shape.experts, shape.top_k, 0.0, gen)
                t0 = time.perf_counter()
                kt.forward(x, ids, w, out)
                dt = time.perf_counter() - t0
                if n >= warmup:
                    times.append(dt)
                    read.append(int(ids.unique().numel()) * bytes_per_expert)
            row = {**base, "T": t, "isa": f"kt:{kt.class_name}", **_stats(times)}
            peak = peaks.get("amx_int8" if precision == "int8" else "amx_bf16")
            rows.append(_derived(row, shape, t, statistics.fmean(read), bw_gbs, peak))
        except Exception as exc:  # noqa: BLE001
            rows.append({**base, "T": t, "error": f"{type(exc).__name__}: {exc}"})
    del kt
    return rows


# ---------------------------------------------------------------- the matrix


def _available_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().available / 1e9
    except ImportError:  # pragma: no cover
        return 16.0


def _method_ok(method: str, precision: str, w8a8: bool) -> str:
    return kernels.missing_for(method, precision, w8a8)


class _Rows(list):
    """A list of rows that also appends each row to a JSON-lines file (so a run cut short by
    a time limit keeps what it measured)."""

    def __init__(self, path: str | None) -> None:
        super().__init__()
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def append(self, row: dict[str, Any]) -> None:  # type: ignore[override]
        super().append(row)
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row, default=str) + "\n")


def run(
    config: BenchConfig, progress: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the matrix of ``config``; returns (machine info + measured roofs, rows)."""
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            progress(f"[{time.perf_counter() - t_start:7.1f}s] {msg}")

    if not kernels.available():
        raise RuntimeError(f"kernel extension unavailable: {kernels.build_error()}")
    threads = config.threads or len(kernels.usable_cpus())
    machine = machine_info(threads)
    probe = kernels.MoEEngine(threads=threads, method="auto")
    say(f"machine: {machine['cpu_model']}, {threads} threads")
    bw = measure_bandwidth(probe, config.bw_bytes)
    peaks = measure_peaks(probe, config.peak_seconds)
    probe.close()
    machine["read_gbs"] = bw
    machine["peaks_tflops"] = peaks
    say(f"read bandwidth {bw:.1f} GB/s, peaks {peaks}")
    rows: list[dict[str, Any]] = _Rows(config.rows_jsonl)
    llc = machine["llc_bytes"]
    budget = config.max_gb if config.max_gb is not None else 0.6 * _available_gb()

    for shape_key in config.shapes:
        shape = SHAPES[shape_key]
        t_values = config.shape_t_values.get(shape_key, config.t_values)
        torch_t = [t for t in (config.torch_t_values or t_values) if t in t_values] or t_values
        say(f"{shape.name}: generating bf16 weights")
        weights = random_weights(shape, config.seed)
        src_gb = sum(w.numel() * 2 for w in weights) / 1e9
        if config.torch_loop:
            for t in torch_t:
                try:
                    row = bench_torch_loop(
                        weights,
                        shape,
                        t,
                        threads=threads,
                        trials=config.decode_trials if t < 32 else config.trials,
                        warmup=config.warmup,
                        bw_gbs=bw,
                        peaks=peaks,
                        seed=config.seed,
                    )
                except Exception as exc:  # noqa: BLE001
                    row = {"kind": "torch-loop", "shape": shape.name, "T": t, "error": str(exc)}
                rows.append(row)
                say(_line(row))
        for precision in config.precisions:
            bytes_per_layer = _packed_bytes_estimate(shape, precision, config.group_size)
            n_layers = max(1, math.ceil(config.llc_multiple * llc / bytes_per_layer))
            fit = max(1, int((budget - src_gb) * 1e9 // bytes_per_layer))
            n_layers = min(n_layers, fit)
            engine = kernels.MoEEngine(threads=threads, numa_nodes=config.numa_nodes, method="auto")
            say(f"{shape.name} {precision}: packing {n_layers} layer(s)")
            try:
                for layer in range(n_layers):
                    engine.add_layer_split(layer, precision, *weights, config.group_size)
            except Exception as exc:  # noqa: BLE001
                rows.append(
                    {
                        "kind": "kernel",
                        "shape": shape.name,
                        "precision": precision,
                        "error": str(exc),
                    }
                )
                engine.close()
                continue
            layers = list(range(n_layers))
            for w8a8 in config.int8_w8a8 if precision == "int8" else [False]:
                for method in config.methods:
                    miss = _method_ok(method, precision, w8a8)
                    if miss:
                        rows.append(
                            {
                                "kind": "kernel",
                                "shape": shape.name,
                                "precision": precision,
                                "method": method,
                                "int8_w8a8": w8a8,
                                "error": f"NOT RUN: needs {miss}",
                            }
                        )
                        continue
                    if w8a8 and method == "avx512":
                        continue  # the w8a8 switch only changes the AMX path
                    for scheduler in config.schedulers:
                        for skew in config.routings:
                            for t in t_values:
                                row = _safe_kernel(
                                    engine,
                                    layers,
                                    shape,
                                    precision,
                                    t,
                                    method,
                                    scheduler,
                                    skew,
                                    config,
                                    bw,
                                    peaks,
                                    w8a8,
                                )
                                rows.append(row)
                                say(_line(row))
            if config.scheduler_study and precision == "bf16":
                for scheduler in ("static", "dynamic"):
                    for skew in (0.0, config.study_skew):
                        row = _safe_kernel(
                            engine,
                            layers,
                            shape,
                            precision,
                            config.study_t,
                            "auto",
                            scheduler,
                            skew,
                            config,
                            bw,
                            peaks,
                            False,
                        )
                        row["study"] = "scheduler"
                        rows.append(row)
                        say(_line(row))
            engine.close()
            del engine
            if config.kt:
                why = kt_available() or (
                    None if shape_key in KT_SHAPES else "run only on the real model shapes"
                )
                if why:
                    rows.append(
                        {
                            "kind": "kt-kernel",
                            "shape": shape.name,
                            "precision": precision,
                            "error": f"NOT RUN: kt-kernel not importable ({why})",
                        }
                    )
                else:
                    kt_rows = bench_kt_kernel(
                        weights,
                        shape,
                        precision,
                        t_values,
                        threads=threads,
                        trials=config.trials,
                        warmup=config.warmup,
                        decode_trials=config.decode_trials,
                        bw_gbs=bw,
                        peaks=peaks,
                        seed=config.seed,
                    )
                    for row in kt_rows:
                        rows.append(row)
                        say(_line(row))
        del weights
    machine["isa_paths_ran"] = sorted(
        {r["isa"] for r in rows if r.get("kind") == "kernel" and r.get("isa")}
    )
    machine["elapsed_s"] = time.perf_counter() - t_start
    return machine, rows


def _packed_bytes_estimate(shape: Shape, precision: str, group: int) -> float:
    per = {"bf16": 2.0, "int8": 1.0 + 4.0 / shape.hidden, "int4": 0.5 + 4.0 / group}[precision]
    return shape.experts * shape.expert_params() * per


def _safe_kernel(
    engine: kernels.MoEEngine,
    layers: list[int],
    shape: Shape,
    precision: str,
    t: int,
    method: str,
    scheduler: str,
    skew: float,
    config: BenchConfig,
    bw: float,
    peaks: dict[str, float | None],
    w8a8: bool,
) -> dict[str, Any]:
    try:
        return bench_kernel(
            engine,
            layers if t < 32 else layers[:1],
            shape,
            precision,
            t,
            method=method,
            scheduler=scheduler,
            skew=skew,
            trials=config.decode_trials if t < 32 else config.trials,
            warmup=config.warmup,
            bw_gbs=bw,
            peaks=peaks,
            amx_threshold=config.amx_threshold,
            int8_w8a8=w8a8,
            seed=config.seed,
        )
    except Exception as exc:  # noqa: BLE001
        return {
            "kind": "kernel",
            "shape": shape.name,
            "precision": precision,
            "method": method,
            "scheduler": scheduler,
            "T": t,
            "error": f"{type(exc).__name__}: {exc}",
        }


# ---------------------------------------------------------------- output


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _line(row: dict[str, Any]) -> str:
    head = (
        f"{row.get('kind', '?')} {row.get('shape', '')} {row.get('precision', '')} "
        f"{row.get('method', '')}{'/w8a8' if row.get('int8_w8a8') else ''} "
        f"{row.get('scheduler', '')} {row.get('routing', '')} T={row.get('T', '')}"
    )
    if "error" in row:
        return f"{head}: {row['error']}"
    return (
        f"{head} [{row.get('isa', '')}]: {row['ms_mean']:.3f} +- {row['ms_sd']:.3f} ms, "
        f"{row['gbs']:.1f} GB/s ({_fmt(row.get('bw_fraction'), '.0%')}), "
        f"{row['tflops']:.2f} TFLOPS ({_fmt(row.get('peak_fraction'), '.0%')})"
    )


COLUMNS = [
    ("kind", "kind", "s"),
    ("shape", "shape", "s"),
    ("precision", "prec", "s"),
    ("method", "method", "s"),
    ("isa", "isa", "s"),
    ("scheduler", "sched", "s"),
    ("routing", "routing", "s"),
    ("T", "T", "d"),
    ("ms_mean", "ms", ".3f"),
    ("ms_sd", "sd", ".3f"),
    ("gbs", "GB/s", ".1f"),
    ("bw_fraction", "bw%", ".0%"),
    ("tflops", "TFLOPS", ".2f"),
    ("peak_fraction", "peak%", ".0%"),
    ("x_read_floor", "x floor", ".2f"),
]


def format_table(machine: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the rows, with the machine, roofs and the ISA paths that ran."""
    peaks = machine.get("peaks_tflops", {})
    lines = [
        f"machine: {machine.get('cpu_model')} | threads {machine.get('threads')} of "
        f"{machine.get('usable_cpus')} usable | NUMA nodes {machine.get('numa_nodes', '?')} | "
        f"LLC {machine.get('llc_bytes', 0) / 2**20:.0f} MiB",
        "features: " + ", ".join(k for k, v in machine.get("features", {}).items() if v),
        f"measured: read {_fmt(machine.get('read_gbs'), '.1f')} GB/s | AMX BF16 "
        f"{_fmt(peaks.get('amx_bf16'), '.2f')} TFLOPS | AMX INT8 "
        f"{_fmt(peaks.get('amx_int8'), '.2f')} TOPS | AVX-512 BF16 "
        f"{_fmt(peaks.get('avx512_bf16'), '.2f')} TFLOPS",
        f"ISA paths that ran: {', '.join(machine.get('isa_paths_ran', [])) or '-'}",
        "",
    ]
    table = [[title for _, title, _ in COLUMNS]]
    errors = []
    for row in rows:
        if "error" in row:
            errors.append(
                " ".join(
                    str(row[k]) for k in ("kind", "shape", "precision", "method", "T") if k in row
                )
                + ("/w8a8" if row.get("int8_w8a8") else "")
                + f": {row['error']}"
            )
            continue
        cells = []
        for key, _, spec in COLUMNS:
            v = row.get(key)
            if key == "method" and row.get("int8_w8a8"):
                v = f"{v}/w8a8"
            cells.append(_fmt(v, spec) if spec != "s" else ("-" if v is None else str(v)))
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if errors:
        lines += ["", "not run / failed:"] + [f"  {e}" for e in errors]
    return "\n".join(lines)


def _csv(value: str, cast: Callable[[str], Any]) -> list[Any]:
    return [cast(v) for v in value.split(",") if v]


def _routing(v: str) -> float:
    if v == "uniform":
        return 0.0
    if v.startswith("zipf"):
        return float(v[4:].lstrip(":") or 1.2)
    return float(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engine.kernels.bench",
        description="Micro-benchmark of the CPU MoE kernels (see the module docstring).",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="default matrix (~5 min, 16 cores)")
    mode.add_argument("--full", action="store_true", help="every shape/T/format/method/...")
    p.add_argument("--shapes", help=f"comma list of {', '.join(SHAPES)}")
    p.add_argument("--T", dest="t_values", help="comma list of token counts")
    p.add_argument("--precisions", help="comma list of bf16,int8,int4")
    p.add_argument("--methods", help="comma list of avx512,amx,auto,portable")
    p.add_argument("--portable", action="store_true", help="also time the portable method")
    p.add_argument("--schedulers", help="comma list of static,dynamic")
    p.add_argument("--routing", help="comma list of uniform,zipf1.2,...")
    p.add_argument("--threads", type=int)
    p.add_argument("--numa-nodes", type=int, default=1)
    p.add_argument("--group-size", type=int, default=32, choices=(32, 64))
    p.add_argument("--trials", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--decode-trials", type=int)
    p.add_argument("--amx-threshold", type=int)
    p.add_argument("--int8-w8a8", choices=("off", "on", "both"))
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop rows")
    p.add_argument("--no-kt", action="store_true", help="skip kt-kernel")
    p.add_argument("--no-study", action="store_true", help="skip the scheduler study rows")
    p.add_argument("--max-gb", type=float, help="memory budget for packed layers (GB)")
    p.add_argument("--bw-mb", type=int, help="read-bandwidth buffer in MiB (default >= 1024)")
    p.add_argument("--prefetch", type=int, help="AVX-512 software prefetch distance (bytes)")
    p.add_argument("--out", type=Path, help="write {machine, rows} JSON here")
    a = p.parse_args(argv)
    cfg = full_config() if a.full else quick_config()
    if a.shapes:
        cfg.shapes = _csv(a.shapes, str)
        unknown = [s for s in cfg.shapes if s not in SHAPES]
        if unknown:
            p.error(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    if a.t_values:
        cfg.t_values = _csv(a.t_values, int)
        cfg.torch_t_values = None
        cfg.shape_t_values = {}
    if a.precisions:
        cfg.precisions = _csv(a.precisions, str)
    if a.methods:
        cfg.methods = _csv(a.methods, str)
    if a.portable and "portable" not in cfg.methods:
        cfg.methods.append("portable")
    if a.schedulers:
        cfg.schedulers = _csv(a.schedulers, str)
    if a.routing:
        cfg.routings = _csv(a.routing, _routing)
    for name in ("threads", "trials", "warmup", "decode_trials", "amx_threshold", "max_gb"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    if a.bw_mb:
        cfg.bw_bytes = a.bw_mb << 20
    if a.prefetch is not None and kernels.available():
        from engine import _hmoe_cpu

        _hmoe_cpu.set_prefetch_distance(a.prefetch)
    cfg.numa_nodes = a.numa_nodes
    cfg.group_size = a.group_size
    if a.int8_w8a8:
        cfg.int8_w8a8 = {"off": [False], "on": [True], "both": [False, True]}[a.int8_w8a8]
    cfg.torch_loop = not a.no_torch
    cfg.kt = not a.no_kt
    cfg.scheduler_study = not a.no_study
    if a.out:
        cfg.rows_jsonl = str(a.out.with_suffix(".jsonl"))

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    machine, rows = run(cfg, progress)
    print(format_table(machine, rows))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine, "config": asdict(cfg), "rows": rows}
        a.out.write_text(json.dumps(payload, indent=1, default=str))
        print(f"wrote {len(rows)} rows to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())

"""Prefill placement benchmark for the GPU host: per-layer prefill time of cpu / gpu_stream /
split / auto on a synthetic Qwen2-57B-A14B layer slice, with the PCIe floor and the ideal
split from the same run, checked against issue 15's targets.

Usage (repo root, on the GPU host; build the C++ kernels first for ``--cpu-kernel auto``:
``python setup.py build_ext --inplace``):

    python tests/gpu_host/placement_bench.py --out /tmp/placement [--layers 4]
        [--tokens 32,128,512,2048,8192] [--precisions bf16,int8] [--trials 3]
        [--cpu-kernel auto] [--threads N] [--model DIR] [--cache-dir .cache]

One engine is loaded per precision (prefill_placement auto: streamer, staging buffers and
a calibrated cost model) and every policy is run on it in turn, so all policies share the
same weights, CPU backend and measured H2D bandwidth. Per prompt length and policy: one
untimed warm-up, then ``--trials`` timed prefills of random token ids (synchronised on
both sides); seconds per decoder layer = prefill seconds / layers loaded (embedding, final
norm and lm_head included: small next to a layer). Derived from the same run:

- PCIe floor = a layer's streamed expert bytes / measured pinned H2D bandwidth;
- ideal split = 1 / (1/t_cpu + 1/t_stream), from the measured cpu and gpu_stream times;
- targets: gpu_stream <= 1.10 x floor at 2048-8192 tokens; split <= 1.15 x ideal split;
  auto <= 1.05 x the best fixed policy at every length.

Writes ``placement_bench.json`` (every trial, the calibration, host facts) and
``placement_bench.md`` (the table) to ``--out``. A few minutes for the default sizes.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.api import EngineOptions, HybridEngine  # noqa: E402
from engine.synthetic import SyntheticRequest, ensure_synthetic_model  # noqa: E402

POLICIES = ("cpu", "gpu_stream", "split", "auto")
STREAM_TARGET, SPLIT_TARGET, AUTO_TARGET = 1.10, 1.15, 1.05
STREAM_TARGET_TOKENS = (2048, 8192)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for the JSON and table")
    p.add_argument("--layers", type=int, default=4, help="decoder layers of the slice (>= 4)")
    p.add_argument("--tokens", default="32,128,512,2048,8192", help="prompt lengths")
    p.add_argument("--precisions", default="bf16,int8", help="expert precisions")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--cpu-kernel", default="auto", help="reference | auto | amx | avx512 | ...")
    p.add_argument("--threads", type=int, default=None, help="CPU expert threads")
    p.add_argument("--model", type=Path, default=None, help="a model dir instead of the slice")
    p.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    args = p.parse_args(argv)
    if args.model is None and args.layers < 4:
        p.error("the slice needs at least 4 layers (the issue's benchmark)")
    return args


def timed_prefill(eng: HybridEngine, ids: list[int]) -> float:
    eng.synchronize()
    t0 = time.perf_counter()
    eng.prefill(ids)
    eng.synchronize()
    return time.perf_counter() - t0


def measure(eng: HybridEngine, tokens: int, trials: int, vocab: int) -> dict[str, Any]:
    """Every policy at one prompt length: per-layer ms per trial and the placement used."""
    rng = random.Random(tokens)
    ids = [rng.randrange(vocab) for _ in range(tokens)]
    layers = eng.model.num_layers
    out: dict[str, Any] = {}
    for policy in POLICIES:
        with eng.placement.using(policy):
            timed_prefill(eng, ids)  # warm-up
            ms = [1e3 * timed_prefill(eng, ids) / layers for _ in range(trials)]
            out[policy] = {
                "ms_per_layer": ms,
                "mean": statistics.fmean(ms),
                "sd": statistics.stdev(ms) if len(ms) > 1 else 0.0,
                "placement": eng.last_placement,
            }
    return out


def judge(row: dict[str, Any]) -> dict[str, Any]:
    """Floors, ideal split and the targets for one precision and prompt length."""
    p, tokens = row["policies"], row["tokens"]
    t_cpu, t_stream = p["cpu"]["mean"], p["gpu_stream"]["mean"]
    ideal = 1.0 / (1.0 / t_cpu + 1.0 / t_stream)
    best_fixed = min(p[x]["mean"] for x in ("cpu", "gpu_stream", "split"))
    stream_ratio = t_stream / row["pcie_floor_ms"]
    split_ratio = p["split"]["mean"] / ideal
    auto_ratio = p["auto"]["mean"] / best_fixed
    return {
        "ideal_split_ms": ideal,
        "best_fixed_ms": best_fixed,
        "gpu_stream_vs_floor": stream_ratio,
        "split_vs_ideal": split_ratio,
        "auto_vs_best_fixed": auto_ratio,
        "gpu_stream_target_met": (
            stream_ratio <= STREAM_TARGET if tokens in STREAM_TARGET_TOKENS else None
        ),
        "split_target_met": split_ratio <= SPLIT_TARGET,
        "auto_target_met": auto_ratio <= AUTO_TARGET,
    }


def run_precision(model: Path, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    lengths = [int(t) for t in args.tokens.split(",")]
    t0 = time.perf_counter()
    options = EngineOptions(
        device="cuda",
        precision=precision,
        cpu_kernel=args.cpu_kernel,
        threads=args.threads,
        prefill_placement="auto",
        prefill_chunk=max(lengths),
        max_seq=max(lengths) + 16,
    )
    eng = HybridEngine.load(model, options)
    load_s = time.perf_counter() - t0
    try:
        cal = eng.placement.calibration
        assert cal is not None and cal.h2d_bytes_per_s
        floor_ms = 1e3 * cal.layer_bytes / cal.h2d_bytes_per_s
        rows = []
        for tokens in lengths:
            row: dict[str, Any] = {"precision": precision, "tokens": tokens}
            row["pcie_floor_ms"] = floor_ms
            row["policies"] = measure(eng, tokens, args.trials, eng.config.vocab_size)
            row.update(judge(row))
            rows.append(row)
            print(table_line(row), flush=True)
        info = eng.describe()
        keep = ("expert_backend", "kernel_method_prefill", "expert_threads", "kernel_threads",
                "stream_layer_bytes", "stream_host_memory", "gpu_memory")  # fmt: skip
        return {
            "precision": precision,
            "load_seconds": load_s,
            "calibration": cal.as_dict(),
            "engine": {k: info.get(k) for k in keep},
            "rows": rows,
        }
    finally:
        eng.close()


def fmt(p: dict[str, Any]) -> str:
    return f"{p['mean']:.1f} ± {p['sd']:.1f}"


def mark(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "MISSED")


HEADER = (
    "| precision | tokens | cpu | gpu_stream | split | auto (choice) | PCIe floor | ideal split "
    "| stream/floor (<=1.10) | split/ideal (<=1.15) | auto/best (<=1.05) |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"
)


def table_line(r: dict[str, Any]) -> str:
    p = r["policies"]
    return (
        f"| {r['precision']} | {r['tokens']} | {fmt(p['cpu'])} | {fmt(p['gpu_stream'])} | "
        f"{fmt(p['split'])} ({p['split']['placement']}) | {fmt(p['auto'])} "
        f"({p['auto']['placement']}) | {r['pcie_floor_ms']:.1f} | {r['ideal_split_ms']:.1f} | "
        f"{r['gpu_stream_vs_floor']:.2f} {mark(r['gpu_stream_target_met'])} | "
        f"{r['split_vs_ideal']:.2f} {mark(r['split_target_met'])} | "
        f"{r['auto_vs_best_fixed']:.2f} {mark(r['auto_target_met'])} |"
    )


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Prefill placement benchmark",
        "",
        f"Model: {result['model']} ({result['layers']} layers). Host: {result['host']}.",
        "ms per decoder layer, mean ± sd over trials; PCIe floor = a layer's expert bytes / "
        "measured pinned H2D bandwidth; ideal split = 1 / (1/t_cpu + 1/t_stream).",
        "",
        HEADER,
    ]
    for run in result["runs"]:
        lines += [table_line(r) for r in run["rows"]]
    lines.append("")
    for run in result["runs"]:
        cal = run["calibration"]
        lines.append(
            f"- {run['precision']}: H2D {cal['h2d_gb_per_s']} GB/s, layer "
            f"{cal['layer_bytes'] / 1e9:.2f} GB, CPU backend {cal['cpu_backend']}, "
            f"CPU ms/layer {cal['cpu_ms_per_layer']}, GPU compute ms/layer "
            f"{cal['gpu_compute_ms_per_layer']}, load {run['load_seconds']:.0f} s"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("placement_bench: needs a CUDA GPU", file=sys.stderr)
        return 2
    model = args.model or ensure_synthetic_model(
        SyntheticRequest("qwen2_moe", "slice", layers=args.layers), args.cache_dir, True
    )
    layers = json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]
    result: dict[str, Any] = {
        "model": str(model),
        "layers": layers,
        "host": f"{torch.cuda.get_device_name()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}",
        "trials": args.trials,
        "runs": [],
    }
    print(HEADER, flush=True)
    for precision in args.precisions.split(","):
        result["runs"].append(run_precision(Path(model), precision, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "placement_bench.json").write_text(json.dumps(result, indent=1))
    (args.out / "placement_bench.md").write_text(markdown(result))
    print(f"wrote {args.out / 'placement_bench.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

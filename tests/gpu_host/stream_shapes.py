"""GPU host diagnostic: what one streamed Qwen2-57B-A14B MoE layer costs on the GPU, copy and
compute apart, with and without row bucketing (engine.experts.gpu_stream.ROW_BUCKET).

For each precision and prompt length: the pinned H2D copy of the whole layer alone; then the
GPU compute with the weights already staged, (a) on the first call with a fresh routing,
(b) on calls with a new random routing each (new per-expert token counts, so new matmul
shapes unless rows are bucketed) and (c) repeating one routing. Each is run with
``row_bucket`` 0 (exact shapes) and 64. Milliseconds, mean ± sd over ``--trials``.

    python tests/gpu_host/stream_shapes.py --out DIR [--tokens 2048,8192] [--trials 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.experts.backend import StackedExperts  # noqa: E402
from engine.experts.gpu_stream import GpuExpertStreamer  # noqa: E402
from engine.runtime.calibration import random_routing  # noqa: E402

E, H, INTER, TOP_K = 64, 3584, 2560, 8  # Qwen2-57B-A14B routed experts


def timed(fn, sync) -> float:  # noqa: ANN001
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return 1e3 * (time.perf_counter() - t0)


def spread(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def measure(
    streamer: GpuExpertStreamer,
    precision: str,
    tokens: int,
    bucket: int,
    trials: int,
    gen: torch.Generator,
) -> dict:
    """One row: copy alone, then compute on the first / new / repeated routings."""
    dev, sync = streamer.device, torch.cuda.synchronize
    copies = []
    for _ in range(trials):
        streamer.new_pass()
        copies.append(timed(lambda: streamer.stage(0), sync))
    hidden = torch.randn(tokens, H, device=dev, generator=gen).to(torch.bfloat16)
    routings = [
        tuple(x.to(dev) for x in random_routing(tokens, E, TOP_K, seed=1000 * s + tokens))
        for s in range(trials + 1)
    ]

    def run(r: tuple[torch.Tensor, ...]) -> None:
        streamer.compute(0, hidden, r[0], r[1]).wait()

    first = timed(lambda: run(routings[0]), sync)
    fresh = [timed(lambda r=r: run(r), sync) for r in routings[1:]]
    same = [timed(lambda: run(routings[0]), sync) for _ in range(trials)]
    return {
        "precision": precision,
        "tokens": tokens,
        "row_bucket": bucket,
        "layer_bytes": streamer.layer_bytes(0),
        "copy_ms": spread(copies),
        "h2d_gb_per_s": streamer.layer_bytes(0) / statistics.fmean(copies) / 1e6,
        "compute_first_ms": first,
        "compute_new_routing_ms": spread(fresh),
        "compute_same_routing_ms": spread(same),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tokens", default="2048,8192")
    p.add_argument("--precisions", default="bf16,int8")
    p.add_argument("--trials", type=int, default=4)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    experts = StackedExperts(
        (torch.randn(E, 2 * INTER, H, device=dev, generator=gen) * 0.02).to(torch.bfloat16).cpu(),
        (torch.randn(E, H, INTER, device=dev, generator=gen) * 0.02).to(torch.bfloat16).cpu(),
    )
    results: list[dict] = []
    lines = [
        "| precision | tokens | row bucket | H2D copy | compute, first call | compute, new "
        "routing each | compute, same routing |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for precision in a.precisions.split(","):
        for bucket in (0, 64):
            streamer = GpuExpertStreamer(dev, precision, row_bucket=bucket)
            streamer.add_layer(0, experts)
            for tokens in (int(t) for t in a.tokens.split(",")):
                row = measure(streamer, precision, tokens, bucket, a.trials, gen)
                results.append(row)
                c, f = row["copy_ms"], row["compute_new_routing_ms"]
                s = row["compute_same_routing_ms"]
                lines.append(
                    f"| {precision} | {tokens} | {bucket} | {c['mean']:.1f} ± {c['sd']:.1f} | "
                    f"{row['compute_first_ms']:.1f} | {f['mean']:.1f} ± {f['sd']:.1f} | "
                    f"{s['mean']:.1f} ± {s['sd']:.1f} |"
                )
                print(lines[-1], flush=True)
            streamer.close()
    (a.out / "stream_shapes.json").write_text(json.dumps(results, indent=1))
    (a.out / "stream_shapes.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Decode on the GPU host: the hybrid runtime's per-layer time against its CPU backend's own.

For a synthetic Qwen2-57B-A14B slice (``--layers``, default 4) and each precision, one
engine is loaded per (spin, CUDA Graph) setting and greedy decode is timed (tokens/s, mean
± sd over ``--trials``) for the expert splits of Figure 12, with the busy share of the CPU
expert threads. Beside it, in the same run, the CPU backend alone: one MoE layer's experts
for one token (random routing, rotating over the loaded layers), so

    overhead = (decode seconds per token / layers) / (backend seconds per layer call)

is the issue's "per-layer decode time within 1.15x of its CPU backend's own time".

    python tests/gpu_host/decode_sweep.py --out DIR [--layers 4] [--tokens 64] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.api import EngineOptions, HybridEngine  # noqa: E402
from engine.runtime.static_decode import StaticDecoder  # noqa: E402
from engine.synthetic import SyntheticRequest, ensure_synthetic_model  # noqa: E402

SPLITS = {"bf16": [(8, 0), (6, 2)], "int8": [(8, 0), (4, 4)]}


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
        "n": len(values),
    }


def decode_rate(eng: HybridEngine, prompt: list[int], n: int, split: tuple[int, int]) -> float:
    with eng.expert_split(*split):
        first = int(eng.prefill(prompt, reserve=n).argmax())
        eng.synchronize()
        t0 = time.perf_counter()
        eng.decode_greedy(first, n).tolist()
        eng.synchronize()
        seconds = time.perf_counter() - t0
    eng.cache.reset()
    return n / seconds


def backend_layer_ms(eng: HybridEngine, trials: int = 40) -> dict[str, float]:
    """One token's routed experts on the CPU backend alone (ms per layer call)."""
    backend = eng.model.expert_backend
    c = eng.config
    layers = [i for i in range(eng.model.num_layers) if c.is_moe_layer(i)]
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(1, c.hidden_size, generator=gen).to(torch.bfloat16)
    out = torch.empty_like(h)
    times = []
    for i in range(trials + 4):
        ids = torch.randperm(c.num_experts, generator=gen)[: c.top_k].reshape(1, -1)
        w = torch.rand(1, c.top_k, generator=gen)
        t0 = time.perf_counter()
        backend.forward(layers[i % len(layers)], h, ids, w, out)
        if i >= 4:
            times.append((time.perf_counter() - t0) * 1e3)
    return _stats(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--precisions", default="bf16,int8")
    p.add_argument("--spins", default="50,2000")
    p.add_argument("--cache-dir", type=Path, default=REPO / ".cache")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    model = ensure_synthetic_model(
        SyntheticRequest("qwen2_moe", "slice", layers=a.layers), a.cache_dir, progress=False
    )
    prompt = torch.randint(0, 1000, (32,), generator=torch.Generator().manual_seed(1)).tolist()
    rows: list[dict[str, Any]] = []
    for precision in a.precisions.split(","):
        spins = [int(s) for s in a.spins.split(",")] if precision == "bf16" else [2000]
        for spin in spins:
            opts = EngineOptions(
                device="cuda", precision=precision, cpu_kernel="auto",
                scheduler="dynamic", spin_us=spin, max_seq=512,
            )  # fmt: skip
            eng = HybridEngine.load(model, opts)
            backend = backend_layer_ms(eng)
            for graph in (False, True):
                eng._static = StaticDecoder(eng.model, eng.cache, use_graph=graph)
                for split in SPLITS[precision]:
                    decode_rate(eng, prompt, 8, split)  # warm-up (and graph capture)
                    rates, utils = [], []
                    for _ in range(a.trials):
                        eng.expert_utilization(reset=True)
                        rates.append(decode_rate(eng, prompt, a.tokens, split))
                        utils.append(eng.expert_utilization() or 0.0)
                    s = _stats(rates)
                    per_layer_ms = 1e3 / s["mean"] / eng.model.num_layers
                    row = {
                        "precision": precision, "spin_us": spin, "cuda_graph": graph,
                        "split": f"{split[0]}+{split[1]}", "tokens_per_s": s,
                        "per_layer_ms": per_layer_ms, "backend_layer_ms": backend,
                        "overhead": per_layer_ms / backend["mean"],
                        "expert_cpu_util": statistics.fmean(utils),
                    }  # fmt: skip
                    rows.append(row)
                    print(
                        f"{precision} spin={spin:<5} graph={graph!s:<5} {row['split']}: "
                        f"{s['mean']:.2f} ± {s['sd']:.2f} tok/s, {per_layer_ms:.2f} ms/layer, "
                        f"backend {backend['mean']:.2f} ± {backend['sd']:.2f} ms "
                        f"(x{row['overhead']:.2f}), expert CPU util {row['expert_cpu_util']:.0%}",
                        flush=True,
                    )
                    (a.out / "decode_sweep.json").write_text(json.dumps(rows, indent=1))
            eng.close()
            del eng
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

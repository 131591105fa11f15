"""The benchmark library on a tiny matrix (a smoke test: rows, fields, table, JSON)."""

from __future__ import annotations

import json

import torch
from kernel_helpers import needs_ext

from engine.kernels import bench

pytestmark = needs_ext


def test_routing_is_distinct_and_skewed() -> None:
    gen = torch.Generator().manual_seed(0)
    ids, w = bench.make_routing(256, 16, 4, 0.0, gen)
    assert ids.dtype == torch.int32 and ids.shape == (256, 4)
    assert all(len(set(r)) == 4 for r in ids.tolist())
    assert torch.allclose(w.sum(1), torch.ones(256))
    zipf, _ = bench.make_routing(2048, 16, 2, 1.2, gen)
    counts = torch.bincount(zipf.reshape(-1).long(), minlength=16).sort(descending=True).values
    assert counts[0] > 4 * counts[-1]  # a hot expert


def test_tiny_matrix_runs(tmp_path) -> None:
    cfg = bench.BenchConfig(
        shapes=["mini"],
        t_values=[1, 20],
        precisions=["bf16", "int4"],
        methods=["portable", "auto", "amx"],
        trials=1,
        warmup=0,
        decode_trials=2,
        torch_t_values=[1],
        study_t=20,
        kt=False,  # kt-kernel aborts the process on shapes this small (seen on the AMX host)
        bw_bytes=32 << 20,
        peak_seconds=0.02,
        threads=2,
    )
    machine, rows = bench.run(cfg)
    assert machine["read_gbs"] > 0 and "avx512_bf16" in machine["peaks_tflops"]
    timed = [r for r in rows if "error" not in r]
    assert {r["kind"] for r in timed} >= {"kernel", "torch-loop"}
    for r in timed:
        assert r["ms_mean"] > 0 and r["gbs"] > 0 and r["tflops"] > 0, r
    assert any(r.get("study") == "scheduler" for r in timed)
    # missing ISAs / kt-kernel become rows that say why
    for r in rows:
        if "error" in r:
            assert r["error"], r
    table = bench.format_table(machine, rows)
    assert "ISA paths that ran" in table and "mini" in table
    out = tmp_path / "rows.json"
    args = "--shapes mini --T 1 --precisions int8 --methods auto --trials 1 --warmup 0"
    args += " --decode-trials 1 --no-torch --no-kt --no-study --threads 1 --int8-w8a8 off"
    args += " --bw-mb 32"
    assert bench.main([*args.split(), "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["rows"] and payload["machine"]["cpu_model"]

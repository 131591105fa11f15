"""The GPU expert streamer's math and staging, on the CPU device (same code as on a GPU;
the CUDA copies and events are checked in test_placement_gpu.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.errors import EngineError
from engine.experts.backend import StackedExperts
from engine.experts.gpu_stream import GpuExpertStreamer
from engine.experts.reference import ReferenceExpertBackend
from engine.quant.weights import quantize_weight

E, H, INTER, T, K = 8, 64, 64, 24, 3  # H and INTER: multiples of both int4 group sizes


def experts(seed: int = 0) -> StackedExperts:
    gen = torch.Generator().manual_seed(seed)
    gate_up = torch.randn(E, 2 * INTER, H, generator=gen) / H**0.5
    down = torch.randn(E, H, INTER, generator=gen) / INTER**0.5
    return StackedExperts(gate_up, down)


def routing(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=gen)
    ids = torch.rand(T, E, generator=gen).topk(K, dim=1).indices
    ids[0, 1] = ids[5, 0] = -1  # skipped slots
    weights = torch.rand(T, K, generator=gen)
    return hidden, ids, weights


def float64_reference(
    gate_up: torch.Tensor, down: torch.Tensor, hidden: torch.Tensor, ids, weights
) -> torch.Tensor:
    """``sum_j w[t, j] down_e(silu(gate_e x_t) * up_e x_t)`` in float64, token by token."""
    out = torch.zeros(hidden.shape, dtype=torch.float64)
    for t in range(hidden.shape[0]):
        x = hidden[t].double()
        for j, e in enumerate(ids[t].tolist()):
            if e < 0:
                continue
            gu = gate_up[e].double() @ x
            act = F.silu(gu[:INTER]) * gu[INTER:]
            out[t] += weights[t, j].double() * (down[e].double() @ act)
    return out


def dequantized(weight: torch.Tensor, precision: str, group_size: int = 32) -> torch.Tensor:
    """The CPU backends' dequantized weight (engine.quant), stacked per expert."""
    e, rows, cols = weight.shape
    q = quantize_weight(weight.reshape(e * rows, cols), precision, group_size)
    return q.dequantize(torch.float64).reshape(e, rows, cols)


def streamer_for(precision: str, group_size: int = 32) -> GpuExpertStreamer:
    streamer = GpuExpertStreamer("cpu", precision, group_size)
    ex = experts()
    streamer.add_layer(0, StackedExperts(ex.gate_up.clone(), ex.down.clone()))
    return streamer


def test_fp32_math_matches_a_float64_reference():
    ex = experts()
    hidden, ids, weights = routing()
    streamer = streamer_for("fp32")
    out = streamer.compute(0, hidden, ids, weights).wait()
    assert out.dtype == torch.float32
    ref = float64_reference(ex.gate_up, ex.down, hidden, ids, weights)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("precision", "group_size"), [("int8", 32), ("int4", 32), ("int4", 64)])
def test_quantized_math_matches_the_dequantized_float64_reference(precision, group_size):
    """INT8/INT4 weights stream quantized and are dequantized on the device to exactly the
    CPU backends' dequantized weights."""
    ex = experts()
    hidden, ids, weights = routing()
    streamer = streamer_for(precision, group_size)
    out = streamer.compute(0, hidden, ids, weights).wait()
    gate_up = dequantized(ex.gate_up.to(torch.bfloat16), precision, group_size)
    down = dequantized(ex.down.to(torch.bfloat16), precision, group_size)
    ref = float64_reference(gate_up, down, hidden, ids, weights)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "int4"])
def test_equals_the_reference_backend_exactly(precision):
    """Same operations in the same order as the CPU reference backend: bit-identical."""
    ex = experts()
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    hidden, ids, weights = routing()
    hidden = hidden.to(dtype)
    backend = ReferenceExpertBackend(precision)
    backend.prepare(0, StackedExperts(ex.gate_up.clone(), ex.down.clone()))
    streamer = streamer_for(precision)
    out = streamer.compute(0, hidden, ids, weights).wait().to(dtype)
    assert torch.equal(out, backend.forward(0, hidden, ids, weights))


def test_a_subset_of_experts_equals_masking_the_others():
    hidden, ids, weights = routing()
    streamer = streamer_for("fp32")
    mine = [1, 2, 6]
    result = streamer.compute(0, hidden, ids, weights, mine)
    masked = torch.where(torch.isin(ids, torch.tensor(mine)), ids, -1)
    full = streamer.compute(0, hidden, masked, weights)
    assert torch.equal(result.wait(), full.wait())
    assert result.computed == [x for x in mine if result.counts[x]]
    assert sum(result.counts) == int((ids >= 0).sum())  # counts cover every expert


@pytest.mark.parametrize("bucket", [1, 3, 64])
@pytest.mark.parametrize("subset", [None, [1, 2, 6]])
def test_padded_row_buckets_give_the_unpadded_result(bucket, subset):
    """Rows padded to a multiple of ``row_bucket`` (the GPU default) are computed and dropped:
    the kept rows are those of the exact-shape path (fp32: to rounding of the matmul's
    blocking, which may depend on the row count), for all experts and for a subset."""
    hidden, ids, weights = routing()
    exact = streamer_for("fp32")
    assert exact.row_bucket == 0  # a CPU device computes exact shapes by default
    padded = GpuExpertStreamer("cpu", "fp32", row_bucket=bucket)
    ex = experts()
    padded.add_layer(0, StackedExperts(ex.gate_up.clone(), ex.down.clone()))
    want = exact.compute(0, hidden, ids, weights, subset).wait()
    got = padded.compute(0, hidden, ids, weights, subset)
    torch.testing.assert_close(got.wait(), want, rtol=1e-6, atol=1e-6)
    assert padded.describe()["stream_row_bucket"] == bucket
    with pytest.raises(EngineError, match="row_bucket"):
        GpuExpertStreamer("cpu", "fp32", row_bucket=-1)


def test_bytes_on_the_wire_and_in_host_memory():
    def expected(precision: str, gs: int = 32) -> int:
        if precision in ("fp32", "bf16"):
            size = 4 if precision == "fp32" else 2
            return (2 * INTER * H + H * INTER) * size
        if precision == "int8":
            return 2 * INTER * H + H * INTER + (2 * INTER + H) * 4
        return (2 * INTER * H + H * INTER) // 2 + (2 * INTER * H // gs + H * INTER // gs) * 4

    for precision in ("fp32", "bf16", "int8", "int4"):
        streamer = streamer_for(precision)
        assert streamer.expert_bytes == expected(precision)
        assert streamer.layer_bytes(0) == E * expected(precision)
        assert streamer.host_bytes >= streamer.layer_bytes(0)
        assert streamer.staging_bytes >= 2 * streamer.layer_bytes(0)
    assert streamer_for("int4", 64).expert_bytes == expected("int4", 64)


def test_staging_packs_subsets_and_reuses_the_least_recent_free_slot():
    streamer = GpuExpertStreamer("cpu", "bf16")
    for layer in range(3):
        ex = experts(seed=layer)
        streamer.add_layer(layer, StackedExperts(ex.gate_up, ex.down))
    a = streamer.stage(0)
    assert a.position == {x: x for x in range(E)}
    b = streamer.stage(1, [6, 2, 3])
    assert b is not a and b.position == {2: 0, 3: 1, 6: 2}
    host = streamer._layer(1).tensors["gate_up"]  # noqa: SLF001 - checking the copy itself
    assert torch.equal(b.tensors["gate_up"][2], host[6])
    with pytest.raises(EngineError, match="unused prefetch"):
        streamer.stage(2)  # both slots hold prefetches nothing computed yet
    assert streamer.stage(1, [2, 6]) is b  # already there: no copy
    hidden, ids, weights = routing()
    streamer.compute(0, hidden.to(torch.bfloat16), ids, weights)  # consumes slot a
    assert streamer.stage(2) is a  # the free one
    streamer.new_pass()
    assert all(s.layer is None for s in streamer._slots)  # noqa: SLF001 - nothing reused


def test_compute_copies_the_selected_experts_it_lacks():
    streamer = streamer_for("bf16")
    hidden, ids, weights = routing()
    result = streamer.compute(0, hidden.to(torch.bfloat16), ids, weights, [0, 1])
    slot = next(s for s in streamer._slots if s.layer == 0)  # noqa: SLF001
    assert sorted(slot.position) == result.computed  # only those, packed in front


def test_bad_calls_are_refused():
    streamer = streamer_for("bf16")
    hidden, ids, weights = routing()
    bad = ids.clone()
    bad[3, 0] = E
    with pytest.raises(EngineError, match=f">= {E}"):
        streamer.compute(0, hidden.to(torch.bfloat16), bad, weights)
    with pytest.raises(EngineError, match="no layer 5"):
        streamer.compute(5, hidden, ids, weights)
    with pytest.raises(EngineError, match="added twice"):
        streamer.add_layer(0, experts())
    other = GpuExpertStreamer("cpu", "bf16")
    other.add_layer(0, experts())
    with pytest.raises(EngineError, match="differ in shape"):
        small = experts()
        other.add_layer(1, StackedExperts(small.gate_up[:, :, :32], small.down[:, :32]))
    with pytest.raises(EngineError, match="precision must be one of"):
        GpuExpertStreamer("cpu", "fp8")

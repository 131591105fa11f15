"""The prefill placement cost model on synthetic calibration inputs (pure functions, no GPU).

The main calibration is shaped like one Qwen2-57B-A14B MoE layer on the project's GPU host
(../shared/DESIGN.md): 64 experts, top-8, 55 MB of bf16 weights per expert, 53 GB/s pinned
H2D (66 ms per layer), KTransformers' CPU kernel times at 32/512/2048/8192 tokens and a few
ms of GPU compute.
"""

from __future__ import annotations

import pytest

from engine.errors import EngineError, EngineUnavailable
from engine.runtime.cost_model import (
    Calibration,
    Choice,
    CostModel,
    choose,
    expected_active,
    interpolate,
    per_expert_curve,
)

E, K, EXPERT_BYTES, BW = 64, 8, 55_000_000, 53e9
CPU = ((1, 0.008), (32, 0.072), (512, 0.088), (2048, 0.176), (8192, 0.562))
GPU = ((1, 0.0003), (32, 0.003), (512, 0.005), (2048, 0.007), (8192, 0.011))
QWEN = Calibration(E, K, EXPERT_BYTES, BW, CPU, GPU, "kernel (amx)")
TOKENS = (2, 8, 32, 128, 512, 2048, 4096, 8192)


def test_expected_active_experts():
    assert expected_active(1, E, K) == pytest.approx(K)
    assert expected_active(0, E, K) == 0
    assert expected_active(32, E, K) == pytest.approx(63.11, abs=0.01)
    assert expected_active(8192, E, K) == pytest.approx(E)


def test_interpolation_holds_below_and_extends_above():
    curve = [(1.0, 2.0), (3.0, 4.0), (5.0, 5.0)]
    assert interpolate(curve, 0.5) == 2.0
    assert interpolate(curve, 2.0) == pytest.approx(3.0)
    assert interpolate(curve, 9.0) == pytest.approx(7.0)  # the last segment's slope
    assert interpolate([(1.0, 2.0), (3.0, 1.0)], 9.0) == 1.0  # never below the last value
    with pytest.raises(EngineError, match="no measurements"):
        interpolate([], 1.0)


def test_model_reproduces_the_calibration_points():
    model = CostModel(QWEN)
    for tokens, seconds in CPU:
        assert model.cpu(tokens) == pytest.approx(seconds)
    for tokens, seconds in GPU:
        assert model.gpu_compute(tokens, E) == pytest.approx(seconds)
    assert model.copy(E) == pytest.approx(E * EXPERT_BYTES / BW)  # 66 ms: the PCIe floor
    curve = per_expert_curve(CPU, E, K)
    assert [n for n, _ in curve] == sorted(n for n, _ in curve)  # tokens per expert grow


@pytest.mark.parametrize("policy", ["cpu", "gpu_stream", "split", "auto"])
def test_decode_always_runs_on_the_cpu(policy):
    for first in (True, False):
        choice = choose(policy, 1, QWEN, first=first)
        assert choice.policy == "cpu" and choice.gpu_experts == 0


def test_without_a_gpu_auto_is_cpu_and_streaming_is_unavailable():
    no_gpu = Calibration(E, K, EXPERT_BYTES, None, CPU)
    for cal in (None, no_gpu):
        choice = choose("auto", 4096, cal, first=False)
        assert choice.policy == "cpu" and choice.label() == "auto->cpu"
        for policy in ("gpu_stream", "split"):
            with pytest.raises(EngineUnavailable, match="needs a CUDA GPU"):
                choose(policy, 4096, cal, first=False)


def test_auto_splits_on_the_h200_host_and_beats_both_fixed_policies():
    """At 32-8192 tokens the CPU reads a whole layer slower than PCIe copies it (or nearly
    as slowly), and doing both at once beats either: auto splits, with the GPU's share
    growing with the prompt, and both sides predicted to finish together."""
    model = CostModel(QWEN)
    shares = []
    for tokens in (32, 512, 2048, 8192):
        choice = choose("auto", tokens, QWEN, first=False)
        assert choice.policy == "split" and choice.prefetch
        cpu = model.cpu(tokens)
        stream = model.stream(tokens, prefetch=True)
        assert choice.seconds is not None and choice.seconds < min(cpu, stream)
        # no worse than 1.15x the ideal split 1 / (1/t_cpu + 1/t_stream)
        assert choice.seconds <= 1.15 / (1 / cpu + 1 / stream)
        g = choice.gpu_experts
        cpu_side = model.cpu(tokens, E - g)
        gpu_side = max(model.copy(g), model.gpu_compute(tokens, g))
        one_expert = max(model.cpu(tokens, 1), model.copy(1))
        assert abs(cpu_side - gpu_side) <= one_expert  # balanced to within one expert
        shares.append(g)
    assert shares == sorted(shares) and shares[0] < E // 2 + 4 and shares[-1] >= 56


def test_auto_prefers_the_cpu_when_pcie_is_slow():
    slow_pcie = Calibration(E, K, EXPERT_BYTES, 5e7, CPU, GPU)  # one expert: 1.1 s
    for tokens in TOKENS:
        assert choose("auto", tokens, slow_pcie, first=False).policy == "cpu"
    # at 1 GB/s (55 ms per expert) a long prompt still gives the GPU a few experts
    choice = choose("auto", 8192, Calibration(E, K, EXPERT_BYTES, 1e9, CPU, GPU), first=False)
    assert choice.policy == "split" and 1 <= choice.gpu_experts <= 10


def test_auto_streams_everything_when_the_cpu_is_very_slow():
    slow_cpu = Calibration(E, K, EXPERT_BYTES, BW, tuple((t, 100 * s) for t, s in CPU), GPU)
    for tokens in (512, 2048, 8192):
        choice = choose("auto", tokens, slow_cpu, first=False)
        assert choice.policy == "gpu_stream" and choice.gpu_experts == E
        assert choice.label() == "auto->gpu_stream"


def test_auto_is_never_predicted_slower_than_a_fixed_policy():
    model = CostModel(QWEN)
    for tokens in TOKENS:
        for first in (True, False):
            auto = choose("auto", tokens, QWEN, first=first).seconds
            fixed = [choose(p, tokens, QWEN, first=first).seconds for p in ("gpu_stream", "split")]
            assert auto is not None
            assert auto <= min([model.cpu(tokens), *fixed]) + 1e-12


def test_streaming_copies_ahead_except_for_tiny_batches_and_the_first_layer():
    for tokens in (32, 512, 8192):
        assert choose("gpu_stream", tokens, QWEN, first=False).prefetch
    # 2 tokens select ~16 experts: copying those after routing beats copying all 64 ahead
    assert not choose("gpu_stream", 2, QWEN, first=False).prefetch
    # the first MoE layer of a pass has nothing to overlap: only its selected experts
    first = choose("gpu_stream", 8192, QWEN, first=True)
    assert not first.prefetch
    assert first.seconds == pytest.approx(CostModel(QWEN).stream(8192, prefetch=False))


def test_split_keeps_both_sides_busy_and_labels_cpu_then_gpu_experts():
    for tokens in TOKENS:
        for first in (True, False):
            choice = choose("split", tokens, QWEN, first=first)
            assert choice.policy == "split" and 1 <= choice.gpu_experts <= E - 1
            cpu, gpu = choice.label().removeprefix("split:").split("/")
            assert int(cpu) + int(gpu) == E and int(gpu) == choice.gpu_experts


def test_labels():
    assert Choice("cpu", 0, E, requested="cpu").label() == "cpu"
    assert Choice("gpu_stream", E, E, requested="gpu_stream").label() == "gpu_stream"
    assert Choice("split", 40, E, requested="split").label() == "split:24/40"
    assert Choice("split", 40, E, requested="auto").label() == "auto->split:24/40"


def test_bad_inputs_are_refused():
    with pytest.raises(EngineError, match="prefill placement must be one of"):
        choose("gpu", 32, QWEN, first=False)
    with pytest.raises(EngineError, match="is not a routing"):
        Calibration(4, 8, 1, BW)
    with pytest.raises(EngineError, match="bad point"):
        Calibration(E, K, 1, BW, ((0, 1.0),))

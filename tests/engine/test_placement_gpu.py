"""Prefill placement on a CUDA GPU: every policy against the CPU path on tiny models, the
streamer's quantized weights against their dequantized reference, the budget at load, and
decode after a streamed prefill. Skipped without a CUDA GPU."""

from __future__ import annotations

import pytest
import torch
from test_placement_runner import assert_bf16_close
from test_placement_streamer import dequantized, experts, float64_reference, routing

from engine import kernels
from engine.api import EngineOptions, HybridEngine
from engine.errors import EngineError
from engine.experts.backend import StackedExperts
from engine.experts.deferral import moe_layer_indices
from engine.experts.gpu_stream import GpuExpertStreamer
from engine.runtime.placement import PlacementRunner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
KERNELS = [
    "reference",
    pytest.param(
        "auto",
        marks=pytest.mark.skipif(
            not kernels.available(), reason=f"C++ kernels not built: {kernels.build_error()}"
        ),
    ),
]
PROMPT = 48


def load(path, precision: str = "bf16", cpu_kernel: str = "reference", **kw) -> HybridEngine:  # noqa: ANN001
    options = EngineOptions(
        device="cuda",
        precision=precision,
        cpu_kernel=cpu_kernel,
        prefill_placement=kw.pop("prefill_placement", "auto"),
        max_seq=256,
        prefill_chunk=kw.pop("prefill_chunk", 256),  # calibrates up to 256 tokens: quicker
        **kw,
    )
    return HybridEngine.load(path, options)


def all_logits(eng: HybridEngine, ids: list[int]) -> torch.Tensor:
    eng.cache.reset()
    eng.placement.start_record()
    tokens = torch.tensor(ids, device=eng.device)
    out = eng.model.forward(tokens, eng.cache, all_logits=True).cpu()
    eng.cache.reset()
    return out


@pytest.mark.parametrize("cpu_kernel", KERNELS)
@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
@pytest.mark.parametrize("name", ["qwen2_norm", "ds2_qlora_greedy", "ds3_qlora_norm"])
def test_every_policy_matches_the_cpu_path(checkpoint, name, precision, cpu_kernel):
    eng = load(checkpoint(name), precision, cpu_kernel)
    try:
        ids = torch.randint(0, 256, (PROMPT,), generator=torch.Generator().manual_seed(7))
        with eng.placement.using("cpu"):
            base = all_logits(eng, ids.tolist())
        layers = moe_layer_indices(eng.model)
        for policy in ("gpu_stream", "split", "auto"):
            with eng.placement.using(policy):
                out = all_logits(eng, ids.tolist())
                labels = eng.placement.layer_labels()
            assert sorted(labels) == layers, policy
            if policy != "auto":
                assert all(label.startswith(policy) for label in labels.values()), labels
            assert_bf16_close(out, base)
        eng.synchronize()  # no error recorded by the CPU side
    finally:
        eng.close()


@pytest.mark.parametrize(("precision", "group_size"), [("int8", 32), ("int4", 32), ("int4", 64)])
def test_quantized_weights_are_dequantized_on_the_gpu_to_the_cpu_reference(precision, group_size):
    ex = experts()
    streamer = GpuExpertStreamer("cuda", precision, group_size)
    streamer.add_layer(0, StackedExperts(ex.gate_up.clone(), ex.down.clone()))
    assert streamer._layers[0].flat.is_pinned()  # noqa: SLF001 - DMA-able host memory
    hidden, ids, weights = routing()
    result = streamer.compute(0, hidden.cuda(), ids.cuda(), weights.cuda())
    out = result.wait().cpu().double()
    gate_up = dequantized(ex.gate_up.to(torch.bfloat16), precision, group_size)
    down = dequantized(ex.down.to(torch.bfloat16), precision, group_size)
    ref = float64_reference(gate_up, down, hidden, ids, weights)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # float32 on the GPU
    subset = streamer.compute(0, hidden.cuda(), ids.cuda(), weights.cuda(), [0, 3, 5])
    masked = torch.where(torch.isin(ids, torch.tensor([0, 3, 5])), ids, -1)
    ref_subset = float64_reference(gate_up, down, hidden, masked, weights)
    torch.testing.assert_close(subset.wait().cpu().double(), ref_subset, rtol=1e-4, atol=1e-4)
    streamer.close()


def test_budget_overflow_fails_at_load_with_the_numbers(checkpoint):
    path = checkpoint("qwen2_norm")
    with pytest.raises(EngineError) as info:
        load(path, prefill_placement="gpu_stream", gpu_memory_budget_gb=1e-5)
    message = str(info.value)
    assert "GPU memory budget of 0.00 GB is too small" in message
    for part in ("non-expert weights", "KV cache", "expert staging"):
        assert part in message
    eng = load(path, prefill_placement="gpu_stream", gpu_memory_budget_gb=40.0)
    try:
        memory = eng.describe()["gpu_memory"]
        assert memory["staging_gb"] > 0 and memory["kv_cache_gb"] > 0
        assert memory["loaded_share_gb"] == pytest.approx(
            memory["model_wide_weights_gb"] + memory["layer_weights_gb"]
            + memory["kv_cache_gb"] + memory["staging_gb"], abs=1e-5
        )  # fmt: skip
    finally:
        eng.close()


def test_calibration_and_placement_are_described(checkpoint):
    eng = load(checkpoint("qwen2_norm"))
    try:
        eng.prefill(list(range(PROMPT)))
        info = eng.describe()
        cost = info["placement_cost_model"]
        assert cost["h2d_gb_per_s"] > 0 and cost["pcie_floor_ms_per_layer"] > 0
        assert cost["cpu_ms_per_layer"] and cost["gpu_compute_ms_per_layer"]
        assert cost["cpu_backend"] == "reference"
        assert info["placement_last_prefill"] == eng.last_placement
        assert eng.last_placement.startswith("auto->") or "=auto->" in eng.last_placement
        assert info["stream_host_memory"].startswith("pinned")  # page-locked: full H2D speed
        assert info["stream_row_bucket"] > 0  # padded matmul shapes on a GPU
    finally:
        eng.close()


@pytest.mark.parametrize("cpu_kernel", KERNELS)
def test_decode_after_a_streamed_prefill_is_unchanged(checkpoint, cpu_kernel):
    """Decode stays on the CPU path (also in a CUDA Graph through the wrapper); deferral
    blocks are not wrapped."""
    path = checkpoint("qwen2_nonorm")
    graph = cpu_kernel != "reference"  # the reference backend blocks: no graph capture
    prompt = list(range(3, 3 + PROMPT))
    tokens = {}
    for policy in ("cpu", "split"):
        eng = load(path, cpu_kernel=cpu_kernel, prefill_placement=policy, cuda_graph=graph)
        try:
            first = int(eng.prefill(prompt, reserve=16).argmax())
            tokens[policy] = eng.decode_greedy(first, 16).tolist()
            if policy == "split":
                assert isinstance(eng.model.expert_runner, PlacementRunner)
                top_k = eng.config.top_k
                with eng.expert_split(top_k - 1, 1):
                    assert not isinstance(eng.model.expert_runner, PlacementRunner)
                with eng.expert_split(None, 0):
                    assert isinstance(eng.model.expert_runner, PlacementRunner)
        finally:
            eng.close()
    agree = sum(a == b for a, b in zip(tokens["cpu"], tokens["split"], strict=True))
    assert agree >= 12, tokens  # bf16 rounding may flip a near-tie late in the sequence

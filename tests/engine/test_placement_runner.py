"""The placement runner on tiny models, with the streamer on the CPU device (the same runner
code a GPU uses; GPU runs are in test_placement_gpu.py), and the engine/harness wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.api import EngineOptions, HybridEngine
from engine.errors import EngineError, EngineUnavailable
from engine.experts import make_expert_backend
from engine.experts.deferral import DeferredExpertRunner, make_runner, moe_layer_indices
from engine.experts.gpu_stream import GpuExpertStreamer
from engine.loaders import open_weights
from engine.models import load_model
from engine.runtime.cost_model import Calibration, Choice
from engine.runtime.placement import PlacementRunner, PrefillPlacement
from engine.runtime.placement_setup import CopyToStreamer

PROMPT = 40


def load_with_streamer(path: Path, precision: str):  # noqa: ANN201 - (model, placement)
    """A CPU model whose experts also went to a CPU-device streamer, wrapped for placement
    with a calibration that makes streaming and splitting worthwhile."""
    backend = make_expert_backend("reference", precision)
    streamer = GpuExpertStreamer("cpu", precision)
    source = open_weights(path)
    try:
        model = load_model(
            source, expert_backend=CopyToStreamer(backend, streamer), dtype=torch.bfloat16
        )
    finally:
        source.close()
    model.expert_backend = backend
    model.expert_runner = make_runner(model, None)
    c = model.config
    cal = Calibration(
        c.num_experts,
        c.top_k,
        streamer.expert_bytes,
        h2d_bytes_per_s=streamer.expert_bytes * c.num_experts / 1e-3,  # a layer in 1 ms
        cpu_seconds=((1, 1e-3), (32, 4e-3), (256, 2e-2)),
        gpu_seconds=((1, 1e-4), (256, 5e-4)),
    )
    placement = PrefillPlacement(
        "auto",
        streamer=streamer,
        moe_layers=moe_layer_indices(model),
        top_k=c.top_k,
        calibration=cal,
    )
    model.expert_runner = placement.wrap(model.expert_runner)
    return model, placement


def assert_bf16_close(out: torch.Tensor, base: torch.Tensor) -> None:
    """Within bf16 tolerance: a partial sum rounded to bf16 once more moves a logit by a
    few bf16 ulps, which these tiny random models amplify through the layers (see
    test_engine_logits: their own bf16 logits move by up to 5-40% of max|logit| at a few
    positions, where such a nudge flips a near-tied top-k routing choice, most often under
    DeepSeek-V3's sigmoid + group routing). So the mean is held tight, and every position
    but at most one in 16 must be within 10% of max|logit|: wrong math or wiring moves
    every position."""
    scale = base.abs().max().item()
    diff = (out - base).abs()
    rows = diff.reshape(-1, diff.shape[-1]).amax(dim=1)
    far = int((rows > 0.1 * scale).sum())
    print(
        f"bf16 gap: mean {diff.mean() / scale:.2e}, max {diff.max() / scale:.2e} x max|logit|, "
        f"{far} of {rows.numel()} positions beyond 0.1"
    )
    assert diff.mean().item() <= 5e-3 * scale
    assert far <= rows.numel() // 16, f"{far} of {rows.numel()} positions differ by > 10%"


def logits(model, ids: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    cache = model.new_cache(128)
    return model.forward(ids, cache, all_logits=True)


@pytest.mark.parametrize("name", ["qwen2_norm", "ds2_qlora_greedy"])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_every_policy_gives_the_cpu_paths_logits(checkpoint, name, precision):
    model, placement = load_with_streamer(checkpoint(name), precision)
    ids = torch.randint(0, 256, (PROMPT,), generator=torch.Generator().manual_seed(3))
    with placement.using("cpu"):
        base = logits(model, ids)
    for policy in ("gpu_stream", "split", "auto"):
        with placement.using(policy):
            placement.start_record()
            out = logits(model, ids)
            labels = placement.layer_labels()
        assert sorted(labels) == moe_layer_indices(model)
        if policy == "gpu_stream":
            assert torch.equal(out, base)  # the reference backend's math, exactly
            assert set(labels.values()) == {"gpu_stream"}
        else:  # two partial sums, the CPU's rounded to bf16
            assert_bf16_close(out, base)
        if policy == "split":
            assert all(label.startswith("split:") for label in labels.values())


def test_next_layer_is_copied_while_the_current_one_starts(checkpoint, monkeypatch):
    model, placement = load_with_streamer(checkpoint("qwen2_nonorm"), "bf16")
    streamer = placement.streamer
    assert streamer is not None
    calls: list[tuple[int, object]] = []
    real_stage = streamer.stage

    def stage(layer_idx, experts=None):  # noqa: ANN001, ANN202
        calls.append((layer_idx, None if experts is None else len(experts)))
        return real_stage(layer_idx, experts)

    monkeypatch.setattr(streamer, "stage", stage)
    layers = moe_layer_indices(model)
    with placement.using("gpu_stream"):
        logits(model, torch.arange(PROMPT))
    # layer 0 copies its selected experts after routing (nothing to overlap), then every
    # next layer is copied whole while the previous one starts
    assert calls[0][0] == layers[0] and calls[0][1] is not None
    assert calls[1:] == [(layer, None) for layer in layers[1:]]


def test_decode_goes_to_the_inner_runner(checkpoint, monkeypatch):
    model, placement = load_with_streamer(checkpoint("qwen2_norm"), "bf16")
    assert placement.streamer is not None
    monkeypatch.setattr(placement.streamer, "compute", lambda *a, **k: pytest.fail("GPU used"))
    cache = model.new_cache(64)
    with placement.using("gpu_stream"):
        placement.start_record()
        model.forward(torch.tensor([5]), cache)
    assert placement.summary() == "cpu"


def test_a_deferring_runner_is_never_wrapped(checkpoint):
    model, placement = load_with_streamer(checkpoint("qwen2_nonorm"), "bf16")
    c = model.config
    deferring = DeferredExpertRunner(
        model.expert_backend, c.top_k - 1, moe_layer_indices(model), c.hidden_size, c.top_k
    )
    assert placement.wrap(deferring) is deferring
    plain = make_runner(model, None)
    wrapped = placement.wrap(plain, reusable=True)
    assert isinstance(wrapped, PlacementRunner) and placement.wrap(plain, True) is wrapped
    assert placement.wrap(wrapped) is wrapped


def test_summary_groups_consecutive_layers():
    placement = PrefillPlacement("auto", moe_layers=[0, 1, 2, 3])
    assert placement.summary() == "auto->cpu"  # nothing recorded: no GPU placement ran
    split, stream = Choice("split", 40, 64, requested="auto"), Choice("gpu_stream", 64, 64)
    placement._current = {0: split, 1: stream, 2: stream, 3: stream}  # noqa: SLF001
    assert placement.summary() == "L0=auto->split:24/40;L1-3=gpu_stream"
    placement.start_pass()  # a second chunk of the same prompt chose differently for layer 3
    placement._current = {3: split}  # noqa: SLF001
    assert placement.layer_labels()[3] == "gpu_stream+auto->split:24/40"
    placement.start_record()
    assert placement.layer_labels() == {}


# -- the engine and the harness ----------------------------------------------------------------
def test_engine_without_gpu_auto_is_cpu_and_streaming_is_unavailable(checkpoint):
    path = checkpoint("qwen2_norm")
    for policy in ("gpu_stream", "split"):
        with pytest.raises(EngineUnavailable, match="CUDA GPU"):
            HybridEngine.load(path, EngineOptions(device="cpu", prefill_placement=policy))
    eng = HybridEngine.load(
        path, EngineOptions(device="cpu", prefill_placement="auto", gpu_memory_budget_gb=1e-9)
    )
    try:
        eng.prefill(list(range(12)))
        assert eng.last_placement == "auto->cpu"
        info = eng.describe()
        assert info["prefill_placement"] == "auto"
        assert "no CUDA GPU" in info["prefill_placement_unavailable"]
        assert info["gpu_memory"] == "not checked: no GPU"  # a tiny budget is not checked
        with (
            pytest.raises(EngineUnavailable, match="gpu_stream"),
            eng.placement.using("gpu_stream"),
        ):
            pass
    finally:
        eng.close()


def test_engine_options_are_checked():
    with pytest.raises(EngineError, match="prefill_placement"):
        EngineOptions(prefill_placement="gpu")
    for bad in (0, -1.0, True, "40"):
        with pytest.raises(EngineError, match="gpu_memory_budget_gb"):
            EngineOptions(gpu_memory_budget_gb=bad)
    with pytest.raises(EngineError, match="gpu_budget_model_layers"):
        EngineOptions(gpu_budget_model_layers=0)


def test_harness_records_the_placement(checkpoint):
    from experiments.engine_system import EngineSystem
    from experiments.system_api import ModelSpec, SystemUnavailable

    path = checkpoint("qwen2_norm")
    spec = ModelSpec("tiny", "qw2", "tiny", "qwen2_moe", path, "test", True, 3, 3)
    system = EngineSystem(
        {"device": "cpu", "prefill_placement": "auto", "gpu_memory_budget_gb": "paper"}
    )
    try:
        system.load(spec, "bf16")
        timing = system.prefill(list(range(16)))
        assert timing.placement == "auto->cpu"
        facts = system.describe()
        assert facts["gpu_memory_budget_source"] == "the paper's GPU for bf16: A100 40 GB"
        assert facts["placement_last_prefill"] == "auto->cpu"
    finally:
        system.close()
    streaming = EngineSystem({"device": "cpu", "prefill_placement": "gpu_stream"})
    with pytest.raises(SystemUnavailable, match="CUDA GPU"):
        streaming.load(spec, "bf16")
    with pytest.raises(EngineError, match="gpu_memory_budget_gb"):
        EngineSystem.check_options({"gpu_memory_budget_gb": "a100"})


def test_harness_budget_is_the_papers_gpu_scaled_to_the_slice():
    from experiments.engine_system import gpu_budget

    budget, facts = gpu_budget("paper", "bf16", 4, 28)
    assert budget == pytest.approx(40 * 4 / 28)
    assert facts["gpu_memory_budget_scale"] == "4/28 layers"
    assert gpu_budget("paper", "int8", 28, 28)[0] == pytest.approx(16.0)
    assert gpu_budget(80, "int4", 0, 28)[0] == pytest.approx(80.0)  # 0: every layer
    assert gpu_budget(None, "bf16", 4, 28)[0] is None


def test_prefill_rows_carry_the_placement():
    from experiments.schema import RESULT_COLUMNS
    from experiments.stages import _one_run
    from experiments.system_api import PrefillTiming

    class Stub:
        def prefill(self, ids):  # noqa: ANN001, ANN202
            return PrefillTiming(len(ids), 0.5, "split:24/40")

    class PointStub:
        stage = "prefill"

    seconds, tokens, extra = _one_run(Stub(), PointStub(), [1, 2, 3], 0)  # type: ignore[arg-type]
    assert (seconds, tokens, extra) == (0.5, 3, {"placement": "split:24/40"})
    assert "placement" in RESULT_COLUMNS

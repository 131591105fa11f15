"""The GPU memory budget: counting what the engine keeps on the device, the slice share, and
the one error an overflow gives (its GPU-side load path is in test_placement_gpu.py)."""

from __future__ import annotations

import pytest
import torch

from engine.errors import EngineError
from engine.runtime.gpu_budget import GB, GpuMemoryUse, check_budget, device_bytes, measure_use


def test_device_bytes_counts_each_storage_once_on_its_device():
    a = torch.zeros(10, dtype=torch.float32)
    b = torch.zeros(3, dtype=torch.bfloat16)
    view = a[2:5]
    meta = torch.empty(100, device="meta")
    assert device_bytes([a, view, {"b": b}, (a,), meta], torch.device("cpu")) == 40 + 6


def test_model_memory_by_kind(checkpoint, load_engine):
    """Every non-expert checkpoint tensor, in the model dtype, plus the rotary table; the
    routed experts (with the CPU backend) are not counted."""
    from engine.loaders import open_weights

    path = checkpoint("qwen2_norm")
    model = load_engine(path, dtype=torch.bfloat16, precision="bf16")
    use = measure_use(model, kv_cache_bytes=1000, staging_bytes=500, layers_total=None)
    source = open_weights(path)
    try:
        names = [n for n in source.names() if ".mlp.experts." not in n]
        expected = sum(2 * torch.Size(source.shape(n)).numel() for n in names)
    finally:
        source.close()
    rotary = model.rotary.inv_freq.numel() * model.rotary.inv_freq.element_size()
    assert use.model_wide_weights + use.layer_weights == expected + rotary
    c = model.config
    assert use.model_wide_weights == 2 * (2 * c.vocab_size * c.hidden_size + c.hidden_size) + rotary
    assert use.layers_loaded == use.layers_total == model.num_layers
    assert use.loaded_bytes == expected + rotary + 1500


def test_a_slice_is_charged_its_share_of_model_wide_parts():
    use = GpuMemoryUse(
        model_wide_weights=int(2 * GB),
        layer_weights=int(4 * 0.5 * GB),
        kv_cache=int(0.1 * GB),
        staging=int(7 * GB),
        layers_loaded=4,
        layers_total=28,
    )
    assert use.share_bytes == pytest.approx((2.1 + 9 * 4 / 28) * GB)
    assert use.full_model_bytes == pytest.approx((2.1 * 7 + 9) * GB)  # 23.7 GB: fits 40
    check_budget(use, 40 * 4 / 28)
    with pytest.raises(EngineError) as info:
        check_budget(use, 16 * 4 / 28)
    message = str(info.value)
    for part in ("2.29 GB is too small", "non-expert weights 4.00 GB", "KV cache 0.10 GB",
                 "expert staging 7.00 GB", "4-of-28-layer slice", "full model would need 23.70 GB",
                 "16.00 GB GPU", "prefill_placement cpu"):  # fmt: skip
        assert part in message


def test_the_full_model_is_checked_as_allocated():
    use = GpuMemoryUse(int(GB), int(GB), int(GB), int(GB), 2, 2)
    assert use.share_bytes == use.loaded_bytes == 4 * GB
    check_budget(use, 4.0)
    with pytest.raises(EngineError, match="budget of 3.99 GB is too small"):
        check_budget(use, 3.99)


class _TwoLayers:
    device = torch.device("cpu")
    embed = lm_head = torch.zeros(1)
    norm = rotary = None
    layers: list = []
    num_layers = 2


def test_a_model_cannot_have_fewer_layers_than_loaded():
    with pytest.raises(EngineError, match="has 1 layers in all but 2 are loaded"):
        measure_use(_TwoLayers(), 0, 0, layers_total=1)

"""DeepSeek-V3 FP8 block dequantization against an independent float64 loop reference."""

from __future__ import annotations

import math

import pytest
import torch

from engine.errors import WeightsError
from engine.loaders.fp8 import (
    block_size_from_config,
    dequant_fp8_block,
    quantize_fp8_block,
    scale_name,
)


def _reference(
    weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """Explicit loops over blocks, in float64."""
    w = weight.to(torch.float64)
    out = torch.empty_like(w)
    bo, bi = block
    for r in range(math.ceil(w.shape[0] / bo)):
        for c in range(math.ceil(w.shape[1] / bi)):
            rows, cols = slice(r * bo, (r + 1) * bo), slice(c * bi, (c + 1) * bi)
            out[rows, cols] = w[rows, cols] * float(scale_inv[r, c])
    return out


def _random_fp8(shape: tuple[int, int], block: tuple[int, int], seed: int):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(shape, generator=g) * 100).clamp(-448, 448).to(torch.float8_e4m3fn)
    scales = (math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1]))
    scale_inv = torch.rand(scales, generator=g) * 1e-2 + 1e-4
    return weight, scale_inv


@pytest.mark.parametrize(
    ("shape", "block"),
    [
        ((256, 384), (128, 128)),
        ((130, 300), (128, 128)),
        ((100, 60), (128, 128)),
        ((10, 13), (4, 8)),
        ((1, 1), (128, 128)),
    ],
)
def test_dequant_matches_loop_reference(shape, block):
    weight, scale_inv = _random_fp8(shape, block, seed=sum(shape))
    got = dequant_fp8_block(weight, scale_inv, block)
    assert got.dtype == torch.float32 and tuple(got.shape) == shape
    want = _reference(weight, scale_inv, block)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0)


def test_edge_blocks_use_their_own_scale():
    """A 129x129 weight: the last row/column belong to the partial edge blocks."""
    weight = torch.ones(129, 129).to(torch.float8_e4m3fn)
    scale_inv = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    got = dequant_fp8_block(weight, scale_inv)
    assert got[0, 0] == 1 and got[0, 128] == 2 and got[128, 0] == 3 and got[128, 128] == 4
    assert got[127, 127] == 1


def test_quantize_dequant_error_is_small():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 200, generator=g) * torch.logspace(
        -3, 1, 200
    )  # columns of very different size
    q, s = quantize_fp8_block(w)
    assert q.dtype == torch.float8_e4m3fn and tuple(s.shape) == (3, 2)
    back = dequant_fp8_block(q, s)
    rel = float((back - w).norm() / w.norm())
    assert rel < 0.05, rel
    assert float((back - w).abs().max()) <= float(w.abs().max()) * 0.07


def test_zero_block_quantizes_to_zero():
    w = torch.zeros(128, 256)
    w[:, 128:] = torch.randn(128, 128)
    q, s = quantize_fp8_block(w)
    assert torch.isfinite(s).all()
    assert torch.equal(dequant_fp8_block(q, s)[:, :128], torch.zeros(128, 128))


def test_wrong_scale_shape_names_tensor():
    weight, _ = _random_fp8((256, 256), (128, 128), seed=1)
    with pytest.raises(WeightsError, match=r"layers\.3\.q_a_proj.*\(2, 2\)"):
        dequant_fp8_block(weight, torch.ones(2, 3), name="model.layers.3.q_a_proj.weight")
    with pytest.raises(WeightsError, match="2-D"):
        dequant_fp8_block(weight.reshape(-1), torch.ones(2, 2))


def test_config_helpers():
    assert block_size_from_config({}) is None
    assert block_size_from_config({"quantization_config": {"quant_method": "fp8"}}) == (128, 128)
    cfg = {"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 32]}}
    assert block_size_from_config(cfg) == (64, 32)
    assert scale_name("a.weight") == "a.weight_scale_inv"

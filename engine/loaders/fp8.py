"""DeepSeek-V3 FP8 block quantization: float8_e4m3fn weights with one float32 scale per block.

DeepSeek-V3 checkpoints store many 2-D weights as ``float8_e4m3fn`` together with a
``<name>_scale_inv`` tensor of shape ``ceil(out/128) x ceil(in/128)``; the real value
of an element is ``fp8 * scale_inv[row // 128, col // 128]`` (edge blocks are partial).
The block size comes from ``config.json``'s ``quantization_config.weight_block_size``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.errors import WeightsError

SCALE_SUFFIX = "_scale_inv"
DEFAULT_BLOCK = (128, 128)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def scale_name(weight_name: str) -> str:
    """Name of the scale tensor that belongs to ``weight_name``."""
    return weight_name + SCALE_SUFFIX


def block_size_from_config(config: dict[str, Any]) -> tuple[int, int] | None:
    """(rows, cols) block size of an FP8 checkpoint, or None when it is not FP8-quantized."""
    qc = config.get("quantization_config") or {}
    if qc.get("quant_method") != "fp8":
        return None
    block = qc.get("weight_block_size") or DEFAULT_BLOCK
    return int(block[0]), int(block[1])


def _expected_scale_shape(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    return math.ceil(shape[0] / block[0]), math.ceil(shape[1] / block[1])


def dequant_fp8_block(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    block: tuple[int, int] = DEFAULT_BLOCK,
    name: str = "weight",
) -> torch.Tensor:
    """Dequantize a block-quantized 2-D weight to float32: ``w[i, j] * scale_inv[i//bo, j//bi]``."""
    if weight.dim() != 2 or scale_inv.dim() != 2:
        raise WeightsError(
            f"{name}: FP8 block dequantization needs 2-D weight and scale, got "
            f"{tuple(weight.shape)} and {tuple(scale_inv.shape)}"
        )
    bo, bi = block
    out_f, in_f = weight.shape
    expected = _expected_scale_shape((out_f, in_f), block)
    if tuple(scale_inv.shape) != expected:
        raise WeightsError(
            f"{name}: scale_inv has shape {tuple(scale_inv.shape)}, expected {expected} for a "
            f"{out_f}x{in_f} weight in {bo}x{bi} blocks"
        )
    scale = scale_inv.to(torch.float32)
    scale = scale.repeat_interleave(bo, dim=0)[:out_f].repeat_interleave(bi, dim=1)[:, :in_f]
    return weight.to(torch.float32) * scale


def quantize_fp8_block(
    weight: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-quantize a 2-D weight the way DeepSeek-V3 does: (float8_e4m3fn weight, scale_inv).

    Each block's scale_inv is ``max|block| / 448`` so the block's largest element maps to
    the largest finite FP8 value. Used to build synthetic FP8 checkpoints and in tests.
    """
    if weight.dim() != 2:
        raise ValueError(f"FP8 block quantization needs a 2-D weight, got {tuple(weight.shape)}")
    bo, bi = block
    out_f, in_f = weight.shape
    so, si = _expected_scale_shape((out_f, in_f), block)
    w = weight.to(torch.float32)
    padded = torch.zeros(so * bo, si * bi, dtype=torch.float32)
    padded[:out_f, :in_f] = w
    blocks = padded.view(so, bo, si, bi)
    amax = blocks.abs().amax(dim=(1, 3))
    scale_inv = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (blocks / scale_inv[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    q = q.view(so * bo, si * bi)[:out_f, :in_f].to(torch.float8_e4m3fn)
    return q.contiguous(), scale_inv

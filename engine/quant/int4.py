"""INT4 symmetric grouped quantization (groups along the reduction dim, two values per byte)."""

from __future__ import annotations

import torch

GROUP_SIZES = (32, 64)


def quantize_int4(weight: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``weight[N, K]`` to 4 bits with one float32 scale per ``group_size`` inputs.

    Symmetric: ``scale = max|w_group| / 7``, ``q = round(w / scale)`` clamped to [-8, 7],
    stored as ``q + 8`` (0..15). Element ``2j`` of a row goes in the low nibble of byte
    ``j``, element ``2j + 1`` in its high nibble. Returns ``(packed uint8 [N, K // 2],
    scale float32 [N, K // group_size])``.
    """
    if group_size not in GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {GROUP_SIZES}, got {group_size}")
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"reduction dim {k} is not a multiple of the int4 group size {group_size}")
    w = weight.to(torch.float32).reshape(n, k // group_size, group_size)
    amax = w.abs().amax(dim=2, keepdim=True)
    scale = torch.where(amax > 0, amax / 7.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale), -8, 7).to(torch.int16) + 8
    q = q.reshape(n, k // 2, 2).to(torch.uint8)
    packed = q[..., 0] | (q[..., 1] << 4)
    return packed.contiguous(), scale.reshape(n, k // group_size)


def dequantize_int4(
    packed: torch.Tensor,
    scale: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Reference dequantization of :func:`quantize_int4` output back to ``[N, K]``."""
    n, half = packed.shape
    low = (packed & 0x0F).to(torch.int16) - 8
    high = (packed >> 4).to(torch.int16) - 8
    q = torch.stack((low, high), dim=-1).reshape(n, half * 2).to(torch.float32)
    w = q.reshape(n, -1, group_size) * scale.to(torch.float32)[:, :, None]
    return w.reshape(n, half * 2).to(dtype)

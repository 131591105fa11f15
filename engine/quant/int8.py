"""INT8 symmetric per-output-channel quantization of a [out, in] weight matrix."""

from __future__ import annotations

import torch


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``weight[N, K]`` to int8 with one float32 scale per output row.

    Symmetric: ``scale = max|w_row| / 127``, ``q = round(w / scale)`` in [-127, 127].
    Returns ``(q int8 [N, K], scale float32 [N])``; an all-zero row gets scale 1.
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    w = weight.to(torch.float32)
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Reference dequantization: ``q[N, K] * scale[N]`` in ``dtype``."""
    return (q.to(torch.float32) * scale.to(torch.float32)[:, None]).to(dtype)

"""Rotary position embeddings: default and YaRN frequencies, half-split and interleaved layouts."""

from __future__ import annotations

import math

import torch

from engine.models.config import RopeConfig, yarn_mscale


def rope_frequencies(cfg: RopeConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies ``[dim // 2]`` (float32) and the cos/sin scale (YaRN attn factor)."""
    dim = cfg.dim
    pos_freqs = cfg.theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if cfg.kind == "default":
        return 1.0 / pos_freqs, 1.0
    factor = cfg.factor
    attention_factor = cfg.attention_factor
    if attention_factor is None:
        if cfg.mscale and cfg.mscale_all_dim:
            attention_factor = yarn_mscale(factor, cfg.mscale) / yarn_mscale(
                factor, cfg.mscale_all_dim
            )
        else:
            attention_factor = yarn_mscale(factor)

    def correction_dim(rotations: float) -> float:
        orig = cfg.original_max_position_embeddings
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(cfg.theta))

    low, high = correction_dim(cfg.beta_fast), correction_dim(cfg.beta_slow)
    if cfg.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (
        1.0 / pos_freqs
    ) * extrapolation
    return inv_freq, float(attention_factor)


class RotaryEmbedding:
    """cos/sin tables for positions, computed on demand on the model's device."""

    def __init__(self, cfg: RopeConfig, device: torch.device) -> None:
        inv_freq, self.attention_factor = rope_frequencies(cfg)
        self.inv_freq = inv_freq.to(device)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``cos, sin`` of shape ``[T, 1, dim // 2]`` for ``positions[T]``."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        scale = self.attention_factor
        return (freqs.cos() * scale)[:, None, :], (freqs.sin() * scale)[:, None, :]


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool
) -> torch.Tensor:
    """Rotate ``x[T, heads, dim]``; computed in float32, returned in ``x``'s dtype.

    ``interleaved``: pairs are ``(x0, x1), (x2, x3), ...`` (DeepSeek checkpoints); the result
    is laid out de-interleaved (all first members, then all second members), like
    transformers' DeepSeek-V3 code; applying the same permutation to queries and keys leaves
    every dot product unchanged. Otherwise pairs are ``(x_i, x_{i + dim/2})`` (Qwen2).
    """
    xf = x.to(torch.float32)
    if interleaved:
        x1, x2 = xf[..., 0::2], xf[..., 1::2]
    else:
        half = xf.shape[-1] // 2
        x1, x2 = xf[..., :half], xf[..., half:]
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)

"""Qwen2-MoE attention: grouped-query heads, q/k/v bias, RoPE, static KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.models.attention_math import causal_attention
from engine.models.layers import Linear
from engine.models.rope import apply_rope
from engine.runtime.kv_cache import GQALayerCache


@dataclass
class GQAAttention:
    """Multi-head attention with ``num_kv_heads`` shared key/value heads."""

    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    o_proj: Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float

    def __call__(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: GQALayerCache,
        start: int,
    ) -> torch.Tensor:
        """``x[T, H]`` at positions ``start..start+T-1`` -> ``[T, H]``; writes K/V to ``cache``."""
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(t, self.num_kv_heads, self.head_dim)
        q = apply_rope(q, cos, sin, interleaved=False)
        k = apply_rope(k, cos, sin, interleaved=False)
        cache.write(start, k.transpose(0, 1), v.transpose(0, 1))
        end = start + t
        out = causal_attention(
            q.transpose(0, 1), cache.k[:, :end], cache.v[:, :end], self.scale, start
        )
        return self.o_proj(out.transpose(0, 1).reshape(t, self.num_heads * self.head_dim))

    def decode_at(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: GQALayerCache,
        position: torch.Tensor,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """One token ``x[1, H]`` at device ``position[1]``; attends over the first
        ``len(visible)`` cached positions with ``visible`` (keys <= position) as the mask, so
        every shape is fixed and the step can be captured in a CUDA Graph."""
        q = self.q_proj(x).view(1, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(1, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(1, self.num_kv_heads, self.head_dim)
        q = apply_rope(q, cos, sin, interleaved=False)
        k = apply_rope(k, cos, sin, interleaved=False)
        cache.k.index_copy_(1, position, k.transpose(0, 1))
        cache.v.index_copy_(1, position, v.transpose(0, 1))
        window = visible.shape[0]
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1), cache.k[:, :window], cache.v[:, :window],
            attn_mask=visible[None, :], scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )  # fmt: skip
        return self.o_proj(out.transpose(0, 1).reshape(1, self.num_heads * self.head_dim))

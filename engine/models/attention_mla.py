"""DeepSeek multi-head latent attention (MLA): naive and weight-absorbed forms over a latent cache.

The cache holds, per token, the normalized kv latent ``c`` (``kv_lora_rank``) and the roped
shared key ``k_pe``. ``kv_b_proj`` maps ``c`` to each head's ``k_nope`` and ``v``:

- naive: expand ``c`` to per-head keys/values and run ordinary attention (good for prefill);
- absorbed: ``q_nope . (W_k c) = (W_k^T q_nope) . c``, so queries move into latent space,
  attend over ``[c, k_pe]`` directly, and the context is mapped out through ``W_v`` (decode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.models.attention_math import causal_attention, causal_mask
from engine.models.layers import Linear, RMSNorm
from engine.models.rope import apply_rope
from engine.runtime.kv_cache import MLALayerCache

SCORE_BLOCK_BYTES = 256 << 20


@dataclass
class MLAAttention:
    """One layer's MLA; ``q_proj`` is set when ``q_lora_rank`` is null, else ``q_a/q_b``."""

    q_proj: Linear | None
    q_a_proj: Linear | None
    q_a_norm: RMSNorm | None
    q_b_proj: Linear | None
    kv_a_proj: Linear
    kv_a_norm: RMSNorm
    kv_b_proj: Linear
    o_proj: Linear
    num_heads: int
    nope_dim: int
    rope_dim: int
    v_dim: int
    kv_lora_rank: int
    scale: float
    interleaved: bool
    absorbed_prefill: bool = False

    def __call__(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: MLALayerCache,
        start: int,
    ) -> torch.Tensor:
        """``x[T, H]`` at positions ``start..start+T-1`` -> ``[T, H]``; writes the latent cache."""
        t = x.shape[0]
        if self.q_proj is not None:
            q = self.q_proj(x)
        else:
            assert self.q_a_proj is not None and self.q_a_norm is not None
            assert self.q_b_proj is not None
            q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))
        q = q.view(t, self.num_heads, self.nope_dim + self.rope_dim)
        q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_pe = self.kv_a_proj(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_norm(latent)
        q_pe = apply_rope(q_pe, cos, sin, self.interleaved)
        k_pe = apply_rope(k_pe[:, None, :], cos, sin, self.interleaved)[:, 0]
        cache.write(start, latent, k_pe)
        end = start + t
        latents, rope_keys = cache.latent[:end], cache.rope[:end]
        if t == 1 or self.absorbed_prefill:
            out = self.absorbed(q_nope, q_pe, latents, rope_keys, start)
        else:
            out = self.naive(q_nope, q_pe, latents, rope_keys, start)
        return self.o_proj(out.reshape(t, self.num_heads * self.v_dim))

    def naive(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        latents: torch.Tensor,
        rope_keys: torch.Tensor,
        start: int,
    ) -> torch.Tensor:
        """Expand latents to per-head keys/values; returns ``[T, heads, v_dim]``."""
        s = latents.shape[0]
        kv = self.kv_b_proj(latents).view(s, self.num_heads, self.nope_dim + self.v_dim)
        k_nope, values = kv.split([self.nope_dim, self.v_dim], dim=-1)
        k_pe = rope_keys[:, None, :].expand(s, self.num_heads, self.rope_dim)
        keys = torch.cat((k_nope, k_pe), dim=-1)
        query = torch.cat((q_nope, q_pe), dim=-1)
        out = causal_attention(
            query.transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1), self.scale, start
        )
        return out.transpose(0, 1)

    def absorbed(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        latents: torch.Tensor,
        rope_keys: torch.Tensor,
        start: int,
    ) -> torch.Tensor:
        """Attend in latent space (``kv_b_proj`` absorbed); returns ``[T, heads, v_dim]``."""
        t, s = q_nope.shape[0], latents.shape[0]
        w = self.kv_b_proj.weight.view(self.num_heads, self.nope_dim + self.v_dim, -1)
        w_k, w_v = w[:, : self.nope_dim], w[:, self.nope_dim :]
        q_lat = torch.einsum("thd,hdr->htr", q_nope, w_k)
        q_rot = q_pe.transpose(0, 1)
        block = max(1, SCORE_BLOCK_BYTES // (4 * self.num_heads * s))
        outs = []
        for b0 in range(0, t, block):
            b1 = min(t, b0 + block)
            scores = q_lat[:, b0:b1] @ latents.T + q_rot[:, b0:b1] @ rope_keys.T
            scores = scores.to(torch.float32) * self.scale
            if b1 - b0 > 1 or start + b0 < s - 1:
                mask = causal_mask(b1 - b0, s, start + b0, scores.device)
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(latents.dtype)
            context = probs @ latents
            outs.append(torch.einsum("htr,hvr->thv", context, w_v))
        return torch.cat(outs, dim=0)

    def decode_at(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: MLALayerCache,
        position: torch.Tensor,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """One token at device ``position[1]`` in the weight-absorbed form over the first
        ``len(visible)`` cached positions, masked by ``visible`` (fixed shapes:
        graph-capturable)."""
        if self.q_proj is not None:
            q = self.q_proj(x)
        else:
            assert self.q_a_proj is not None and self.q_a_norm is not None
            assert self.q_b_proj is not None
            q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))
        q = q.view(1, self.num_heads, self.nope_dim + self.rope_dim)
        q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        latent, k_pe = self.kv_a_proj(x).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        latent = self.kv_a_norm(latent)
        q_pe = apply_rope(q_pe, cos, sin, self.interleaved)
        k_pe = apply_rope(k_pe[:, None, :], cos, sin, self.interleaved)[:, 0]
        cache.latent.index_copy_(0, position, latent)
        cache.rope.index_copy_(0, position, k_pe)
        w = self.kv_b_proj.weight.view(self.num_heads, self.nope_dim + self.v_dim, -1)
        w_k, w_v = w[:, : self.nope_dim], w[:, self.nope_dim :]
        q_lat = torch.einsum("thd,hdr->htr", q_nope, w_k)
        window = visible.shape[0]
        latents, rope_keys = cache.latent[:window], cache.rope[:window]
        scores = q_lat @ latents.T + q_pe.transpose(0, 1) @ rope_keys.T
        scores = (scores.to(torch.float32) * self.scale).masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(cache.latent.dtype)
        out = torch.einsum("htr,hvr->thv", probs @ latents, w_v)
        return self.o_proj(out.reshape(1, self.num_heads * self.v_dim))

"""Causal scaled-dot-product attention over a cache prefix, for queries at an offset."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_mask(q_len: int, kv_len: int, offset: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[q_len, kv_len]``: query ``i`` (at position ``offset + i``) sees keys ``<= it``."""
    keys = torch.arange(kv_len, device=device)
    queries = torch.arange(q_len, device=device) + offset
    return keys[None, :] <= queries[:, None]


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, offset: int
) -> torch.Tensor:
    """``q[H, T, d]`` attends causally to ``k[Hkv, S, d]``/``v[Hkv, S, dv]`` -> ``[H, T, dv]``.

    Query ``i`` sits at position ``offset + i``; ``S = offset + T``. Grouped-query heads are
    shared by consecutive query heads (``H / Hkv`` each).
    """
    t, s = q.shape[1], k.shape[1]
    gqa = q.shape[0] != k.shape[0]
    if t == 1:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if offset == 0 and t == s:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    mask = causal_mask(t, s, offset, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)

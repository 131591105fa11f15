"""Static, preallocated KV caches: per-head K/V for GQA, latent + rope key for MLA."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import EngineError


@dataclass
class GQALayerCache:
    """Keys and values of one layer: ``k``/``v`` are ``[kv_heads, max_seq, head_dim]``."""

    k: torch.Tensor
    v: torch.Tensor

    def write(self, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``k``/``v`` ``[kv_heads, T, head_dim]`` at positions ``start..start+T-1``."""
        end = start + k.shape[1]
        self.k[:, start:end] = k
        self.v[:, start:end] = v


@dataclass
class MLALayerCache:
    """One MLA layer: normalized kv latent ``[max_seq, kv_lora_rank]`` and the roped shared
    key ``[max_seq, qk_rope_head_dim]``, per token (the weight-absorbed form's whole state)."""

    latent: torch.Tensor
    rope: torch.Tensor

    def write(self, start: int, latent: torch.Tensor, rope: torch.Tensor) -> None:
        """Store ``latent[T, r]`` and ``rope[T, d]`` at positions ``start..start+T-1``."""
        end = start + latent.shape[0]
        self.latent[start:end] = latent
        self.rope[start:end] = rope


class KVCache:
    """All layers' caches for one sequence of at most ``max_seq`` tokens.

    ``length`` counts the tokens already stored; the model writes new tokens at ``length``
    and advances it after a forward pass. ``reset()`` starts a new sequence without freeing.
    """

    def __init__(self, layers: list[GQALayerCache | MLALayerCache], max_seq: int) -> None:
        self.layers = layers
        self.max_seq = max_seq
        self.length = 0

    @classmethod
    def for_gqa(
        cls,
        num_layers: int,
        max_seq: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> KVCache:
        """Allocate a GQA cache (Qwen2-MoE)."""
        shape = (kv_heads, max_seq, head_dim)
        layers: list[GQALayerCache | MLALayerCache] = [
            GQALayerCache(
                torch.zeros(shape, dtype=dtype, device=device),
                torch.zeros(shape, dtype=dtype, device=device),
            )
            for _ in range(num_layers)
        ]
        return cls(layers, max_seq)

    @classmethod
    def for_mla(
        cls,
        num_layers: int,
        max_seq: int,
        kv_lora_rank: int,
        rope_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> KVCache:
        """Allocate an MLA cache (DeepSeek-V2/V3)."""
        layers: list[GQALayerCache | MLALayerCache] = [
            MLALayerCache(
                torch.zeros(max_seq, kv_lora_rank, dtype=dtype, device=device),
                torch.zeros(max_seq, rope_dim, dtype=dtype, device=device),
            )
            for _ in range(num_layers)
        ]
        return cls(layers, max_seq)

    def reserve(self, n_tokens: int) -> int:
        """Check that ``n_tokens`` more fit; return the position they start at."""
        if self.length + n_tokens > self.max_seq:
            raise EngineError(
                f"sequence of {self.length + n_tokens} tokens exceeds the KV cache's max_seq "
                f"{self.max_seq}; raise max_seq"
            )
        return self.length

    def reset(self) -> None:
        """Forget the stored sequence (memory stays allocated)."""
        self.length = 0

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all layers."""
        total = 0
        for layer in self.layers:
            for t in vars(layer).values():
                total += t.numel() * t.element_size()
        return total

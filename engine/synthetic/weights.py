"""Seeded tensor values, generated in fixed row blocks so memory stays at one block per tensor."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from engine.synthetic.layout import TensorSpec

# Elements per generated block; fixed, because each block has its own seed (part of the format).
BLOCK_ELEMENTS = 1 << 22
# Share of each embedding row along the common direction when routing skew is on.
SKEW_EMBED_SHARE = 1.0


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across runs, processes and platforms)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _generator(*parts: object) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(derive_seed(*parts))
    return gen


def zipf_log_popularity(experts: int, exponent: float, seed: int, layer: int) -> torch.Tensor:
    """log p_e with p ~ 1/rank^s over a per-layer seeded permutation of experts (mean 0)."""
    ranks = torch.randperm(experts, generator=_generator(seed, "skew-permutation", layer)) + 1
    logp = -exponent * torch.log(ranks.to(torch.float64))
    return (logp - logp.mean()).to(torch.float32)


@dataclass
class WeightRecipe:
    """What decides the values: the seed and the routing skew (Zipf exponent, 0 = none)."""

    seed: int
    hidden_size: int
    routing_skew: float = 0.0
    _direction: torch.Tensor | None = field(default=None, repr=False)

    @property
    def direction(self) -> torch.Tensor:
        """Unit vector shared by every embedding row when skew is on; routers read along it."""
        if self._direction is None:
            v = torch.randn(self.hidden_size, generator=_generator(self.seed, "skew-direction"))
            self._direction = v / v.norm()
        return self._direction

    def chunks(self, spec: TensorSpec) -> Iterator[memoryview]:
        """The raw little-endian bytes of ``spec``, one row block at a time (no extra copy)."""
        rows = spec.shape[0] if len(spec.shape) > 1 else 1
        cols = math.prod(spec.shape) // rows
        block_rows = max(1, BLOCK_ELEMENTS // max(cols, 1))
        for block, start in enumerate(range(0, rows, block_rows)):
            n = min(block_rows, rows - start)
            data = _to_bytes(self._block(spec, block, start, n, cols), spec.dtype)
            yield data
            del data  # drop this block before the next one is generated

    def _block(self, spec: TensorSpec, block: int, start: int, n: int, cols: int) -> torch.Tensor:
        if spec.init == "ones":
            return torch.ones(n, cols)
        if spec.init == "zeros":
            return torch.zeros(n, cols)
        values = torch.randn(n, cols, generator=_generator(self.seed, spec.name, block))
        values.mul_(spec.std)
        if self.routing_skew > 0 and spec.init == "embed":
            # Every token carries a common component c, so (normalized) hidden states x have
            # x . c/|c| ~ sqrt(share / (1 + share)) * sqrt(H) in every layer.
            values.add_(self.direction, alpha=spec.std * math.sqrt(SKEW_EMBED_SHARE * cols))
        elif self.routing_skew > 0 and spec.init == "router":
            # Router row e gets log p_e * c/|c| / E[x . c/|c|]: a per-expert logit offset log p_e.
            logp = zipf_log_popularity(spec.shape[0], self.routing_skew, self.seed, spec.layer)
            along = math.sqrt(SKEW_EMBED_SHARE / (1.0 + SKEW_EMBED_SHARE) * cols)
            offsets = logp[start : start + n, None] / along
            values.add_(offsets * self.direction[None, :])
        return values


def _to_bytes(values: torch.Tensor, dtype: str) -> memoryview:
    if dtype == "BF16":
        array = values.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2", copy=False)
    elif dtype == "F32":
        array = values.to(torch.float32).numpy().astype("<f4", copy=False)
    else:
        raise ValueError(f"unsupported dtype {dtype}")
    return memoryview(array.reshape(-1)).cast("B")

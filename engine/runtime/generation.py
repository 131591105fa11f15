"""The generation loop: chunked prefill into the static KV cache, then one token per step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from engine.errors import EngineError
from engine.runtime.kv_cache import KVCache
from engine.runtime.sampling import Sampler

if TYPE_CHECKING:
    from engine.models.model import MoECausalLM


def prefill(
    model: MoECausalLM, prompt_ids: Sequence[int], cache: KVCache, chunk_size: int
) -> torch.Tensor:
    """Feed ``prompt_ids`` after the cached tokens in chunks of ``chunk_size``.

    Returns the float32 logits ``[vocab]`` that follow the last prompt token.
    """
    if not prompt_ids:
        raise EngineError("cannot prefill an empty prompt")
    if chunk_size <= 0:
        raise EngineError(f"prefill chunk size must be positive, got {chunk_size}")
    cache.reserve(len(prompt_ids))
    ids = torch.tensor(list(prompt_ids), dtype=torch.long, device=model.device)
    logits = None
    for begin in range(0, len(prompt_ids), chunk_size):
        logits = model.forward(ids[begin : begin + chunk_size], cache)
    assert logits is not None
    return logits


def decode_step(model: MoECausalLM, token: int, cache: KVCache) -> torch.Tensor:
    """Feed one token; return the float32 logits ``[vocab]`` that follow it."""
    return model.forward(torch.tensor([token], dtype=torch.long, device=model.device), cache)


def generate_ids(
    model: MoECausalLM,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    cache: KVCache,
    sampler: Sampler | None = None,
    chunk_size: int = 8192,
    eos_ids: Sequence[int] = (),
    should_stop: Callable[[list[int]], bool] | None = None,
) -> list[int]:
    """Generate up to ``max_new_tokens`` after ``prompt_ids`` (the cache is reset first).

    Stops after an ``eos_ids`` token (kept in the output) or when ``should_stop(new_ids)``
    returns True. Returns the new token ids only.
    """
    sampler = sampler or Sampler()
    cache.reset()
    if max_new_tokens <= 0:
        return []
    cache.reserve(len(prompt_ids) + max_new_tokens - 1)
    logits = prefill(model, prompt_ids, cache, chunk_size)
    new: list[int] = []
    eos = set(eos_ids)
    while True:
        token = sampler(logits)
        new.append(token)
        if token in eos or len(new) >= max_new_tokens:
            break
        if should_stop is not None and should_stop(new):
            break
        logits = decode_step(model, token, cache)
    return new

"""Next-token choice from logits: greedy, or temperature + top-p (nucleus) with a seeded RNG."""

from __future__ import annotations

import torch


class Sampler:
    """Picks token ids from float32 logits ``[vocab]``; temperature <= 0 means greedy."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature = temperature
        self.top_p = top_p
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def __call__(self, logits: torch.Tensor) -> int:
        if self.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.to(torch.float32).cpu() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
            sorted_probs = torch.where(before < self.top_p, sorted_probs, 0.0)
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))

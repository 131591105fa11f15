"""Routers: pick each token's top-k routed experts and their weights, ranked best first.

- Qwen2-MoE: softmax over expert logits, top-k, optional renormalization (norm_topk_prob).
- DeepSeek-V2/V2.5: softmax, ``greedy`` or ``group_limited_greedy`` (keep the topk_group
  groups with the best single expert), then normalize (norm_topk_prob) or scale by
  routed_scaling_factor, as DeepSeek's reference code does.
- DeepSeek-V3: sigmoid scores, choice by score + e_score_correction_bias with ``noaux_tc``
  group selection (groups ranked by the sum of their best two), weights from the plain
  scores, optionally renormalized, then scaled by routed_scaling_factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _group_mask(group_scores: torch.Tensor, topk_group: int, experts: int) -> torch.Tensor:
    """Boolean ``[T, experts]``: True for experts in each token's best ``topk_group`` groups."""
    n_group = group_scores.shape[-1]
    idx = torch.topk(group_scores, k=topk_group, dim=-1).indices
    mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, idx, True)
    return mask[:, :, None].expand(-1, n_group, experts // n_group).reshape(-1, experts)


@dataclass
class SoftmaxTopKRouter:
    """Qwen2-MoE's router (logits in the model dtype, probabilities in float32)."""

    weight: torch.Tensor
    top_k: int
    norm_topk_prob: bool

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[T, H]`` -> ``(expert_ids[T, k] int64, weights[T, k])``."""
        logits = F.linear(x, self.weight)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        weights, ids = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return ids, weights.to(logits.dtype)


@dataclass
class DeepseekV2Router:
    """DeepSeek-V2/V2.5's softmax router (computed in float32)."""

    weight: torch.Tensor
    top_k: int
    method: str
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    norm_topk_prob: bool

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[T, H]`` -> ``(expert_ids[T, k] int64, weights[T, k] float32)``."""
        logits = F.linear(x.to(torch.float32), self.weight.to(torch.float32))
        scores = logits.softmax(dim=-1)
        if self.method == "group_limited_greedy":
            experts = scores.shape[-1]
            groups = scores.view(-1, self.n_group, experts // self.n_group).amax(dim=-1)
            scores = scores.masked_fill(~_group_mask(groups, self.topk_group, experts), 0.0)
        weights, ids = torch.topk(scores, k=self.top_k, dim=-1)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        else:
            weights = weights * self.routed_scaling_factor
        return ids, weights


@dataclass
class DeepseekV3Router:
    """DeepSeek-V3's sigmoid router with the noaux_tc bias-corrected group selection."""

    weight: torch.Tensor
    correction_bias: torch.Tensor
    top_k: int
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    norm_topk_prob: bool

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[T, H]`` -> ``(expert_ids[T, k] int64, weights[T, k] float32)``."""
        logits = F.linear(x.to(torch.float32), self.weight.to(torch.float32))
        scores = logits.sigmoid()
        choice = scores + self.correction_bias.to(torch.float32)
        experts = scores.shape[-1]
        groups = choice.view(-1, self.n_group, experts // self.n_group).topk(2, dim=-1)[0].sum(-1)
        choice = choice.masked_fill(~_group_mask(groups, self.topk_group, experts), float("-inf"))
        ids = torch.topk(choice, k=self.top_k, dim=-1).indices
        weights = scores.gather(1, ids)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return ids, weights * self.routed_scaling_factor

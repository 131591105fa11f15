"""The MoE block: router and shared experts on the model device, routed experts via the hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.experts.runner import ExpertRunner
from engine.models.layers import Linear, SwiGLUMLP

Router = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class MoEBlock:
    """``routed(x) + shared(x)``; Qwen2 gates the shared expert with ``sigmoid(gate(x))``.

    The routed part goes through ``runner`` (the model's ``expert_runner``, see
    engine.experts.runner): it is started right after the router, the shared expert is
    computed on the model device meanwhile, then the routed output is collected and added.
    """

    layer_idx: int
    router: Router
    shared: SwiGLUMLP | None
    shared_gate: Linear | None = None

    def __call__(self, x: torch.Tensor, runner: ExpertRunner) -> torch.Tensor:
        """``x[T, H]`` -> ``[T, H]``."""
        expert_ids, weights = self.router(x)
        runner.begin(self.layer_idx, x, expert_ids, weights)
        shared = None
        if self.shared is not None:
            shared = self.shared(x)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x)) * shared
        out = runner.finish(self.layer_idx)
        return out if shared is None else out + shared

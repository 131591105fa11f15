"""Small building blocks holding loaded tensors: Linear, RMSNorm, the SwiGLU MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Linear:
    """``y = x @ weight.T + bias`` with ``weight[out, in]`` on the model's device."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass
class RMSNorm:
    """RMSNorm as in the reference models: normalize in float32, cast back, then scale."""

    weight: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


@dataclass
class SwiGLUMLP:
    """``down(silu(gate(x)) * up(x))``: dense MLPs and shared experts."""

    gate: Linear
    up: Linear
    down: Linear

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))

"""The WeightSource protocol: a checkpoint seen as Hugging Face-named tensors, loaded one at a time.

Every loader (safetensors directory, GGUF file, synthetic directory) presents the same
view: the model's ``config.json`` as a dict and tensors under the names of the real
Hugging Face checkpoints (``model.layers.3.mlp.experts.7.gate_proj.weight``), dequantized
on request. Model code pulls tensors one by one and moves each to its target device, so
peak host memory stays close to the final weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch


class WeightSource(Protocol):
    """A checkpoint's tensors under Hugging Face names, read lazily."""

    path: Path
    config: dict[str, Any]

    def names(self) -> list[str]:
        """All tensor names available (Hugging Face naming)."""

    def shape(self, name: str) -> tuple[int, ...]:
        """Logical shape of ``name`` without reading its data (raises WeightsError if absent)."""

    def load(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read ``name`` on the CPU, dequantized, cast to ``dtype`` when given."""

    def close(self) -> None:
        """Release open files and maps."""

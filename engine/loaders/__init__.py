"""Checkpoint loaders: a safetensors directory or a GGUF file, seen as one WeightSource."""

from __future__ import annotations

from pathlib import Path

from engine.errors import WeightsError
from engine.loaders.base import WeightSource


def open_weights(path: Path | str) -> WeightSource:
    """Open ``path``: a directory -> SafetensorsSource, a ``*.gguf`` file -> GGUFSource."""
    path = Path(path)
    if path.is_dir():
        from engine.loaders.safetensors_source import SafetensorsSource

        return SafetensorsSource(path)
    if path.is_file() and path.suffix == ".gguf":
        from engine.loaders.gguf_source import GGUFSource

        return GGUFSource(path)
    if not path.exists():
        raise WeightsError(f"model path {path} does not exist")
    raise WeightsError(f"{path} is neither a safetensors directory nor a .gguf file")


__all__ = ["WeightSource", "open_weights"]

"""WeightSource over a Hugging Face safetensors directory (single file or sharded with an index).

Tensors are read one at a time through safetensors' memory map. FP8 (float8_e4m3fn) tensors
that come with a ``<name>_scale_inv`` companion (DeepSeek-V3's block quantization) are
dequantized by engine.loaders.fp8; the companions are hidden from :meth:`names`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from engine.errors import UnsupportedModelError, WeightsError

SCALE_SUFFIX = "_scale_inv"


class SafetensorsSource:
    """The tensors of ``path`` (a directory with config.json and *.safetensors)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        config_path = self.path / "config.json"
        if not config_path.is_file():
            raise WeightsError(f"{config_path} does not exist")
        try:
            self.config: dict[str, Any] = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{config_path} is not valid JSON: {exc}") from None
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise WeightsError(f"no *.safetensors files in {self.path}")
        self._handles: dict[Path, Any] = {}
        self._file_of: dict[str, Path] = {}
        for file in files:
            handle = self._open(file)
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                self._file_of[name] = file
        self._check_index(files)
        self._names = [
            n for n in self._file_of if not (n.endswith(SCALE_SUFFIX) and self._is_scale(n))
        ]

    def _open(self, file: Path) -> Any:
        try:
            handle = safe_open(str(file), framework="pt")
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise WeightsError(f"cannot read safetensors file {file}: {exc}") from None
        self._handles[file] = handle
        return handle

    def _check_index(self, files: list[Path]) -> None:
        index = self.path / "model.safetensors.index.json"
        if not index.is_file():
            return
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        present = {f.name for f in files}
        for name, file in weight_map.items():
            if file not in present:
                raise WeightsError(f"shard {self.path / file} (holding {name!r}) is missing")

    def _is_scale(self, name: str) -> bool:
        return name[: -len(SCALE_SUFFIX)] in self._file_of

    def names(self) -> list[str]:
        return list(self._names)

    def _slice(self, name: str) -> Any:
        file = self._file_of.get(name)
        if file is None:
            raise WeightsError(f"tensor {name!r} is missing from {self.path}")
        return self._handles[file].get_slice(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._slice(name).get_shape())

    def load(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        file = self._file_of.get(name)
        if file is None:
            raise WeightsError(f"tensor {name!r} is missing from {self.path}")
        try:
            tensor = self._handles[file].get_tensor(name)
        except Exception as exc:
            raise WeightsError(f"cannot read tensor {name!r} from {file}: {exc}") from None
        if tensor.dtype == torch.float8_e4m3fn and name + SCALE_SUFFIX in self._file_of:
            tensor = self._dequant_fp8(name, tensor)
        return tensor if dtype is None else tensor.to(dtype)

    def _dequant_fp8(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        try:
            from engine.loaders import fp8
        except ImportError:
            raise UnsupportedModelError(
                f"tensor {name!r} is FP8 block-quantized; FP8 checkpoints are not supported yet"
            ) from None
        block = (self.config.get("quantization_config") or {}).get("weight_block_size")
        block = (int(block[0]), int(block[1])) if block else (128, 128)
        return fp8.dequant_fp8_block(tensor, self.load(name + SCALE_SUFFIX), block)

    def close(self) -> None:
        self._handles.clear()

"""One expert weight matrix in a CPU precision (fp32, bf16, int8, int4), made from BF16 at load."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import EngineError
from engine.quant.int4 import dequantize_int4, quantize_int4
from engine.quant.int8 import dequantize_int8, quantize_int8

PRECISIONS = ("fp32", "bf16", "int8", "int4")


@dataclass(frozen=True)
class QuantizedWeight:
    """A ``[N, K]`` weight in ``precision``: ``data`` (and ``scale`` for int8/int4)."""

    precision: str
    shape: tuple[int, int]
    data: torch.Tensor
    scale: torch.Tensor | None = None
    group_size: int = 0

    def dequantize(self, dtype: torch.dtype) -> torch.Tensor:
        """The reference dense ``[N, K]`` matrix in ``dtype``."""
        if self.precision in ("fp32", "bf16"):
            return self.data.to(dtype)
        assert self.scale is not None
        if self.precision == "int8":
            return dequantize_int8(self.data, self.scale, dtype)
        return dequantize_int4(self.data, self.scale, self.group_size, dtype)

    def rows(self, start: int, end: int, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``start..end-1`` as a dense matrix in ``dtype`` (a view when no conversion)."""
        data = self.data[start:end]
        if self.precision in ("fp32", "bf16"):
            return data.to(dtype)
        assert self.scale is not None
        if self.precision == "int8":
            return dequantize_int8(data, self.scale[start:end], dtype)
        return dequantize_int4(data, self.scale[start:end], self.group_size, dtype)

    @property
    def nbytes(self) -> int:
        """Bytes held by the data and scales."""
        extra = 0 if self.scale is None else self.scale.numel() * self.scale.element_size()
        return self.data.numel() * self.data.element_size() + extra


def quantize_weight(weight: torch.Tensor, precision: str, group_size: int = 32) -> QuantizedWeight:
    """Convert ``weight`` to ``precision``; int8/int4 are quantized from its BF16 rounding.

    The paper quantizes the experts online from the BF16 checkpoint, so int8/int4 start from
    ``weight.to(bfloat16)`` whatever the source dtype is.
    """
    shape = (int(weight.shape[0]), int(weight.shape[1]))
    if precision in ("fp32", "bf16"):
        # The caller owns ``weight`` in process memory (the loader copies out of a mapped
        # checkpoint), so the same dtype is kept without a second copy.
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        return QuantizedWeight(precision, shape, weight.to(dtype).contiguous())
    bf16 = weight.to(torch.bfloat16)
    if precision == "int8":
        q, scale = quantize_int8(bf16)
        return QuantizedWeight("int8", shape, q, scale)
    if precision == "int4":
        packed, scale = quantize_int4(bf16, group_size)
        return QuantizedWeight("int4", shape, packed, scale, group_size)
    raise EngineError(f"unknown expert precision {precision!r}; expected one of {PRECISIONS}")

"""Weight quantization formats for the CPU experts (INT8 per channel, INT4 grouped) and their
reference dequantization."""

from engine.quant.int4 import dequantize_int4, quantize_int4
from engine.quant.int8 import dequantize_int8, quantize_int8
from engine.quant.weights import PRECISIONS, QuantizedWeight, quantize_weight

__all__ = [
    "PRECISIONS",
    "QuantizedWeight",
    "dequantize_int4",
    "dequantize_int8",
    "quantize_int4",
    "quantize_int8",
    "quantize_weight",
]

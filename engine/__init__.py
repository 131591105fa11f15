"""The bundled hybrid engine: model code, loaders, quantization, experts, synthetic models."""

"""The bundled hybrid engine: model code, loaders, quantization, CPU expert backends, synthetic models."""

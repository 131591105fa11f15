"""The bundled hybrid MoE engine, a library usable on its own (it imports no harness code).

Public API (imported lazily, so ``import engine.errors`` stays light):

- :class:`HybridEngine` / :class:`EngineOptions` (engine.api): load a model, prefill,
  decode step by step, generate, score continuations, expert deferral per block.
- :class:`Sampler` (engine.runtime): greedy or temperature + top-p sampling.
- :func:`ensure_synthetic_model` (engine.synthetic): a seeded synthetic model directory.
- :func:`cut_at_stop` (engine.stops): cut generated text at the first stop string.

Inside: model code (engine.models), loaders (engine.loaders: safetensors, GGUF), expert
quantization (engine.quant), CPU expert backends and runners (engine.experts), the C++
kernels (engine.kernels), the runtime (engine.runtime).
"""

from __future__ import annotations

from typing import Any

_PUBLIC = {
    "HybridEngine": "engine.api",
    "EngineOptions": "engine.api",
    "Sampler": "engine.runtime",
    "ensure_synthetic_model": "engine.synthetic",
    "cut_at_stop": "engine.stops",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = sorted(_PUBLIC)

"""The GPU memory budget: non-expert weights + KV cache + expert staging buffers must fit.

Routed experts stay in host memory (as in the paper); what the engine keeps on the GPU is
counted tensor by tensor after loading (:func:`device_bytes` walks the model's objects):

- model-wide weights: embedding, lm_head, final norm, rotary tables;
- per-layer weights: attention, norms, routers, shared experts, dense MLPs;
- the KV cache (allocated for ``max_seq`` tokens, one part per layer);
- the expert streamer's staging slots (two layers' worth of streamed experts).

On a layer slice (``l`` of the model's ``L`` layers) the budget given is the slice's share
of the GPU, ``budget * l / L`` (the harness computes it). The per-layer parts scale with the
layers, but the model-wide parts and the staging slots do not: a full model has them once.
So they are charged ``l / L`` of their size, which makes the check exactly "would the full
model fit the whole GPU": ``per_layer * L / l + model_wide <= budget * L / l``.
GB here are 10^9 bytes. Activation workspace is not counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import EngineError

GB = 1e9


def device_bytes(obj: Any, device: torch.device, seen: set[int] | None = None) -> int:
    """Bytes of the distinct tensor storages on ``device`` reachable from ``obj`` through
    lists, tuples, dicts and the fields of engine objects."""
    seen = set() if seen is None else seen
    total = 0
    stack = [obj]
    visited: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, torch.Tensor):
            if item.device == device:
                storage = item.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif type(item).__module__.startswith("engine."):
            if dataclasses.is_dataclass(item):
                stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
            elif hasattr(item, "__dict__"):
                stack.extend(vars(item).values())
    return total


@dataclass(frozen=True)
class GpuMemoryUse:
    """What the engine holds on the GPU, by kind (bytes), and the layers it is for."""

    model_wide_weights: int
    layer_weights: int
    kv_cache: int
    staging: int
    layers_loaded: int
    layers_total: int

    @property
    def fraction(self) -> float:
        """The loaded share of the model's layers (1.0 unless a layer slice)."""
        return self.layers_loaded / self.layers_total

    @property
    def loaded_bytes(self) -> int:
        """Everything counted, as allocated for the loaded layers."""
        return self.model_wide_weights + self.layer_weights + self.kv_cache + self.staging

    @property
    def share_bytes(self) -> float:
        """The loaded layers' share: per-layer parts in full, model-wide parts pro rata."""
        wide = self.model_wide_weights + self.staging
        return self.layer_weights + self.kv_cache + wide * self.fraction

    @property
    def full_model_bytes(self) -> float:
        """The same parts for all ``layers_total`` layers."""
        return self.share_bytes / self.fraction

    def as_dict(self) -> dict[str, Any]:
        def gb(x: float) -> float:
            return round(x / GB, 6)

        return {
            "model_wide_weights_gb": gb(self.model_wide_weights),
            "layer_weights_gb": gb(self.layer_weights),
            "kv_cache_gb": gb(self.kv_cache),
            "staging_gb": gb(self.staging),
            "layers_loaded": self.layers_loaded,
            "layers_total": self.layers_total,
            "loaded_share_gb": gb(self.share_bytes),
            "full_model_gb": gb(self.full_model_bytes),
        }


def measure_use(
    model: Any, kv_cache_bytes: int, staging_bytes: int, layers_total: int | None
) -> GpuMemoryUse:
    """Count ``model``'s tensors on its device (see the module docstring)."""
    device = model.device
    seen: set[int] = set()
    wide = device_bytes([model.embed, model.lm_head, model.norm, model.rotary], device, seen)
    layers = device_bytes(list(model.layers), device, seen)
    loaded = model.num_layers
    total = loaded if layers_total is None else layers_total
    if total < loaded:
        raise EngineError(
            f"gpu budget: the model has {total} layers in all but {loaded} are loaded"
        )
    return GpuMemoryUse(wide, layers, kv_cache_bytes, staging_bytes, loaded, total)


def check_budget(use: GpuMemoryUse, budget_gb: float) -> None:
    """EngineError naming every number unless ``use``'s share fits ``budget_gb``."""
    if use.share_bytes <= budget_gb * GB:
        return
    slice_note = ""
    if use.layers_loaded < use.layers_total:
        slice_note = (
            f" (a {use.layers_loaded}-of-{use.layers_total}-layer slice: the full model would "
            f"need {use.full_model_bytes / GB:.2f} GB of a "
            f"{budget_gb / use.fraction:.2f} GB GPU; model-wide parts counted "
            f"{use.layers_loaded}/{use.layers_total})"
        )
    raise EngineError(
        f"the GPU memory budget of {budget_gb:.2f} GB is too small: non-expert weights "
        f"{(use.model_wide_weights + use.layer_weights) / GB:.2f} GB (model-wide "
        f"{use.model_wide_weights / GB:.2f} + layers {use.layer_weights / GB:.2f}) + KV cache "
        f"{use.kv_cache / GB:.2f} GB + expert staging {use.staging / GB:.2f} GB count "
        f"{use.share_bytes / GB:.2f} GB{slice_note}; raise gpu_memory_budget_gb, lower "
        "max_seq, or use prefill_placement cpu (no staging buffers)"
    )

"""Place a Hugging Face MoE model Fiddler-style: routed experts on the CPU, the rest on a GPU.

:func:`find_routed_experts` finds the routed-expert modules of a transformers model by
structure, for both layouts transformers has used:

- transformers 5.x: one module per MoE layer whose class name ends in ``Experts``
  (``Qwen2MoeExperts``, ``DeepseekV3Experts``...) holding 3-D ``gate_up_proj``/``down_proj``;
- transformers 4.x (and remote code): an ``nn.ModuleList`` named ``experts`` of small MLPs.

Shared experts (``shared_expert``/``shared_experts``) are not routed and are never matched.
:func:`place_experts_on_cpu` moves every other parameter and buffer to the GPU and hooks the
expert modules so that their inputs cross to the CPU and their outputs come back: activations
cross PCIe once per expert call, as in Fiddler. :func:`placement_summary` reports where
everything ended up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

LAYOUT_FUSED = "fused"  # transformers 5.x: one module holding every expert's weights
LAYOUT_MODULE_LIST = "module_list"  # transformers 4.x: nn.ModuleList of per-expert MLPs
CPU = torch.device("cpu")


@dataclass(frozen=True)
class RoutedExperts:
    """The routed experts of one MoE layer.

    ``units`` are the modules whose forward runs on the CPU: the single fused experts
    module (5.x) or each per-expert MLP (4.x).
    """

    name: str
    layout: str
    units: tuple[nn.Module, ...]

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter of the layer's routed experts."""
        for unit in self.units:
            yield from unit.parameters()


def _is_fused_experts(attr: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return (
        cls.endswith("Experts")
        and "shared" not in cls.lower()
        and "shared" not in attr.lower()
        and any(True for _ in module.parameters())
    )


def find_routed_experts(model: nn.Module) -> list[RoutedExperts]:
    """Return the routed experts of every MoE layer of ``model``, in module order."""
    found: list[RoutedExperts] = []
    claimed: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in claimed):
            continue
        attr = name.rsplit(".", 1)[-1]
        if attr == "experts" and isinstance(module, nn.ModuleList):
            units = tuple(m for m in module if any(True for _ in m.parameters()))
            if units:
                found.append(RoutedExperts(name, LAYOUT_MODULE_LIST, units))
                claimed.append(name)
        elif _is_fused_experts(attr, module):
            found.append(RoutedExperts(name, LAYOUT_FUSED, (module,)))
            claimed.append(name)
    return found


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_move(v, device) for v in value)
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def _inputs_to_cpu(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return _move(args, CPU), _move(kwargs, CPU)


def _output_to(device: torch.device, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    return _move(output, device)


def expert_module_ids(experts: list[RoutedExperts]) -> set[int]:
    """``id()`` of every module inside the routed experts (units and their children)."""
    return {id(m) for group in experts for unit in group.units for m in unit.modules()}


def place_experts_on_cpu(
    model: nn.Module, experts: list[RoutedExperts], device: torch.device
) -> list[RemovableHandle]:
    """Move all but the routed experts to ``device``; hook the experts to run on the CPU.

    Parameters move in place module by module (tied weights stay tied, no second copy of
    the model is made). Expert parameters must already be on the CPU. Returns the hook
    handles, for :func:`remove_hooks`.
    """
    keep = expert_module_ids(experts)
    for group in experts:
        for p in group.parameters():
            if p.device.type != "cpu":
                raise ValueError(f"routed experts {group.name} are on {p.device}, expected cpu")
    for module in model.modules():
        if id(module) not in keep:
            module._apply(lambda t: t.to(device), recurse=False)
    handles: list[RemovableHandle] = []
    if device.type == "cpu":
        return handles
    for group in experts:
        for unit in group.units:
            handles.append(unit.register_forward_pre_hook(_inputs_to_cpu, with_kwargs=True))
            handles.append(unit.register_forward_hook(partial(_output_to, device)))
    return handles


def remove_hooks(handles: list[RemovableHandle]) -> None:
    """Remove hooks added by :func:`place_experts_on_cpu`."""
    for handle in handles:
        handle.remove()
    handles.clear()


def placement_summary(model: nn.Module, experts: list[RoutedExperts]) -> dict[str, Any]:
    """Where the model lives: parameter counts by device, experts vs the rest, per module type."""
    keep = expert_module_ids(experts)
    expert_by_device: dict[str, int] = {}
    other_by_device: dict[str, int] = {}
    by_type: dict[str, set[str]] = {}
    seen: set[int] = set()
    for module in model.modules():
        params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        if not params:
            continue
        bucket = expert_by_device if id(module) in keep else other_by_device
        for p in params:
            seen.add(id(p))
            key = str(p.device)
            bucket[key] = bucket.get(key, 0) + p.numel()
            by_type.setdefault(type(module).__name__, set()).add(key)
    return {
        "moe_layers": len(experts),
        "expert_layout": experts[0].layout if experts else None,
        "expert_params_by_device": expert_by_device,
        "other_params_by_device": other_by_device,
        "module_types_by_device": {k: sorted(v) for k, v in sorted(by_type.items())},
    }

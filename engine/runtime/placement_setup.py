"""Setting up the prefill placement while an engine loads (used by engine.api).

Before the weights are read, :class:`PlacementLoader` refuses a placement this machine
cannot run (gpu_stream/split without a CUDA GPU: EngineUnavailable) and, for any placement
but ``cpu`` on a GPU, creates the expert streamer; :meth:`PlacementLoader.loading_backend`
then hands every layer's stacked experts to the streamer as well as to the CPU backend.
After loading, :meth:`PlacementLoader.attach` allocates the staging buffers, checks the GPU
memory budget (engine.runtime.gpu_budget), calibrates the cost model and wraps the model's
expert runner.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import EngineUnavailable
from engine.experts.backend import ExpertBackend, StackedExperts
from engine.experts.gpu_stream import GpuExpertStreamer
from engine.runtime.calibration import calibrate
from engine.runtime.gpu_budget import check_budget, measure_use
from engine.runtime.placement import PrefillPlacement


class CopyToStreamer(ExpertBackend):
    """A load-time view of a backend that also gives each layer's experts to a streamer."""

    def __init__(self, backend: ExpertBackend, streamer: GpuExpertStreamer) -> None:
        self.backend = backend
        self.streamer = streamer
        self.name = backend.name
        self.precision = backend.precision

    def prepare(self, layer_idx: int, experts: StackedExperts) -> None:
        self.streamer.add_layer(layer_idx, experts)
        self.backend.prepare(layer_idx, experts)

    def submit(self, layer_idx, hidden, expert_ids, weights, out) -> int:  # noqa: ANN001
        return self.backend.submit(layer_idx, hidden, expert_ids, weights, out)

    def sync(self, ticket: int | None = None) -> None:
        self.backend.sync(ticket)

    def num_experts(self, layer_idx: int) -> int:
        return self.backend.num_experts(layer_idx)


class PlacementLoader:
    """The placement part of one ``HybridEngine.load`` (see the module docstring)."""

    def __init__(
        self,
        policy: str,
        device: torch.device,
        precision: str,
        group_size: int,
        budget_gb: float | None = None,
        budget_layers: int | None = None,
    ) -> None:
        self.policy = policy
        self.device = device
        self.budget_gb = budget_gb
        self.budget_layers = budget_layers
        self.unavailable: str | None = None
        self.memory: dict[str, Any] = {}
        on_gpu = device.type == "cuda"
        if policy in ("gpu_stream", "split") and not on_gpu:
            raise EngineUnavailable(
                f"prefill placement {policy!r} streams routed experts to a CUDA GPU, but the "
                f"engine runs on {device} (no CUDA GPU)"
            )
        if policy == "auto" and not on_gpu:
            self.unavailable = f"no CUDA GPU (device {device}): auto runs every prefill on the CPU"
        self.streamer = (
            GpuExpertStreamer(device, precision, group_size) if policy != "cpu" and on_gpu else None
        )

    def loading_backend(self, backend: ExpertBackend) -> ExpertBackend:
        """What load_model should prepare experts with (the backend itself, or a copier)."""
        return backend if self.streamer is None else CopyToStreamer(backend, self.streamer)

    def attach(
        self, model: Any, kv_cache_bytes: int, backend: ExpertBackend, max_tokens: int
    ) -> PrefillPlacement:
        """Staging buffers, budget check, calibration; returns the placement and installs
        its runner around ``model.expert_runner``."""
        streamer = self.streamer
        if streamer is not None:
            streamer.allocate()
        if self.device.type == "cuda":
            staging = 0 if streamer is None else streamer.staging_bytes
            use = measure_use(model, kv_cache_bytes, staging, self.budget_layers)
            self.memory = {"gpu_memory": use.as_dict(), "gpu_memory_budget_gb": self.budget_gb}
            if self.budget_gb is not None:
                check_budget(use, self.budget_gb)
        else:
            self.memory = {"gpu_memory_budget_gb": self.budget_gb,
                           "gpu_memory": "not checked: no GPU"}  # fmt: skip
        from engine.experts.deferral import moe_layer_indices

        layers = moe_layer_indices(model)
        c = model.config

        def measure(cpu: bool):  # noqa: ANN202 - a Calibration
            assert streamer is not None
            return calibrate(
                backend=backend,
                streamer=streamer,
                layer_idx=layers[0],
                hidden_size=c.hidden_size,
                top_k=c.top_k,
                max_tokens=max_tokens,
                dtype=model.dtype,
                cpu=cpu,
            )

        placement = PrefillPlacement(
            self.policy,
            streamer=streamer,
            moe_layers=layers,
            top_k=c.top_k,
            calibrate=measure if streamer is not None and layers else None,
            unavailable=self.unavailable,
        )
        placement.memory = self.memory
        if streamer is not None and layers:
            placement.calibration = measure(self.policy in ("split", "auto"))
        runner = model.expert_runner
        model.expert_runner = placement.wrap(runner, runner in model.runners.values())
        self.streamer = None  # the placement owns it now
        return placement

    def close(self) -> None:
        """Free the streamer when loading failed before :meth:`attach` handed it over."""
        if self.streamer is not None:
            self.streamer.close()
            self.streamer = None

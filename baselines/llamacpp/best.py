"""System ``llamacpp_best``: llama.cpp at its best settings on a GPU host, beside ``llamacpp``.

The paper ran llama.cpp with the artifact's flags (KV cache and attention on the CPU,
``-nkvo 1``; llama-bench's 512-token micro-batch). On a GPU host llama.cpp does far better
on long prompts with the KV cache and attention on the GPU, no mmap (the CPU-resident
expert weights sit in pinned buffers, so op offload copies them at PCIe speed), one
micro-batch per prompt (``n_ubatch`` = prompt length) and op offload on (a large batch's
expert matmuls run on the GPU, the weights copied over). This system is
:class:`~baselines.llamacpp.system.LlamaCppSystem` with those settings as defaults under
the configured options (conf/system/llamacpp_best.yaml), so both configurations are
measured in the same run and labelled apart. Without GPU offload it is NOT RUN: on a CPU
it would only repeat ``llamacpp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baselines.llamacpp.system import LlamaCppConfig, LlamaCppSystem
from experiments.system_api import ModelSpec, SystemUnavailable

# llama.cpp's best settings for prefill with experts in CPU memory (see the module docstring)
BEST_SETTINGS: dict[str, Any] = {
    "kv_on_cpu": False,
    "n_ubatch": None,  # the prompt length
    "use_mmap": False,
    "op_offload": True,
}


def best_options(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`BEST_SETTINGS` under the configured options (an explicit key wins)."""
    return {**BEST_SETTINGS, **dict(cfg or {})}


class LlamaCppBestSystem(LlamaCppSystem):
    """llama.cpp with the best settings on a GPU host (see the module docstring)."""

    name = "llamacpp_best"

    @classmethod
    def check_options(cls, cfg: Mapping[str, Any] | None) -> None:
        LlamaCppConfig.from_mapping(best_options(cfg))

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        super().__init__(best_options(cfg))
        if self.placement.device != "gpu":
            self.close()
            raise SystemUnavailable(
                "llamacpp_best is llama.cpp's best settings on a GPU (KV cache and attention "
                "on the GPU, op offload); without GPU offload it would repeat llamacpp"
            )

    def load(self, model: ModelSpec, precision: str) -> None:
        super().load(model, precision)
        if self.bench is not None:  # llama-bench: one micro-batch per prompt, as the worker
            self.bench.ubatch_is_prompt = self.config.n_ubatch is None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["settings"] = (
            "best: KV cache and attention on the GPU, no mmap, n_ubatch = prompt length, "
            "op offload on (the paper's flags are system llamacpp)"
        )
        return info

"""System ``engine``: the harness's adapter around the bundled engine (engine.api).

It maps the harness's option keys (conf/system/engine.yaml) onto
:class:`engine.EngineOptions`, times the engine's work after device synchronisation,
tokenizes text and cuts generations at stop strings, and turns what cannot run here
(:class:`engine.errors.EngineUnavailable`) into :class:`SystemUnavailable` (NOT RUN).

Options: ``device``, ``dtype``, ``threads`` (expert backend threads), ``cpu_kernel``
(auto | amx | avx512 | portable: the C++ kernels; reference: the PyTorch loop; auto falls
back to it where the kernels did not build), ``scheduling`` (static | dynamic), ``numa``
(shard experts over the machine's NUMA nodes; on a 1-node machine 2 simulated nodes),
``cuda_graph`` (true | false | auto = on a GPU), ``amx_threshold``, ``int8_w8a8``,
``prefill_chunk``, ``max_seq``, ``mla_prefill``, ``int4_group_size``,
``prefill_placement`` (cpu | gpu_stream | split | auto: where long prompts' routed experts
run, engine.runtime.placement) and ``gpu_memory_budget_gb`` (``paper``: the paper's GPU for
the precision, :data:`PAPER_GPUS`; a number: that GPU size in GB; null: no check), scaled
by layers_run/layers_total on a layer slice (:func:`gpu_budget`). A prefill's result
records the placement each MoE layer used.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.api import EngineOptions, HybridEngine
from engine.errors import EngineError, EngineUnavailable
from engine.quant.weights import PRECISIONS
from engine.runtime import Sampler
from engine.stops import cut_at_stop, find_stop
from experiments.hardware import numa_node_count
from experiments.system_api import (
    DecodeTiming,
    ModelSpec,
    PrefillTiming,
    Sampling,
    SystemUnavailable,
    encode_pair,
)

# The paper's GPU by expert precision: an A100 40 GB for full precision, an RTX 4080 16 GB
# for the quantized models (GB = 10^9 bytes, as the engine counts them).
PAPER_GPUS: dict[str, tuple[str, float]] = {
    "bf16": ("A100 40 GB", 40.0),
    "fp32": ("A100 40 GB", 40.0),
    "int8": ("RTX 4080 16 GB", 16.0),
    "int4": ("RTX 4080 16 GB", 16.0),
}


def gpu_budget(
    setting: float | str | None, precision: str, layers_run: int, layers_total: int
) -> tuple[float | None, dict[str, Any]]:
    """The engine's ``gpu_memory_budget_gb`` for the loaded layers, and the facts behind it.

    ``setting``: ``paper`` (:data:`PAPER_GPUS` for ``precision``), a GPU size in GB, or None
    (no check). On a layer slice the GPU is scaled by ``layers_run / layers_total``.
    """
    if setting is None:
        return None, {"gpu_memory_budget": "none (not checked)"}
    if setting == "paper":
        gpu, size = PAPER_GPUS[precision]
        source = f"the paper's GPU for {precision}: {gpu}"
    else:
        size, source = float(setting), f"configured: {float(setting):g} GB"
    run = layers_run if layers_run > 0 else layers_total
    budget = size * run / layers_total
    return budget, {
        "gpu_memory_budget_source": source,
        "gpu_memory_budget_full_gpu_gb": size,
        "gpu_memory_budget_scale": f"{run}/{layers_total} layers",
        "gpu_memory_budget_gb_loaded": round(budget, 3),
    }


@dataclass(frozen=True)
class EngineSystemOptions:
    """The harness keys of system ``engine`` (typed; unknown keys are refused)."""

    device: str = "auto"
    dtype: str = "bfloat16"
    threads: int | None = None
    cpu_kernel: str = "auto"
    scheduling: str | None = None
    numa: bool = False
    cuda_graph: bool | str = "auto"
    amx_threshold: int = 32
    int8_w8a8: bool = False
    spin_us: int | None = None
    prefill_chunk: int = 8192
    max_seq: int = 16384
    mla_prefill: str = "naive"
    int4_group_size: int = 32
    prefill_placement: str = "cpu"
    gpu_memory_budget_gb: float | str | None = None

    @classmethod
    def from_mapping(cls, cfg: dict[str, Any] | None) -> EngineSystemOptions:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg or {}) - known)
        if unknown:
            raise EngineError(f"unknown engine option(s) {unknown}; known: {sorted(known)}")
        options = cls(**(cfg or {}))
        budget = options.gpu_memory_budget_gb
        if (
            budget is not None
            and budget != "paper"
            and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0)
        ):
            raise EngineError(
                f"engine gpu_memory_budget_gb must be 'paper', a size in GB or null: {budget!r}"
            )
        return options

    def engine_options(
        self,
        precision: str,
        budget_gb: float | None = None,
        model_layers: int | None = None,
    ) -> EngineOptions:
        """The engine's own options for experts in ``precision`` (GPU memory budget
        ``budget_gb`` for the loaded layers of a ``model_layers``-layer model)."""
        nodes = numa_node_count()
        return EngineOptions(
            device=self.device,
            dtype=self.dtype,
            precision=precision,
            cpu_kernel=self.cpu_kernel,
            threads=self.threads,
            scheduler=self.scheduling,
            numa_nodes=(nodes if nodes > 1 else 2) if self.numa else 1,
            int4_group_size=self.int4_group_size,
            prefill_chunk=self.prefill_chunk,
            max_seq=self.max_seq,
            mla_prefill=self.mla_prefill,
            cuda_graph=self._cuda_graph(),
            amx_threshold=self.amx_threshold,
            int8_w8a8=self.int8_w8a8,
            spin_us=self.spin_us,
            prefill_placement=self.prefill_placement,
            gpu_memory_budget_gb=budget_gb,
            gpu_budget_model_layers=model_layers,
        )

    def _cuda_graph(self) -> bool:
        """``auto``: decode through a CUDA Graph where the engine runs on a GPU."""
        if self.cuda_graph == "auto":
            import torch

            return self.device != "cpu" and torch.cuda.is_available()
        if not isinstance(self.cuda_graph, bool):
            raise EngineError(f"cuda_graph must be true, false or auto: {self.cuda_graph!r}")
        return self.cuda_graph


@contextmanager
def _unavailable_as_not_run() -> Iterator[None]:
    try:
        yield
    except EngineUnavailable as exc:
        raise SystemUnavailable(str(exc)) from exc


class EngineSystem:
    """System ``engine`` (the experiments' System protocol over :class:`HybridEngine`)."""

    name = "engine"

    @classmethod
    def check_options(cls, cfg: dict[str, Any] | None) -> None:
        """EngineError naming an unknown key or a bad value of ``cfg`` (config time)."""
        EngineSystemOptions.from_mapping(cfg).engine_options("bf16")

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        self.options = EngineSystemOptions.from_mapping(cfg)
        with _unavailable_as_not_run():
            self.options.engine_options("bf16").resolved_device()  # refuse cuda without GPU
        self.engine: HybridEngine | None = None
        self.precision: str | None = None
        self.budget_facts: dict[str, Any] = {}

    @property
    def model(self):  # noqa: ANN201 - engine.models.MoECausalLM
        """The loaded model (tests compare against engine.runtime on it)."""
        return self._ready().model

    def load(self, model: ModelSpec, precision: str) -> None:
        if precision not in PRECISIONS:
            raise SystemUnavailable(
                f"engine experts support precisions {PRECISIONS}, not {precision!r}"
            )
        self.close()
        layers = model.layers_run if model.layers_run > 0 else None
        budget, self.budget_facts = gpu_budget(
            self.options.gpu_memory_budget_gb, precision, model.layers_run, model.layers_total
        )
        options = self.options.engine_options(precision, budget, model.layers_total)
        with _unavailable_as_not_run():
            self.engine = HybridEngine.load(model.path, options, num_layers=layers)
        self.precision = precision

    def _ready(self) -> HybridEngine:
        if self.engine is None:
            raise EngineError("engine: call load() before running the model")
        return self.engine

    def prefill(self, prompt_ids: list[int]) -> PrefillTiming:
        eng = self._ready()
        eng.synchronize()
        t0 = time.perf_counter()
        eng.prefill(prompt_ids)
        eng.synchronize()
        seconds = time.perf_counter() - t0
        eng.cache.reset()
        return PrefillTiming(tokens=len(prompt_ids), seconds=seconds, placement=eng.last_placement)

    def decode(
        self,
        prompt_ids: list[int],
        n_tokens: int,
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> DecodeTiming:
        eng = self._ready()
        with eng.expert_split(immediate_experts, deferred_experts):
            try:
                eng.synchronize()
                t0 = time.perf_counter()
                token = int(eng.prefill(prompt_ids, reserve=n_tokens).argmax())
                eng.synchronize()
                eng.expert_utilization(reset=True)
                t1 = time.perf_counter()
                produced = eng.decode_greedy(token, n_tokens).tolist()  # reading synchronises
                eng.synchronize()
                t2 = time.perf_counter()
                utilization = eng.expert_utilization()
            finally:
                eng.cache.reset()
        tokens = [token, *produced[:-1]][:n_tokens]
        return DecodeTiming(
            prompt_tokens=len(prompt_ids),
            prefill_seconds=t1 - t0,
            decode_tokens=n_tokens,
            decode_seconds=t2 - t1,
            token_ids=tuple(int(t) for t in tokens),
            expert_cpu_util=utilization,
        )

    def generate(self, text: str, sampling: Sampling) -> str:
        eng = self._ready()
        tokenizer = eng.tokenizer
        prompt = tokenizer.encode(text).ids
        if not prompt:
            raise EngineError("engine.generate: the prompt encodes to no tokens")
        stops = tuple(s for s in sampling.stop if s)

        def decoded(ids: list[int]) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=True)

        def should_stop(ids: list[int]) -> bool:
            return bool(stops) and find_stop(decoded(ids), stops) >= 0

        with eng.expert_split(sampling.immediate_experts, sampling.deferred_experts):
            new = eng.generate(
                prompt,
                sampling.max_new_tokens,
                Sampler(sampling.temperature, sampling.top_p, sampling.seed),
                should_stop,
            )
        return cut_at_stop(decoded(new), stops)

    def loglikelihood(
        self,
        context: str,
        continuations: list[str],
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> list[tuple[float, bool]]:
        eng = self._ready()
        if not continuations:
            return []
        tokenizer = eng.tokenizer

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text).ids

        prefix = eng.eos_ids[0] if eng.eos_ids else None
        pairs = [encode_pair(encode, context, c, prefix) for c in continuations]
        with eng.expert_split(immediate_experts, deferred_experts):
            return eng.loglikelihood(pairs[0][0], [cont for _, cont in pairs])

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"system": self.name, "numa": self.options.numa}
        if self.engine is None:
            info.update(vars(self.options))
            return info
        info.update(self.engine.describe())
        info.update(self.budget_facts)
        info["expert_deferral"] = (
            "deferred experts submitted with the immediate ones, added one MoE layer later"
        )
        return info

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        self.precision = None

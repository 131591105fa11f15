"""The engine's public API: load a model, prefill, decode step by step, generate, score.

    from engine import EngineOptions, HybridEngine
    eng = HybridEngine.load("/models/Qwen2-57B-A14B-Instruct",
                            EngineOptions(precision="int8", cpu_kernel="reference"))
    logits = eng.prefill(prompt_ids)             # a new sequence
    logits = eng.decode_step(int(logits.argmax()))
    new_ids = eng.generate(prompt_ids, 64, Sampler(temperature=0.3, top_p=0.95, seed=1))
    with eng.expert_split(immediate=6, deferred=2):   # expert deferral for this block
        ...
    eng.close()

A model is a Hugging Face directory (config.json + safetensors) or a GGUF file; a synthetic
stand-in of any supported architecture is made by :mod:`engine.synthetic`
(``ensure_synthetic_model``). Non-expert weights and the KV cache live on ``device``; the
routed experts live on the CPU in the expert backend chosen by ``cpu_kernel``, which owns
its threads. Nothing here imports the harness.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError, EngineUnavailable
from engine.experts import CPU_KERNELS, make_expert_backend
from engine.experts.deferral import check_expert_split, expert_split, make_runner
from engine.loaders import open_weights
from engine.models import MoECausalLM, load_model
from engine.quant.weights import PRECISIONS
from engine.runtime import KVCache, Sampler, decode_step, generate_ids, prefill
from engine.runtime.cost_model import POLICIES as PLACEMENTS
from engine.runtime.placement import PrefillPlacement
from engine.runtime.placement_setup import PlacementLoader
from engine.runtime.static_decode import StaticDecoder

# How long the expert threads spin for the next task before they sleep. With a GPU, the
# GPU's part of a decode layer (attention, router, copies) lasts a few hundred microseconds:
# spinning through it spares two thread wake-ups per layer. On a CPU-only machine the
# threads would spin against PyTorch's own threads, so they sleep at once (measured on a
# 2-core machine, tiny Qwen2-MoE decode with deferral: 2-3x faster than with 50 us).
HYBRID_SPIN_US = 2000
CPU_SPIN_US = 0
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
SCHEDULERS = ("static", "dynamic")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs a model (every field has a working default).

    ``device``: auto | cpu | cuda[:n] for everything but the routed experts; ``dtype`` of
    non-expert weights and activations; ``precision`` of the routed experts (bf16, int8,
    int4, fp32); ``cpu_kernel``: a C++ kernel method (auto: the best this CPU has; amx,
    avx512, portable) or reference (the PyTorch loop; auto falls back to it where the
    kernels did not build or for fp32 experts); ``threads`` of the expert backend (None:
    its default);
    ``scheduler`` static | dynamic (None: dynamic for the C++ kernels; the reference
    backend has no scheduler) and ``numa_nodes`` (1 = no NUMA sharding) of the C++ backend,
    ``amx_threshold`` (method auto: AMX for experts with at least this many tokens,
    else AVX-512), ``int8_w8a8`` (int8 experts on AMX with int8 activations: faster
    prefill, ~2% error; off: activations stay bf16/int16, within 1e-2) and ``spin_us`` (how
    long idle expert threads spin before sleeping; None: 2 ms with a GPU, 0 without);
    ``int4_group_size`` 32 | 64; ``prefill_chunk`` tokens per prefill forward; ``max_seq``
    KV cache capacity; ``mla_prefill`` naive | absorbed (DeepSeek); ``cuda_graph`` decode
    through a CUDA Graph.

    Prefill placement (engine.runtime.placement): ``prefill_placement`` cpu | gpu_stream |
    split | auto (where each MoE layer's routed experts run for a batch of more than one
    token; decode always runs them on the CPU); ``gpu_memory_budget_gb`` (None: no check)
    that non-expert weights + KV cache + expert staging buffers must fit on the GPU, for
    the loaded layers; ``gpu_budget_model_layers``: the full model's layer count when a
    layer slice is loaded (the budget is then the slice's share; see
    engine.runtime.gpu_budget).
    """

    device: str = "auto"
    dtype: str = "bfloat16"
    precision: str = "bf16"
    cpu_kernel: str = "auto"
    threads: int | None = None
    scheduler: str | None = None
    numa_nodes: int = 1
    amx_threshold: int = 32
    int8_w8a8: bool = False
    spin_us: int | None = None
    int4_group_size: int = 32
    prefill_chunk: int = 8192
    max_seq: int = 16384
    mla_prefill: str = "naive"
    cuda_graph: bool = False
    prefill_placement: str = "cpu"
    gpu_memory_budget_gb: float | None = None
    gpu_budget_model_layers: int | None = None

    def __post_init__(self) -> None:
        checks = (
            ("dtype", self.dtype, tuple(DTYPES)),
            ("precision", self.precision, PRECISIONS),
            ("cpu_kernel", self.cpu_kernel, CPU_KERNELS),
            ("scheduler", self.scheduler, (*SCHEDULERS, None)),
            ("mla_prefill", self.mla_prefill, ("naive", "absorbed")),
            ("int4_group_size", self.int4_group_size, (32, 64)),
            ("prefill_placement", self.prefill_placement, PLACEMENTS),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise EngineError(f"engine {name} must be one of {list(allowed)}, got {value!r}")
        for name in ("prefill_chunk", "max_seq", "numa_nodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EngineError(f"engine {name} must be a positive integer, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise EngineError(f"engine threads must be a positive integer or None: {self.threads}")
        # -- prefill placement: GPU memory budget --
        budget = self.gpu_memory_budget_gb
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0
        ):
            raise EngineError(f"engine gpu_memory_budget_gb must be > 0 or None, got {budget!r}")
        layers = self.gpu_budget_model_layers
        if layers is not None and (
            isinstance(layers, bool) or not isinstance(layers, int) or layers < 1
        ):
            raise EngineError(
                f"engine gpu_budget_model_layers must be a positive integer or None, got {layers!r}"
            )

    def resolved_device(self) -> torch.device:
        """The torch device ``device`` names here (auto: cuda when one is available)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailable("engine device is cuda but no CUDA GPU is available")
        return torch.device(self.device)


class HybridEngine:
    """A loaded model with its KV cache, one sequence at a time (see the module docstring)."""

    def __init__(self, model: MoECausalLM, options: EngineOptions, path: Path) -> None:
        self.model = model
        self.options = options
        self.path = path
        self.cache: KVCache = model.new_cache(options.max_seq)
        self.eos_ids = _eos_ids(model, path)
        self._tokenizer: Any = None
        self._static: StaticDecoder | None = None
        # prefill placement; load() replaces it with the calibrated one
        self.placement = PrefillPlacement(options.prefill_placement)

    @classmethod
    def load(
        cls,
        path: str | Path,
        options: EngineOptions | None = None,
        *,
        num_layers: int | None = None,
    ) -> HybridEngine:
        """Load the first ``num_layers`` decoder layers (all when None) of the model at
        ``path``; EngineUnavailable when the options cannot run on this machine."""
        options = options or EngineOptions()
        device = options.resolved_device()
        if options.cuda_graph and device.type != "cuda":
            raise EngineUnavailable("CUDA Graph decode (+c) needs a CUDA GPU")
        placement = PlacementLoader(  # prefill placement: refuses what cannot run here
            options.prefill_placement,
            device,
            options.precision,
            options.int4_group_size,
            options.gpu_memory_budget_gb,
            options.gpu_budget_model_layers,
        )
        threads = options.threads
        if threads is None and device.type == "cuda" and options.cpu_kernel != "reference":
            # leave one core to the thread driving the GPU and the stream's host functions
            threads = max(1, len(os.sched_getaffinity(0)) - 1)
        backend = make_expert_backend(
            options.cpu_kernel,
            options.precision,
            group_size=options.int4_group_size,
            threads=threads,
            scheduler=options.scheduler
            or ("static" if options.cpu_kernel == "reference" else "dynamic"),
            numa_nodes=options.numa_nodes,
            **(
                {
                    "amx_threshold": options.amx_threshold,
                    "int8_w8a8": options.int8_w8a8,
                    "spin_us": options.spin_us
                    if options.spin_us is not None
                    else (HYBRID_SPIN_US if device.type == "cuda" else CPU_SPIN_US),
                }
                if options.cpu_kernel != "reference"
                else {}
            ),
        )
        source = open_weights(Path(path))
        try:
            model = load_model(
                source,
                expert_backend=placement.loading_backend(backend),
                device=device,
                dtype=DTYPES[options.dtype],
                num_layers=num_layers,
                mla_prefill=options.mla_prefill,
            )
            model.expert_backend = backend  # placement: the streamer's copier was for loading
        except BaseException:
            backend.close()
            placement.close()
            raise
        finally:
            source.close()
        model.max_tokens_per_forward = options.prefill_chunk
        model.expert_runner = make_runner(model, None)
        engine = cls(model, options, Path(path))
        try:  # placement: staging buffers, GPU memory budget, cost model, runner wrapper
            engine.placement = placement.attach(
                model, engine.cache.nbytes, backend, options.prefill_chunk
            )
        except BaseException:
            placement.close()
            engine.close()
            raise
        return engine

    @property
    def config(self):  # noqa: ANN201 - engine.models.ModelConfig
        """The architecture's parsed config.json."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def synchronize(self) -> None:
        """Wait for queued device work (a timer reads the clock after this); an error the
        CPU experts recorded in a stream host function is raised here."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        errors = getattr(self.model.expert_runner, "errors", None)
        if errors is not None and (found := errors()):
            raise EngineError(f"CPU experts failed: {found[0]}")

    @property
    def static_decode(self) -> bool:
        """Whether decoding uses the static, graph-capturable step (CUDA devices)."""
        return self.device.type == "cuda"

    # -- running ----------------------------------------------------------------------------
    def prefill(self, prompt_ids: Sequence[int], reserve: int = 0) -> torch.Tensor:
        """Start a new sequence with ``prompt_ids`` (room for ``reserve`` more tokens);
        float32 logits ``[vocab]`` after its last token."""
        self.cache.reset()
        self.cache.reserve(len(prompt_ids) + reserve)
        self.placement.start_record()  # placement: last_placement describes this prefill
        return prefill(self.model, prompt_ids, self.cache, self.options.prefill_chunk)

    def decode_step(self, token: int) -> torch.Tensor:
        """Append one token to the sequence; float32 logits ``[vocab]`` after it."""
        return decode_step(self.model, token, self.cache)

    def decode_greedy(self, first_token: int, n_tokens: int) -> torch.Tensor:
        """``n_tokens`` greedy steps after the prefilled sequence, feeding ``first_token``
        first: the tokens produced, as a device tensor (read it to synchronise). On a CUDA
        device the steps are static (replayed from a CUDA Graph when ``cuda_graph``);
        elsewhere one :meth:`decode_step` per token."""
        if not self.static_decode:
            out, token = [], first_token
            for _ in range(n_tokens):
                token = int(self.decode_step(token).argmax())
                out.append(token)
            return torch.tensor(out, dtype=torch.long)
        if self._static is None:
            self._static = StaticDecoder(self.model, self.cache, self.options.cuda_graph)
        return self._static.greedy(first_token, n_tokens)

    def generate(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampler: Sampler | None = None,
        should_stop: Callable[[list[int]], bool] | None = None,
    ) -> list[int]:
        """New token ids after ``prompt_ids`` (stops after an EOS id, kept, or when
        ``should_stop(new_ids)``); at most what the KV cache still holds."""
        if not prompt_ids:
            raise EngineError("generate: the prompt has no tokens")
        room = self.cache.max_seq - len(prompt_ids)
        self.cache.reset()
        try:
            return generate_ids(
                self.model,
                prompt_ids,
                min(max_new_tokens, room),
                self.cache,
                sampler or Sampler(),
                self.options.prefill_chunk,
                eos_ids=self.eos_ids,
                should_stop=should_stop,
            )
        finally:
            self.cache.reset()

    def loglikelihood(
        self, context_ids: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[tuple[float, bool]]:
        """For each continuation: the summed log-probability of its tokens after
        ``context_ids`` and whether each is the argmax. The context is prefilled once; each
        continuation runs as one forward after it, then the cache is rewound."""
        if not continuations:
            return []
        model, cache = self.model, self.cache
        out: list[tuple[float, bool]] = []
        try:
            last = self.prefill(context_ids)[None]
            base = cache.length
            for cont in continuations:
                logits = last
                if len(cont) > 1:
                    cache.length = base
                    ids = torch.tensor(list(cont[:-1]), dtype=torch.long, device=model.device)
                    logits = torch.cat([last, model.forward(ids, cache, all_logits=True)])
                out.append(score_continuation(logits, cont) if cont else (0.0, True))
        finally:
            cache.reset()
        return out

    @contextmanager
    def expert_split(self, immediate: int | None, deferred: int = 0) -> Iterator[None]:
        """Run the block with ``immediate`` + ``deferred`` routed experts per token (None +
        0: the model's top-k, no deferral); the previous split is restored afterwards."""
        check_expert_split(self.config.top_k, immediate, deferred)
        with expert_split(self.model, immediate, deferred):
            runner = self.model.expert_runner  # placement: also for this block's prefills
            reusable = runner in self.model.runners.values()
            self.model.expert_runner = self.placement.wrap(runner, reusable)
            yield

    @property
    def last_placement(self) -> str:
        """Where the last :meth:`prefill`'s routed experts ran, e.g. ``gpu_stream``,
        ``split:24/40``, ``auto->cpu``, or ``L0=...;L1-3=...`` when layers differed."""
        return self.placement.summary()

    def expert_utilization(self, reset: bool = False) -> float | None:
        """Busy fraction of the expert threads since the last reset (None for backends that
        do not measure it, e.g. the PyTorch reference)."""
        backend = self.model.expert_backend
        stats = getattr(backend, "cpu_stats", None)
        value = None if stats is None else float(stats().get("utilization", 0.0))
        if reset and hasattr(backend, "reset_stats"):
            backend.reset_stats()
        return value

    # -- text -------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The model's ``tokenizer.json`` (a ``tokenizers.Tokenizer``), loaded on first use."""
        if self._tokenizer is None:
            path = self.path / "tokenizer.json"
            if not path.is_file():
                raise EngineError(f"this model has no tokenizer: {path} does not exist")
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
        return self._tokenizer

    # -- facts ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Placement and build facts: options, devices, the expert backend's own facts."""
        info: dict[str, Any] = asdict(self.options)
        info.update(
            device=str(self.device),
            device_name=(
                torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
            ),
            dtype=self.options.dtype,
            expert_device="cpu",
            precision=self.options.precision,
            layers_loaded=self.model.num_layers,
            decode_step=(
                ("CUDA Graph" if self.options.cuda_graph else "static, eager")
                if self.static_decode
                else "dynamic, eager"
            ),
            expert_runner=type(self.model.expert_runner).__name__,
            architecture=self.config.family,
            kv_cache_bytes=self.cache.nbytes,
            torch=torch.__version__,
        )
        info.update(self.model.expert_backend.describe())
        info["threads"] = info.get("expert_threads", self.options.threads)
        info.update(self.placement.describe())  # placement per layer, cost model, memory
        return info

    def close(self) -> None:
        """Free the weights, the cache and the expert backend's threads."""
        self._static = None
        self.placement.close()
        self.model.close()
        self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _eos_ids(model: MoECausalLM, path: Path) -> tuple[int, ...]:
    eos = set(model.config.eos_token_ids)
    gen = path / "generation_config.json" if path.is_dir() else None
    if gen is not None and gen.is_file():
        value = json.loads(gen.read_text()).get("eos_token_id")
        eos.update(value if isinstance(value, list) else [] if value is None else [value])
    return tuple(sorted(int(e) for e in eos))


def score_continuation(logits: torch.Tensor, cont: Sequence[int]) -> tuple[float, bool]:
    """Sum of log-softmax(``logits[i]``)[``cont[i]``] and whether every ``cont[i]`` is the argmax.

    ``logits[i]`` (float, ``[len(cont), vocab]``) are the logits that predict ``cont[i]``.
    """
    logits = logits.to(torch.float64)
    target = torch.tensor(list(cont), dtype=torch.long, device=logits.device)
    logp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()
    greedy = bool((logits.argmax(dim=-1) == target).all())
    return float(logp), greedy

"""The bundled engine as harness system ``engine``: load, prefill, decode, generate, describe.

Configuration keys (conf/system/engine.yaml; defaults in :data:`DEFAULTS`):
``device`` auto|cpu|cuda, ``dtype`` bfloat16|float16|float32 (non-expert weights and
activations), ``expert_backend`` (reference), ``prefill_chunk`` tokens per prefill forward,
``max_seq`` KV cache capacity (prompt + decode), ``mla_prefill`` naive|absorbed,
``threads`` torch CPU threads (null: leave torch's default), ``int4_group_size`` 32|64.
Ablation switches of Figure 13 (``cpu_kernel``, ``scheduling``, ``numa``, ``cuda_graph``)
accept only what this version implements; any other value raises SystemUnavailable, so
the breakdown records those variants NOT RUN instead of measuring the reference path
under another name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from engine.errors import EngineError
from engine.experts import make_expert_backend
from engine.experts.deferral import set_expert_split
from engine.loaders import open_weights
from engine.models import MoECausalLM, load_model
from engine.runtime import KVCache, Sampler, decode_step, generate_ids, prefill
from experiments.system_api import (
    DecodeTiming,
    ModelSpec,
    PrefillTiming,
    Sampling,
    SystemUnavailable,
    cut_at_stop,
    encode_pair,
)

DEFAULTS: dict[str, Any] = {
    "device": "auto",
    "dtype": "bfloat16",
    "expert_backend": "reference",
    "prefill_chunk": 8192,
    "max_seq": 16384,
    "mla_prefill": "naive",
    "threads": None,
    "int4_group_size": 32,
    "cpu_kernel": "reference",
    "scheduling": "static",
    "numa": False,
    "cuda_graph": False,
}
# Ablation switches: the value this version implements, and what a variant asking for
# another value is missing.
IMPLEMENTED_SWITCHES: dict[str, tuple[Any, str]] = {
    "cpu_kernel": ("reference", "the {value} CPU expert kernel is not implemented yet"),
    "scheduling": ("static", "dynamic expert scheduling is not implemented yet"),
    "numa": (False, "NUMA-aware tensor parallelism is not implemented yet"),
    "cuda_graph": (False, "CUDA Graph decode is not implemented yet"),
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
PRECISIONS = ("bf16", "int8", "int4", "fp32")


class EngineSystem:
    """System ``engine``: the project's model code with routed experts on a CPU backend."""

    name = "engine"

    def __init__(self, cfg: dict[str, Any] | None = None) -> None:
        unknown = sorted(set(cfg or {}) - set(DEFAULTS))
        if unknown:
            raise EngineError(f"unknown engine option(s) {unknown}; known: {sorted(DEFAULTS)}")
        merged = {**DEFAULTS, **(cfg or {})}
        for key, (supported, reason) in IMPLEMENTED_SWITCHES.items():
            if merged[key] != supported:
                raise SystemUnavailable(
                    f"engine {key}={merged[key]}: " + reason.format(value=merged[key])
                )
        self.cfg = merged
        if merged["dtype"] not in DTYPES:
            raise EngineError(
                f"engine dtype must be one of {list(DTYPES)}, got {merged['dtype']!r}"
            )
        if merged["mla_prefill"] not in ("naive", "absorbed"):
            raise EngineError(
                f"mla_prefill must be naive or absorbed, got {merged['mla_prefill']!r}"
            )
        self.device = self._device(str(merged["device"]))
        self.dtype = DTYPES[merged["dtype"]]
        self.prefill_chunk = int(merged["prefill_chunk"])
        self.max_seq = int(merged["max_seq"])
        self.model: MoECausalLM | None = None
        self.cache: KVCache | None = None
        self.spec: ModelSpec | None = None
        self.precision: str | None = None
        self._tokenizer: Any = None
        self._eos: tuple[int, ...] = ()

    @staticmethod
    def _device(name: str) -> torch.device:
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise SystemUnavailable("engine device is cuda but no CUDA GPU is available")
        return torch.device(name)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def load(self, model: ModelSpec, precision: str) -> None:
        if precision not in PRECISIONS:
            raise SystemUnavailable(
                f"engine experts support precisions {PRECISIONS}, not {precision!r}"
            )
        self.close()
        if self.cfg["threads"]:
            torch.set_num_threads(int(self.cfg["threads"]))
        backend = make_expert_backend(
            str(self.cfg["expert_backend"]), precision, int(self.cfg["int4_group_size"])
        )
        source = open_weights(model.path)
        try:
            layers = model.layers_run if model.layers_run > 0 else None
            self.model = load_model(
                source,
                expert_backend=backend,
                device=self.device,
                dtype=self.dtype,
                num_layers=layers,
                mla_prefill=str(self.cfg["mla_prefill"]),
            )
        finally:
            source.close()
        self.cache = self.model.new_cache(self.max_seq)
        self.spec, self.precision = model, precision
        self._eos = self._eos_ids(Path(model.path))

    def _eos_ids(self, path: Path) -> tuple[int, ...]:
        assert self.model is not None
        eos = set(self.model.config.eos_token_ids)
        gen = path / "generation_config.json" if path.is_dir() else None
        if gen is not None and gen.is_file():
            value = json.loads(gen.read_text()).get("eos_token_id")
            eos.update(value if isinstance(value, list) else [] if value is None else [value])
        return tuple(sorted(int(e) for e in eos))

    def _ready(self) -> tuple[MoECausalLM, KVCache]:
        if self.model is None or self.cache is None:
            raise EngineError("engine: call load() before running the model")
        return self.model, self.cache

    def prefill(self, prompt_ids: list[int]) -> PrefillTiming:
        model, cache = self._ready()
        cache.reset()
        self._sync()
        t0 = time.perf_counter()
        prefill(model, prompt_ids, cache, self.prefill_chunk)
        self._sync()
        seconds = time.perf_counter() - t0
        cache.reset()
        return PrefillTiming(tokens=len(prompt_ids), seconds=seconds)

    def decode(
        self,
        prompt_ids: list[int],
        n_tokens: int,
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> DecodeTiming:
        model, cache = self._ready()
        top_k = model.config.top_k
        immediate = top_k if immediate_experts is None else immediate_experts
        if immediate + deferred_experts != top_k:
            raise EngineError(
                f"immediate ({immediate}) + deferred ({deferred_experts}) experts must equal "
                f"the model's top-k ({top_k})"
            )
        set_expert_split(model, immediate, top_k)
        cache.reset()
        cache.reserve(len(prompt_ids) + n_tokens)
        self._sync()
        t0 = time.perf_counter()
        logits = prefill(model, prompt_ids, cache, self.prefill_chunk)
        token = int(torch.argmax(logits))
        self._sync()
        t1 = time.perf_counter()
        tokens = []
        for _ in range(n_tokens):
            tokens.append(token)
            token = int(torch.argmax(decode_step(model, token, cache)))
        self._sync()
        t2 = time.perf_counter()
        cache.reset()
        return DecodeTiming(
            prompt_tokens=len(prompt_ids),
            prefill_seconds=t1 - t0,
            decode_tokens=n_tokens,
            decode_seconds=t2 - t1,
            token_ids=tuple(tokens),
        )

    def _tokenizer_for(self) -> Any:
        if self._tokenizer is None:
            assert self.spec is not None
            path = Path(self.spec.path) / "tokenizer.json"
            if not path.is_file():
                raise EngineError(f"engine.generate needs {path}, which does not exist")
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
        return self._tokenizer

    @contextmanager
    def _experts(self, immediate: int | None, deferred: int) -> Iterator[MoECausalLM]:
        """Run the block with the model's expert runner set to the immediate+deferred split
        of its top-k (None+0: all immediate), then restore the previous runner."""
        model, _ = self._ready()
        top_k = model.config.top_k
        now = top_k - deferred if immediate is None else immediate
        if deferred < 0 or now + deferred != top_k:
            raise EngineError(
                f"immediate ({now}) + deferred ({deferred}) experts must equal the model's "
                f"top-k ({top_k})"
            )
        before = model.expert_runner
        set_expert_split(model, now, top_k)
        try:
            yield model
        finally:
            model.expert_runner = before

    def generate(self, text: str, sampling: Sampling) -> str:
        with self._experts(sampling.immediate_experts, sampling.deferred_experts):
            return self._generate(text, sampling)

    def _generate(self, text: str, sampling: Sampling) -> str:
        model, cache = self._ready()
        tokenizer = self._tokenizer_for()
        prompt = tokenizer.encode(text).ids
        if not prompt:
            raise EngineError("engine.generate: the prompt encodes to no tokens")
        cache.reset()
        cache.reserve(len(prompt) + 1)
        stops = tuple(s for s in sampling.stop if s)

        def decoded(ids: Sequence[int]) -> str:
            return tokenizer.decode(list(ids), skip_special_tokens=True)

        def should_stop(ids: list[int]) -> bool:
            return bool(stops) and any(s in decoded(ids) for s in stops)

        new = generate_ids(
            model,
            prompt,
            min(sampling.max_new_tokens, cache.max_seq - len(prompt)),
            cache,
            Sampler(sampling.temperature, sampling.top_p, sampling.seed),
            self.prefill_chunk,
            eos_ids=self._eos,
            should_stop=should_stop,
        )
        cache.reset()
        return cut_at_stop(decoded(new), stops)

    def loglikelihood(
        self,
        context: str,
        continuations: list[str],
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after ``context`` and whether it is greedy.

        The context is prefilled once; each continuation of more than one token runs as
        one forward after it, then the cache is rewound to the context.
        """
        self._ready()
        if not continuations:
            return []
        tokenizer = self._tokenizer_for()

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text).ids

        prefix = self._eos[0] if self._eos else None
        pairs = [encode_pair(encode, context, c, prefix) for c in continuations]
        ctx = pairs[0][0]  # the same for every continuation
        with self._experts(immediate_experts, deferred_experts) as model:
            cache = self._ready()[1]
            out: list[tuple[float, bool]] = []
            try:
                cache.reset()
                last = prefill(model, ctx, cache, self.prefill_chunk)[None]
                base = cache.length
                for _, cont in pairs:
                    logits = last
                    if len(cont) > 1:
                        cache.length = base
                        ids = torch.tensor(cont[:-1], dtype=torch.long, device=model.device)
                        rest = model.forward(ids, cache, all_logits=True)
                        logits = torch.cat([last, rest])
                    out.append(score_continuation(logits, cont) if cont else (0.0, True))
            finally:
                cache.reset()
            return out

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "system": self.name,
            "device": str(self.device),
            "device_name": (
                torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
            ),
            "dtype": self.cfg["dtype"],
            "expert_backend": self.cfg["expert_backend"],
            "expert_device": "cpu",
            "expert_deferral": "synchronous: deferred experts computed at once, added one MoE "
            "layer later (no CPU/GPU overlap yet)",
            "precision": self.precision,
            "prefill_chunk": self.prefill_chunk,
            "max_seq": self.max_seq,
            "mla_prefill": self.cfg["mla_prefill"],
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        if self.model is not None:
            info.update(self.model.expert_backend.describe())
            info["layers_loaded"] = self.model.num_layers
            info["architecture"] = self.model.config.family
        if self.cache is not None:
            info["kv_cache_bytes"] = self.cache.nbytes
        return info

    def close(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = None
        self.cache = None
        self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def score_continuation(logits: torch.Tensor, cont: Sequence[int]) -> tuple[float, bool]:
    """Sum of log-softmax(``logits[i]``)[``cont[i]``] and whether every ``cont[i]`` is the argmax.

    ``logits[i]`` (float, ``[len(cont), vocab]``) are the logits that predict ``cont[i]``.
    """
    logits = logits.to(torch.float64)
    target = torch.tensor(list(cont), dtype=torch.long, device=logits.device)
    logp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()
    greedy = bool((logits.argmax(dim=-1) == target).all())
    return float(logp), greedy

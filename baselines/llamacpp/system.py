"""The llama.cpp baseline as harness system ``llamacpp`` (llama-cpp-python, hybrid placement).

The model file is the configured GGUF for the point's precision (``ModelSpec.gguf``, e.g.
from QW2_GGUF_F16) or an export of the safetensors directory (cached beside the model):
full precision (the harness's ``bf16``) is GGUF F16 (BF16 with ``full_precision: bf16``),
``int8`` is Q8_0 and ``int4`` is Q4_0, quantized by llama.cpp itself. Placement as in the
paper's baseline (see :mod:`baselines.llamacpp.placement`). Measurement as llama-bench:
a prefill is one ``llama_decode`` of the whole prompt (n_batch = n_ubatch = prompt length
unless ``n_ubatch`` is set) from an empty KV cache; a decode prefills the prompt, then
runs single-token ``llama_decode`` steps, each fed the argmax of the previous logits. The
harness's real-text prompt ids are used (llama-bench would feed random ids). With
``bench_binary`` a llama-bench executable is run instead (:mod:`baselines.llamacpp.bench`).
``generate`` and ``loglikelihood`` run on the same loaded model with llama.cpp's own
tokenizer and sampler chain (llama-cpp-python's ``Llama`` class cannot take tensor
buffer overrides, and a second load would double the memory).

llama.cpp never runs in the harness's process: its CUDA build crashes on load in a process
that imported numpy first (:mod:`baselines.llamacpp.load_order`), as the harness (numpy,
torch) always has, so the model lives in a torch-free worker process
(:mod:`baselines.llamacpp.worker`, driven through :mod:`baselines.llamacpp.remote`) that
times its own llama.cpp calls; GGUF quantization runs in a child of its own too. A worker
that dies fails the call in flight with a RuntimeError, and the next load starts a new one.

Options (conf/system/llamacpp.yaml): ``device`` auto|cpu|cuda, ``threads`` (null =
physical cores), ``kv_on_cpu``, ``n_ubatch`` (null = prompt length), ``kv_type`` (KV cache
type, -ctk/-ctv), ``flash_attn`` (null = llama.cpp's auto), ``use_mmap``, ``op_offload`` (false =
--no-op-offload: large batches' expert matmuls stay on the CPU), ``extra_buffers`` (weight
repacking, --no-repack when false; null = auto, see :mod:`baselines.llamacpp.placement`),
``cpu_tensors`` (regexes kept in CPU memory on a GPU), ``full_precision`` f16|bf16,
``quantizer`` auto|llama.cpp|gguf-py, ``cache_dir`` (null = beside the model),
``bench_binary``, ``bench_repetitions``, ``slice_prefill_vocab``.

Prefill on a layer slice: llama.cpp computes the last layer's feed-forward (the MoE) only
for the tokens whose logits are wanted (``inp_out_ids``), one in a prefill. In a full
model that saves 1 layer in 28 to 61; in a 1-layer slice it skips every expert. So on a
slice the prefill runs on a timing copy of the same weights with a ``slice_prefill_vocab``
(V) row head and stand-in vocabulary (:func:`baselines.llamacpp.gguf_export.export_gguf_cached`'s
``vocab_limit``), every token's logits wanted (prompt ids taken modulo V): all layers run
in full, as the engine's do, and the V-row head over the prompt costs little. Decode,
generate and loglikelihood run on the full export; the system swaps the loaded file when
the call needs the other one (in the runner's untimed warm-up). A configured GGUF or
``slice_prefill_vocab: null`` runs the prefill as is, and ``describe()`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from baselines.llamacpp.bench import LlamaBench
from baselines.llamacpp.gguf_export import (
    OUT_TYPES,
    QUANTIZERS,
    export_gguf_cached,
    llamacpp_importable,
)
from baselines.llamacpp.gguf_vocab import STAND_IN_MIN_VOCAB
from baselines.llamacpp.placement import INSTALL_HINT, Placement, cpu_features, plan_placement
from baselines.llamacpp.remote import LlamaCppWorker, LlamaCppWorkerDied
from baselines.llamacpp.runtime import KV_TYPES, LlamaCppError
from engine.stops import cut_at_stop
from experiments.system_api import (
    DecodeTiming,
    ModelSpec,
    PrefillTiming,
    Sampling,
    SystemUnavailable,
    require_top_k_routing,
)

# harness precision -> GGUF type ("bf16" is the harness's name for full precision)
PRECISION_TYPES = {"bf16": None, "fp16": "f16", "fp32": "f32", "int8": "q8_0", "int4": "q4_0"}
_IGNORED_KEYS = frozenset({"impl", "name"})


@dataclass(frozen=True)
class LlamaCppConfig:
    """The ``options`` of conf/system/llamacpp.yaml (see the module docstring)."""

    device: str = "auto"
    threads: int | None = None
    kv_on_cpu: bool = True
    n_ubatch: int | None = None
    kv_type: str = "f16"
    flash_attn: bool | None = None
    use_mmap: bool = False
    op_offload: bool = True
    extra_buffers: bool | None = None
    cpu_tensors: tuple[str, ...] = ("exps",)
    full_precision: str = "f16"
    quantizer: str = "auto"
    cache_dir: str | None = None
    bench_binary: str | None = None
    bench_repetitions: int = 3
    slice_prefill_vocab: int | None = 512

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> LlamaCppConfig:
        """Validate the options; unknown keys are errors naming the known ones."""
        values = {k: v for k, v in dict(cfg or {}).items() if k not in _IGNORED_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown llamacpp option(s) {unknown}; known: {sorted(known)}")
        if "cpu_tensors" in values:
            values["cpu_tensors"] = tuple(values["cpu_tensors"] or ())
        conf = cls(**values)
        if conf.full_precision not in ("f16", "bf16"):
            raise ValueError(f"full_precision must be f16 or bf16, got {conf.full_precision!r}")
        if conf.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {conf.quantizer!r}")
        if conf.n_ubatch is not None and (not isinstance(conf.n_ubatch, int) or conf.n_ubatch < 1):
            raise ValueError(f"n_ubatch must be a positive int or null, got {conf.n_ubatch!r}")
        if conf.kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {sorted(KV_TYPES)}, got {conf.kv_type!r}")
        if conf.extra_buffers is not None and not isinstance(conf.extra_buffers, bool):
            raise ValueError(
                f"extra_buffers must be true, false or null, got {conf.extra_buffers!r}"
            )
        if conf.bench_repetitions < 1:
            raise ValueError(f"bench_repetitions must be >= 1, got {conf.bench_repetitions}")
        if conf.slice_prefill_vocab is not None and (
            not isinstance(conf.slice_prefill_vocab, int)
            or conf.slice_prefill_vocab < STAND_IN_MIN_VOCAB
        ):
            raise ValueError(
                f"slice_prefill_vocab must be an int >= {STAND_IN_MIN_VOCAB} (the byte-level "
                "stand-in vocabulary) or null, "
                f"got {conf.slice_prefill_vocab!r}"
            )
        return conf


class LlamaCppSystem:
    """System ``llamacpp``: llama.cpp with routed experts in CPU memory (see module docstring)."""

    name = "llamacpp"

    @classmethod
    def check_options(cls, cfg: Mapping[str, Any] | None) -> None:
        """ValueError naming an unknown key or a bad value of ``cfg`` (config time)."""
        LlamaCppConfig.from_mapping(cfg)

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        self.config = LlamaCppConfig.from_mapping(cfg)
        self.worker: LlamaCppWorker | None = None
        self.model: LlamaCppWorker | None = None  # the worker, once it holds a loaded model
        # what the worker's llama.cpp build is (None: no usable llama-cpp-python); a user's
        # llama-bench needs no llama-cpp-python
        self.probe: dict[str, Any] | None = None
        if llamacpp_importable():  # found without importing it (it must not load here)
            try:
                self.probe = self._worker().probe()
            except SystemUnavailable:
                self.close()
                if not self.config.bench_binary:
                    raise
        elif not self.config.bench_binary:
            raise SystemUnavailable(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        if self.probe is not None:
            self.gpu_offload = bool(self.probe["gpu_offload"])
        else:  # trust the user's llama-bench build to have the GPU backend asked for
            self.gpu_offload = _gpu_present(str(self.config.device))
        self.placement: Placement = plan_placement(
            str(self.config.device),
            self.gpu_offload,
            cpu_tensors=self.config.cpu_tensors,
            kv_on_cpu=self.config.kv_on_cpu,
            threads=self.config.threads,
            use_mmap=self.config.use_mmap,
            op_offload=self.config.op_offload,
            extra_buffers=self.config.extra_buffers,
        )
        self.bench: LlamaBench | None = None
        self.gguf: Path | None = None
        self.gguf_origin = ""
        self.gguf_type = ""
        self.precision = ""
        self.top_k: int | None = None
        self.spec: ModelSpec | None = None
        self.loaded = ""  # which file the worker holds: "full" or "slice_prefill"
        self.slice_gguf: Path | None = None

    # -- loading -----------------------------------------------------------------------------
    def _worker(self) -> LlamaCppWorker:
        """The worker process, started anew when there is none or it has died."""
        if self.worker is None or not self.worker.alive:
            if self.worker is not None:
                self.worker.close()
            self.worker = LlamaCppWorker()
        return self.worker

    def _unload(self) -> None:
        """Free the loaded model (the worker stays up for the next load)."""
        self.model, self.bench = None, None
        if self.worker is not None and self.worker.alive:
            try:
                self.worker.unload()
            except LlamaCppWorkerDied:
                self.close()

    def gguf_type_for(self, precision: str) -> str:
        """The GGUF type that stands for the harness's ``precision``."""
        if precision not in PRECISION_TYPES:
            raise SystemUnavailable(
                f"llamacpp runs precisions {sorted(PRECISION_TYPES)}, not {precision!r}"
            )
        return PRECISION_TYPES[precision] or self.config.full_precision

    def _model_file(self, spec: ModelSpec, precision: str) -> Path:
        out_type = self.gguf_type_for(precision)
        assert out_type in OUT_TYPES
        self.gguf_type = out_type
        configured = spec.gguf.get(precision)
        if configured is not None:
            self.gguf_origin = "configured"
            return Path(configured)
        cache = Path(self.config.cache_dir) if self.config.cache_dir else None
        path = export_gguf_cached(
            Path(spec.path), out_type, cache, progress=False, quantizer=self.config.quantizer
        )
        self.gguf_origin = f"exported from {spec.path}"
        return path

    def load(self, model: ModelSpec, precision: str) -> None:
        """Export (or reuse) the GGUF for ``precision`` and load it with the placement."""
        self._unload()
        self.spec, self.slice_gguf, self.loaded = None, None, ""
        path = self._model_file(model, precision)
        self.top_k = _expert_used_count(path)
        if self.config.bench_binary:
            self.close()
            self.bench = LlamaBench(
                self.config.bench_binary,
                path,
                self.placement,
                repetitions=self.config.bench_repetitions,
                n_ubatch=self.config.n_ubatch,
            )
        else:
            self._load_file(path)
            self.loaded = "full"
        self.gguf, self.precision, self.spec = path, precision, model

    def _load_file(self, path: Path) -> None:
        worker = self._worker()
        self.model = None
        worker.load(
            path, self.placement, self.config.kv_type, self.config.flash_attn, self.config.n_ubatch
        )
        self.model = worker

    def slice_prefill(self) -> bool:
        """Whether prefill runs on the slice timing copy (see the module docstring)."""
        spec = self.spec
        return (
            self.bench is None
            and self.config.slice_prefill_vocab is not None
            and spec is not None
            and spec.is_slice
            and spec.gguf.get(self.precision) is None
        )

    def _use(self, which: str) -> LlamaCppWorker:
        """The worker with the file ``which`` (full | slice_prefill) loaded, swapped if needed."""
        worker = self._ready()
        if which == self.loaded:
            return worker
        if which == "slice_prefill":
            if self.slice_gguf is None:
                assert self.spec is not None
                cache = Path(self.config.cache_dir) if self.config.cache_dir else None
                self.slice_gguf = export_gguf_cached(
                    Path(self.spec.path),
                    self.gguf_type,
                    cache,
                    progress=False,
                    quantizer=self.config.quantizer,
                    vocab_limit=self.config.slice_prefill_vocab,
                )
            path = self.slice_gguf
        else:
            assert self.gguf is not None
            path = self.gguf
        self.loaded = ""
        self._load_file(path)
        self.loaded = which
        return self._ready()

    def _ready(self) -> LlamaCppWorker:
        if self.model is None:
            if self.bench is not None:
                raise SystemUnavailable(
                    "llamacpp with bench_binary only measures prefill and decode; "
                    "generate/loglikelihood need the llama-cpp-python path"
                )
            raise LlamaCppError("llamacpp: call load() before running the model")
        return self.model

    def _check_experts(self, immediate: int | None, deferred: int) -> None:
        require_top_k_routing("llama.cpp", self.top_k, immediate, deferred)

    # -- measuring ---------------------------------------------------------------------------
    def prefill(self, prompt_ids: list[int]) -> PrefillTiming:
        """One ``llama_decode`` of the whole prompt from an empty KV cache, timed."""
        n = len(prompt_ids)
        if n == 0:
            raise ValueError("prefill needs at least one prompt token")
        if self.bench is not None:
            return PrefillTiming(tokens=n, seconds=self.bench.seconds(n, 0))
        if self.slice_prefill():
            vocab = int(self.config.slice_prefill_vocab or 0)
            ids = [int(t) % vocab for t in prompt_ids]
            seconds = self._use("slice_prefill").prefill(ids, all_outputs=True)
        else:
            seconds = self._use("full").prefill(prompt_ids)
        return PrefillTiming(tokens=n, seconds=seconds)

    def decode(
        self,
        prompt_ids: list[int],
        n_tokens: int,
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> DecodeTiming:
        """Prefill the prompt, then ``n_tokens`` greedy single-token ``llama_decode`` steps."""
        self._check_experts(immediate_experts, deferred_experts)
        p = len(prompt_ids)
        if p == 0:
            raise ValueError("decode needs at least one prompt token")
        if self.bench is not None:
            return DecodeTiming(
                prompt_tokens=p,
                prefill_seconds=0.0,
                decode_tokens=n_tokens,
                decode_seconds=self.bench.seconds(0, n_tokens),
            )
        prefill_seconds, decode_seconds, tokens = self._use("full").decode(prompt_ids, n_tokens)
        return DecodeTiming(
            prompt_tokens=p,
            prefill_seconds=prefill_seconds,
            decode_tokens=n_tokens,
            decode_seconds=decode_seconds,
            token_ids=tuple(tokens),
        )

    # -- text --------------------------------------------------------------------------------
    def generate(self, text: str, sampling: Sampling) -> str:
        """Sample a continuation with llama.cpp's samplers (greedy at temperature 0)."""
        self._check_experts(
            getattr(sampling, "immediate_experts", None), getattr(sampling, "deferred_experts", 0)
        )
        stops = tuple(s for s in sampling.stop if s)
        text = self._use("full").generate(
            text,
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=stops,
        )
        return cut_at_stop(text, stops)

    def loglikelihood(
        self,
        context: str,
        continuations: list[str],
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> list[tuple[float, bool]]:
        """Summed log-probability of each continuation after ``context``, and if it is greedy."""
        self._check_experts(immediate_experts, deferred_experts)
        return self._use("full").loglikelihood(context, list(continuations))

    # -- facts -------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The placement llama.cpp actually used, its build and the machine it reported."""
        probe = self.probe or {}
        system_info = str(probe.get("system_info", ""))
        info: dict[str, Any] = {
            "system": self.name,
            "llama_cpp_python": probe.get("version", "not installed"),
            "runner": "llama-bench" if self.bench is not None else "llama-cpp-python",
            "gguf": str(self.gguf) if self.gguf else None,
            "gguf_type": self.gguf_type,
            "gguf_origin": self.gguf_origin,
            "precision": self.precision,
            "placement": self.placement.as_dict(),
            "n_ubatch": self.config.n_ubatch or "prompt length (one micro-batch per prefill)",
            "gpu_offload_supported": self.gpu_offload,
            "system_info": system_info.strip(),
            "cpu_features": cpu_features(system_info),
            "measurement": (
                "prefill: one llama_decode of the prompt from an empty KV cache; decode: "
                "single-token llama_decode steps fed the argmax; real-text prompt ids"
            ),
        }
        info["devices"] = probe.get("devices", "see llama_bench")
        if self.spec is not None and self.spec.is_slice and self.bench is None:
            info["slice_prefill"] = (
                {
                    "vocab": self.config.slice_prefill_vocab,
                    "gguf": str(self.slice_gguf) if self.slice_gguf else "not used yet",
                    "why": "llama.cpp runs the last layer's MoE only for output tokens; "
                    "prefill on the timing copy outputs every token, so all layers run in full",
                }
                if self.slice_prefill()
                else "off: the last layer's MoE ran for the last prompt token only"
            )
        info["loaded_file"] = self.loaded
        if self.model is not None:
            try:
                info.update(self.model.facts())  # model_desc, buffers_mib, tensors_overridden...
            except LlamaCppWorkerDied as exc:
                info["model_facts"] = f"unavailable: {exc}"
        if self.bench is not None:
            info["measurement"] = (
                "llama-bench: random token ids, its own warm-up, repetitions as trials; "
                "decode measured from an empty context (-p 0 -n N)"
            )
            info["llama_bench"] = {**self.bench.facts, "commands": self.bench.commands[-4:]}
        return info

    def close(self) -> None:
        """Free the model and end the worker process (killed if it does not exit in time)."""
        if self.worker is not None:
            self.worker.close()
        self.worker, self.model, self.bench = None, None, None


def _gpu_present(device: str) -> bool:
    """Whether ``device`` means a GPU (``auto``: when torch sees a CUDA device)."""
    if device == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return device != "cpu"


def _expert_used_count(path: Path) -> int | None:
    """``{arch}.expert_used_count`` of a GGUF (the routed top-k), None when unreadable."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
        arch_field = reader.get_field("general.architecture")
        if arch_field is None:
            return None
        arch = arch_field.contents()
        used = reader.get_field(f"{arch}.expert_used_count")
        return int(used.contents()) if used is not None else None
    except Exception:  # noqa: BLE001 - llama.cpp itself reports what is wrong with the file
        return None

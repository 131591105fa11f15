"""The Fiddler baseline (the paper's "base"): a transformers MoE model, routed experts on the CPU.

The model is the Hugging Face transformers implementation (``AutoModelForCausalLM`` over
the checkpoint directory: Qwen2MoeForCausalLM, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM).
Its routed experts run on the CPU as plain PyTorch (transformers' per-expert ``eager`` loop);
attention, routers, shared experts, dense MLPs, norms, embeddings and the LM head run on the
GPU when there is one, else everything runs on the CPU. The model is loaded on the CPU in
the target dtype and the non-expert modules are then moved to the GPU, so host memory peaks
near the model size. Timings are wall time around the work, after a device synchronisation.
"""

from __future__ import annotations

import gc
import importlib.util
import inspect
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from baselines.hf_placement import (
    RoutedExperts,
    find_routed_experts,
    place_experts_on_cpu,
    placement_summary,
    remove_hooks,
)
from engine.errors import UnsupportedModelError, WeightsError
from engine.runtime.sampling import Sampler
from engine.stops import cut_at_stop, find_stop
from experiments.system_api import (
    DecodeTiming,
    ModelSpec,
    PrefillTiming,
    Sampling,
    SystemUnavailable,
    encode_pair,
    require_top_k_routing,
)

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_HAS_EXPERTS_INTERFACE = importlib.util.find_spec("transformers.integrations.moe") is not None
_IGNORED_KEYS = frozenset({"impl", "name"})


@dataclass(frozen=True)
class FiddlerConfig:
    """The ``system`` config section of conf/system/fiddler.yaml.

    ``device``: ``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``;
    ``threads``: torch CPU threads (None keeps torch's default);
    ``experts_implementation``: transformers 5.x experts kernel (``eager`` = Fiddler's
    per-expert PyTorch loop); ``attn_implementation``: ``sdpa`` or ``eager``.
    """

    device: str = "auto"
    threads: int | None = None
    experts_implementation: str = "eager"
    attn_implementation: str = "sdpa"

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> FiddlerConfig:
        """Validate a config mapping; unknown keys are errors (``impl``/``name`` are ignored)."""
        values = {k: v for k, v in dict((cfg or {}).items()).items() if k not in _IGNORED_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fiddler config keys {unknown}; known: {sorted(known)}")
        conf = cls(**values)
        if conf.threads is not None and (not isinstance(conf.threads, int) or conf.threads < 1):
            raise ValueError(f"fiddler threads must be a positive int or null: {conf.threads!r}")
        if not (conf.device in ("auto", "cpu", "cuda") or conf.device.startswith("cuda:")):
            raise ValueError(f"fiddler device must be auto, cpu, cuda or cuda:N: {conf.device!r}")
        return conf


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_model_config(path: Path) -> dict[str, Any]:
    """Read ``path/config.json``; a missing directory or unreadable file raises WeightsError."""
    if not path.is_dir():
        raise WeightsError(f"model directory not found: {path}")
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read model config {config_file}: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise WeightsError(f"{config_file} is not a transformers config (no model_type)")
    return config


class FiddlerSystem:
    """The Fiddler baseline behind the System protocol (see the module docstring)."""

    name = "fiddler"

    @classmethod
    def check_options(cls, cfg: Mapping[str, Any] | None) -> None:
        """ValueError naming an unknown key or a bad value of ``cfg`` (config time)."""
        FiddlerConfig.from_mapping(cfg)

    def __init__(self, cfg: Mapping[str, Any] | None = None) -> None:
        self.config = FiddlerConfig.from_mapping(cfg)
        self._model: Any = None
        self._tokenizer: Any = None
        self._experts: list[RoutedExperts] = []
        self._hooks: list[Any] = []
        self._spec: ModelSpec | None = None
        self._precision = ""
        self._device = torch.device("cpu")
        self._threads_before: int | None = None
        self._forward_kwargs: dict[str, Any] = {}
        self._unexpected_keys = 0

    # -- loading ---------------------------------------------------------------------------

    def _resolve_device(self) -> torch.device:
        want = self.config.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise SystemUnavailable(f"fiddler device {want!r} asked for, but no CUDA GPU is seen")
        device = torch.device(want)
        if device.type == "cuda" and device.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return device

    def load(self, model: ModelSpec, precision: str) -> None:
        """Load ``model`` in ``precision`` (bf16/fp16/fp32: Fiddler runs experts unquantized)."""
        if precision not in PRECISION_DTYPES:
            raise SystemUnavailable(
                f"fiddler runs experts in {sorted(PRECISION_DTYPES)} only, not {precision!r}"
            )
        impl = self.config.experts_implementation
        if not _HAS_EXPERTS_INTERFACE and impl != "eager":
            raise SystemUnavailable(f"experts_implementation={impl!r} needs transformers >= 5")
        device = self._resolve_device()
        path = Path(model.path)
        read_model_config(path)
        self.close()
        if self.config.threads is not None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.config.threads)
        try:
            self._load_placed(path, PRECISION_DTYPES[precision], device)
        except BaseException:
            self.close()
            raise
        self._spec, self._precision = model, precision

    def _load_placed(self, path: Path, dtype: torch.dtype, device: torch.device) -> None:
        """from_pretrained on the CPU, check the tensors, then move all but the experts."""
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "attn_implementation": self.config.attn_implementation,
            "output_loading_info": True,
        }
        if _HAS_EXPERTS_INTERFACE:
            kwargs["experts_implementation"] = self.config.experts_implementation
        try:
            hf_model, info = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        except OSError as exc:
            raise WeightsError(f"cannot load weights from {path}: {exc}") from exc
        except (KeyError, ValueError) as exc:
            raise UnsupportedModelError(f"transformers cannot build {path}: {exc}") from exc
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise WeightsError(f"{path} lacks {len(missing)} tensors, e.g. {missing[:3]}")
        self._unexpected_keys = len(info.get("unexpected_keys") or ())
        hf_model.eval()
        experts = find_routed_experts(hf_model)
        if not experts:
            raise UnsupportedModelError(f"no routed experts found in {type(hf_model).__name__}")
        self._hooks = place_experts_on_cpu(hf_model, experts, device)
        accepted = inspect.signature(hf_model.forward).parameters
        self._forward_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        self._model, self._experts, self._device = hf_model, experts, device

    def _require_model(self) -> Any:
        if self._model is None:
            raise RuntimeError("FiddlerSystem.load() must be called first")
        return self._model

    def _ids(self, prompt_ids: list[int]) -> torch.Tensor:
        if len(prompt_ids) == 0:
            raise ValueError("prompt_ids is empty")
        return torch.tensor([list(prompt_ids)], dtype=torch.long, device=self._device)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self._model.config)
        except TypeError:
            return DynamicCache()

    # -- measured work -----------------------------------------------------------------------

    @torch.inference_mode()
    def forward_logits(self, prompt_ids: list[int]) -> torch.Tensor:
        """Logits of every prompt position, float32 on the CPU, shape (tokens, vocab)."""
        out = self._require_model()(input_ids=self._ids(prompt_ids), use_cache=False)
        return out.logits[0].float().cpu()

    def _check_expert_split(self, immediate_experts: int | None, deferred_experts: int) -> None:
        """Fiddler runs the model's own top-k routing: no deferral, no other split."""
        top_k = getattr(self._require_model().config, "num_experts_per_tok", None)
        require_top_k_routing(self.name, top_k, immediate_experts, deferred_experts)

    @torch.inference_mode()
    def prefill(self, prompt_ids: list[int]) -> PrefillTiming:
        """One forward over the prompt without a KV cache, timed."""
        model, ids = self._require_model(), self._ids(prompt_ids)
        _sync(self._device)
        start = time.perf_counter()
        model(input_ids=ids, use_cache=False, **self._forward_kwargs)
        _sync(self._device)
        return PrefillTiming(tokens=ids.shape[1], seconds=time.perf_counter() - start)

    @torch.inference_mode()
    def decode(
        self,
        prompt_ids: list[int],
        n_tokens: int,
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> DecodeTiming:
        """Prefill into a DynamicCache (timed), then ``n_tokens`` greedy single-token steps.

        Step i feeds token i of the continuation (token 0 is the prefill's argmax) and picks
        token i+1, so ``token_ids`` is the n-token greedy continuation of the prompt and the
        decode loop timed is n single-token forwards.
        """
        model, ids = self._require_model(), self._ids(prompt_ids)
        self._check_expert_split(immediate_experts, deferred_experts)
        if n_tokens < 1:
            raise ValueError(f"n_tokens must be at least 1: {n_tokens}")
        cache = self._new_cache()
        _sync(self._device)
        start = time.perf_counter()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, **self._forward_kwargs)
        token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
        _sync(self._device)
        prefill_seconds = time.perf_counter() - start
        tokens = [token]
        start = time.perf_counter()
        for _ in range(n_tokens):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            tokens.append(token)
        _sync(self._device)
        decode_seconds = time.perf_counter() - start
        token_ids = tuple(int(t) for t in torch.cat(tokens[:n_tokens], dim=1)[0].tolist())
        return DecodeTiming(
            prompt_tokens=ids.shape[1],
            prefill_seconds=prefill_seconds,
            decode_tokens=n_tokens,
            decode_seconds=decode_seconds,
            token_ids=token_ids,
        )

    # -- text generation (accuracy) ---------------------------------------------------------

    def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            assert self._spec is not None
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self._spec.path))
            except (OSError, ValueError) as exc:
                raise WeightsError(f"no tokenizer loads from {self._spec.path}: {exc}") from exc
        return self._tokenizer

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        sources = (
            getattr(self._model.generation_config, "eos_token_id", None),
            getattr(self._model.config, "eos_token_id", None),
            self._get_tokenizer().eos_token_id,
        )
        for value in sources:
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

    @torch.inference_mode()
    def generate(self, text: str, sampling: Sampling) -> str:
        """Continue ``text`` (greedy at temperature 0), stopping at EOS, a stop string or
        ``max_new_tokens``; returns the new text only, cut before the first stop string."""
        model = self._require_model()
        self._check_expert_split(sampling.immediate_experts, sampling.deferred_experts)
        tokenizer = self._get_tokenizer()
        ids = self._ids(tokenizer(text)["input_ids"])
        eos = self._eos_ids()
        sampler = Sampler(sampling.temperature, sampling.top_p, sampling.seed)
        cache = self._new_cache()
        new_ids: list[int] = []
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, **self._forward_kwargs)
        while len(new_ids) < sampling.max_new_tokens:
            token = sampler(out.logits[0, -1])
            if token in eos:
                break
            new_ids.append(token)
            if sampling.stop:
                decoded = tokenizer.decode(new_ids, skip_special_tokens=True)
                if find_stop(decoded, sampling.stop) >= 0:
                    break
            step = torch.tensor([[token]], dtype=torch.long, device=self._device)
            out = model(input_ids=step, past_key_values=cache, use_cache=True)
        return cut_at_stop(tokenizer.decode(new_ids, skip_special_tokens=True), sampling.stop)

    @torch.inference_mode()
    def loglikelihood(
        self,
        context: str,
        continuations: list[str],
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after ``context`` and whether it is greedy
        (one forward over context + continuation per continuation)."""
        self._require_model()
        self._check_expert_split(immediate_experts, deferred_experts)
        tokenizer = self._get_tokenizer()

        def encode(text: str) -> list[int]:
            return list(tokenizer(text)["input_ids"])

        eos = sorted(self._eos_ids())
        out: list[tuple[float, bool]] = []
        for continuation in continuations:
            ctx, cont = encode_pair(encode, context, continuation, eos[0] if eos else None)
            if not cont:
                out.append((0.0, True))
                continue
            logits = self.forward_logits(ctx + cont)[len(ctx) - 1 : -1].double()
            target = torch.tensor(cont, dtype=torch.long)
            logp = torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()
            out.append((float(logp), bool((logits.argmax(dim=-1) == target).all())))
        return out

    # -- provenance and cleanup -------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Placement actually used, dtype, threads and versions, for provenance."""
        import transformers

        facts: dict[str, Any] = {
            "system": self.name,
            "config": asdict(self.config),
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "loaded": self._model is not None,
        }
        if self._model is None:
            return facts
        model = self._model
        impl = getattr(model.config, "_experts_implementation", None) or "eager"
        on_gpu = self._device.type == "cuda"
        facts.update(
            model_path=str(self._spec.path) if self._spec else None,
            architecture=type(model).__name__,
            precision=self._precision,
            dtype=str(model.dtype).removeprefix("torch."),
            device=str(self._device),
            gpu_name=torch.cuda.get_device_name(self._device) if on_gpu else None,
            experts_implementation=impl,
            attn_implementation=getattr(model.config, "_attn_implementation", None),
            expert_hooks=len(self._hooks) // 2,
            unexpected_checkpoint_tensors=self._unexpected_keys,
            **placement_summary(model, self._experts),
        )
        return facts

    def close(self) -> None:
        """Drop the model and tokenizer, free CUDA memory and restore torch's thread count."""
        remove_hooks(self._hooks)
        had_model = self._model is not None
        self._model, self._tokenizer, self._experts, self._spec = None, None, [], None
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        if had_model:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

"""lm-eval's model backend ``hmoe``: any harness System (engine, fiddler, ...) as an lm-eval LM.

``generate_until`` goes through :meth:`System.generate` (greedy, or temperature sampling
with a seed derived per problem and sample), ``loglikelihood`` through
:meth:`System.loglikelihood` (requests sharing a context are scored in one call, so the
context is prefilled once). Both pass the immediate+deferred expert split the adapter was
built with. Build it from a loaded System (the accuracy experiment does), or from lm-eval
model args (``system=engine,model_path=DIR,precision=bf16,deferred_experts=4``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from experiments.errors import HmoeError
from experiments.system_api import Sampling, System

# generation_kwargs keys understood; anything else is an error rather than silently ignored.
GEN_KWARGS = frozenset({"until", "max_gen_toks", "do_sample", "temperature", "top_p", "seed"})


def sample_seed(seed: int, doc_id: int | None, sample: int) -> int:
    """A reproducible seed for sample ``sample`` of problem ``doc_id`` under base ``seed``."""
    digest = hashlib.sha256(f"{seed}:{doc_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sampling_from_gen_kwargs(
    gen_kwargs: Mapping[str, Any],
    *,
    default_max_new_tokens: int,
    max_new_tokens_cap: int | None = None,
    seed: int = 0,
    immediate_experts: int | None = None,
    deferred_experts: int = 0,
) -> Sampling:
    """The :class:`Sampling` for an lm-eval request's generation kwargs.

    ``until`` (str or list) are the stop strings; ``max_gen_toks`` the token budget (capped
    at ``max_new_tokens_cap``); sampling happens when ``temperature`` > 0 and ``do_sample``
    is not false, else decoding is greedy. ``seed`` is used as given (a ``seed`` key of the
    kwargs is the caller's business: see :meth:`HmoeLM.generate_until`).
    """
    unknown = sorted(set(gen_kwargs) - GEN_KWARGS)
    if unknown:
        raise HmoeError(
            f"hmoe LM: unsupported generation_kwargs {unknown}; supported: {sorted(GEN_KWARGS)}"
        )
    until = gen_kwargs.get("until") or ()
    stop = (until,) if isinstance(until, str) else tuple(str(s) for s in until)
    max_new = int(gen_kwargs.get("max_gen_toks") or default_max_new_tokens)
    if max_new_tokens_cap is not None:
        max_new = min(max_new, max_new_tokens_cap)
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    if gen_kwargs.get("do_sample") is False or temperature < 0:
        temperature = 0.0
    return Sampling(
        max_new_tokens=max_new,
        temperature=temperature,
        top_p=float(gen_kwargs.get("top_p") or 1.0),
        seed=seed,
        stop=stop,
        immediate_experts=immediate_experts,
        deferred_experts=deferred_experts,
    )


@register_model("hmoe")
class HmoeLM(LM):
    """A harness System behind lm-eval's LM interface (see the module docstring)."""

    def __init__(
        self,
        system: System | str,
        *,
        immediate_experts: int | str | None = None,
        deferred_experts: int | str = 0,
        seed: int | str = 0,
        max_new_tokens: int | str = 256,
        max_new_tokens_cap: int | str | None = None,
        model_path: str | None = None,
        precision: str = "bf16",
        progress: bool | str = False,
        **system_options: Any,
    ) -> None:
        super().__init__()
        if isinstance(system, str):
            system = build_system(system, model_path, precision, system_options)
        elif model_path is not None or system_options:
            raise HmoeError("hmoe LM: model_path/system options apply only to a system name")
        self.system: System = system
        self.immediate_experts = None if immediate_experts in (None, "") else int(immediate_experts)
        self.deferred_experts = int(deferred_experts)
        self.seed = int(seed)
        self.max_new_tokens = int(max_new_tokens)
        self.max_new_tokens_cap = None if max_new_tokens_cap is None else int(max_new_tokens_cap)
        self.progress = progress in (True, "true", "True", "1")

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> HmoeLM:
        """lm-eval's CLI path: its generic ``--device`` applies unless ``model_args`` name a
        device; ``batch_size``/``max_batch_size`` do not apply (one sequence at a time)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        args = dict(arg_dict)
        if "device" in extra and "device" not in args and isinstance(args.get("system"), str):
            args["device"] = extra["device"]
        return cls(**args)

    # -- lm-eval LM interface ------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """One completion per request; repeated requests (lm-eval ``repeats``) are samples
        0, 1, ... of their problem and get distinct seeds."""
        seen: dict[int, int] = {}
        out: list[str] = []
        for req in tqdm(requests, desc="generate", disable=not self.progress):
            context, gen_kwargs = req.args[0], dict(req.args[1] or {})
            sample = seen.get(id(req), 0)
            seen[id(req)] = sample + 1
            base_seed = int(gen_kwargs.get("seed", self.seed))
            sampling = sampling_from_gen_kwargs(
                gen_kwargs,
                default_max_new_tokens=self.max_new_tokens,
                max_new_tokens_cap=self.max_new_tokens_cap,
                seed=sample_seed(base_seed, req.doc_id, sample),
                immediate_experts=self.immediate_experts,
                deferred_experts=self.deferred_experts,
            )
            text = self.system.generate(context, sampling)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(log-probability, is greedy) per (context, continuation) request."""
        by_context: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            by_context.setdefault(req.args[0], []).append(i)
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for context, indices in tqdm(
            by_context.items(), desc="loglikelihood", disable=not self.progress
        ):
            continuations = [requests[i].args[1] for i in indices]
            scores = self.system.loglikelihood(
                context, continuations, self.immediate_experts, self.deferred_experts
            )
            if len(scores) != len(continuations):
                raise HmoeError(
                    f"{self.system.name}.loglikelihood returned {len(scores)} scores for "
                    f"{len(continuations)} continuations"
                )
            for i, continuation, (logprob, greedy) in zip(
                indices, continuations, scores, strict=True
            ):
                results[i] = (float(logprob), bool(greedy))
                self.cache_hook.add_partial("loglikelihood", (context, continuation), results[i])
        return results

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        raise NotImplementedError(
            "hmoe LM: loglikelihood_rolling (perplexity tasks) is not supported; the "
            "harness's tasks need only generate_until and loglikelihood"
        )

    def get_model_info(self) -> dict[str, Any]:
        """Recorded by lm-eval in its results' config."""
        return {
            "hmoe_system": self.system.name,
            "immediate_experts": self.immediate_experts,
            "deferred_experts": self.deferred_experts,
            "seed": self.seed,
        }


def build_system(
    name: str, model_path: str | None, precision: str, options: Mapping[str, Any]
) -> System:
    """Construct and load the harness system ``name`` (engine, fiddler, llamacpp) on the
    checkpoint directory ``model_path``, for lm-eval model args."""
    from engine.registry import RegistryError
    from experiments.system_api import ModelSpec, system_class

    if not model_path:
        raise HmoeError("hmoe LM: model_path=DIR is needed with a system name")
    try:
        cls = system_class(name)
    except RegistryError as exc:
        raise HmoeError(f"hmoe LM: {exc}") from exc
    path = Path(model_path).expanduser()
    config = _read_config(path)
    layers = int(config.get("num_hidden_layers", 0))
    spec = ModelSpec(
        key=path.name,
        paper_model="",
        name=path.name,
        architecture=str(config.get("model_type", "")),
        path=path,
        source=str(path),
        synthetic=False,
        layers_run=layers,
        layers_total=layers,
    )
    system = cls(dict(options))
    system.load(spec, precision)
    return system


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise HmoeError(f"hmoe LM: cannot read {path / 'config.json'}: {exc}") from exc
    if not isinstance(data, dict):
        raise HmoeError(f"hmoe LM: {path / 'config.json'} is not a JSON object")
    return data

"""The System protocol every measured system implements, and the registry that finds them.

The experiment code only ever talks to a :class:`System`; it never knows whether it runs
the bundled engine, the Fiddler baseline or llama.cpp. Systems are registered in
:data:`SYSTEMS` by name (``conf/system/<name>.yaml`` holds their options) as lazy
``"module:Class"`` strings, so a system whose optional dependency is missing fails with
:class:`SystemUnavailable` (recorded as NOT RUN) instead of breaking the whole run. A new
system is one module implementing :class:`System`, one entry here and one YAML file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from engine.registry import MissingDependency, Registry


class SystemUnavailable(RuntimeError):
    """The system cannot run here (not implemented yet, dependency missing, no GPU...).

    The runner records every point of such a system as ``not_run`` with this message.
    """


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: where its files are and what it stands for.

    ``path`` is a Hugging Face-format directory (config.json, *.safetensors,
    tokenizer.json). ``gguf`` maps a precision name (``fp16``/``bf16``/``int8``/``int4``)
    to a GGUF file when one was configured. ``paper_model`` is the paper's key
    (qw2/ds2/ds3) this model stands for in figures; tiny models stand in for the real one.
    """

    key: str
    paper_model: str
    name: str
    architecture: str
    path: Path
    source: str
    synthetic: bool
    layers_run: int
    layers_total: int
    gguf: dict[str, Path] = field(default_factory=dict)

    @property
    def is_slice(self) -> bool:
        """True when only the first ``layers_run`` of ``layers_total`` layers exist."""
        return self.layers_run < self.layers_total


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters for :meth:`System.generate` (temperature 0 = greedy).

    ``immediate_experts``/``deferred_experts`` split each token's routed top-k as in
    :meth:`System.decode` (None/0 = the model's own top-k, no deferral).
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    immediate_experts: int | None = None
    deferred_experts: int = 0


@dataclass(frozen=True)
class PrefillTiming:
    """One prefill forward: seconds of wall time for ``tokens`` prompt tokens; ``placement``:
    where the routed experts ran per MoE layer, when the system reports it (engine)."""

    tokens: int
    seconds: float
    placement: str | None = None


@dataclass(frozen=True)
class DecodeTiming:
    """One decode run: the prompt's prefill time and the decode loop's time and tokens."""

    prompt_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float
    token_ids: tuple[int, ...] = ()
    expert_cpu_util: float | None = None  # busy fraction of the CPU expert threads, if known


@runtime_checkable
class System(Protocol):
    """What the harness needs from a system under test.

    Timings are measured by the system itself around the work it does, after any
    device synchronisation, so that asynchronous GPU work is counted.
    """

    name: str

    def load(self, model: ModelSpec, precision: str) -> None:
        """Load ``model`` with its routed experts in ``precision`` (bf16, int8, ...)."""

    def prefill(self, prompt_ids: list[int]) -> PrefillTiming:
        """One forward pass over the whole prompt (no KV cache kept afterwards)."""

    def decode(
        self,
        prompt_ids: list[int],
        n_tokens: int,
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> DecodeTiming:
        """Prefill ``prompt_ids``, then ``n_tokens`` greedy single-token steps.

        ``immediate_experts``/``deferred_experts`` split each token's routed top-k
        (expert deferral); systems without deferral raise :class:`SystemUnavailable`
        when asked for ``deferred_experts > 0``.
        """

    def generate(self, text: str, sampling: Sampling) -> str:
        """Generate a continuation of ``text`` (the text alone, prompt excluded)."""

    def loglikelihood(
        self,
        context: str,
        continuations: list[str],
        immediate_experts: int | None = None,
        deferred_experts: int = 0,
    ) -> list[tuple[float, bool]]:
        """For each continuation: the summed log-probability of its tokens after ``context``,
        and whether greedy decoding from ``context`` would produce exactly those tokens.

        The continuation's tokens are those that ``context + continuation`` encodes to after
        the tokens of ``context`` (lm-eval's convention); the expert split is as in decode.
        """

    def describe(self) -> dict[str, Any]:
        """Placement and build facts for provenance (devices, threads, versions)."""

    def close(self) -> None:
        """Free the model and any device memory."""


def require_top_k_routing(
    system: str, top_k: int | None, immediate: int | None, deferred: int
) -> None:
    """SystemUnavailable unless the split asks for the model's plain top-k routing: for
    systems without expert deferral (the baselines)."""
    if deferred and deferred > 0:
        raise SystemUnavailable(f"{system} has no expert deferral (deferred_experts > 0)")
    if immediate is not None and top_k is not None and immediate != top_k:
        raise SystemUnavailable(
            f"{system} runs the model's top-{top_k} routing, not {immediate} experts"
        )


def encode_pair(
    encode: Callable[[str], list[int]],
    context: str,
    continuation: str,
    prefix_id: int | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of ``context`` and of ``continuation`` after it, lm-eval's way.

    Trailing whitespace of the context moves to the continuation; the continuation's ids
    are those that ``context + continuation`` encodes to after the context's ids (so a
    token merging across the boundary is scored as the model would see it). An empty
    context becomes ``[prefix_id]`` (an end-of-text token) and the continuation is encoded
    alone.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ctx = list(encode(context)) if context else []
    if not ctx:
        if prefix_id is None:
            raise ValueError("an empty context needs a prefix token (the model has no EOS id)")
        return [prefix_id], list(encode(continuation))
    whole = list(encode(context + continuation))
    return ctx, whole[len(ctx) :]


SYSTEMS = Registry(
    "system",
    {
        "engine": "experiments.engine_system:EngineSystem",
        "fiddler": "baselines.fiddler:FiddlerSystem",
        "llamacpp": "baselines.llamacpp.system:LlamaCppSystem",
        "llamacpp_best": "baselines.llamacpp.best:LlamaCppBestSystem",
    },
)


def system_class(name: str) -> type[System]:
    """The class of system ``name``; SystemUnavailable when its module cannot be imported
    (a missing optional package), RegistryError for an unknown name."""
    SYSTEMS.check(name)
    try:
        return SYSTEMS.load(name)
    except MissingDependency as exc:
        raise SystemUnavailable(str(exc)) from exc

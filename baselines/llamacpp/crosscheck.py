"""Cross-check: the harness's llama.cpp prefill time against llama-bench's, same GGUF and settings.

The harness times one ``llama_decode`` of the prompt in its worker process
(:mod:`baselines.llamacpp.worker`); llama-bench times the same call in its own loop. With
the same file, placement, threads and micro-batch the two should agree; a large gap means
one side is misconfigured (e.g. a different n_ubatch or KV placement).

Like for like: a llama-bench prefill (``-p N -n 0``) asks for the last token's logits only,
and llama.cpp then computes the *last layer's* feed-forward (the MoE) for that one token
(``inp_out_ids``); so the harness side here also wants only the last token's logits, and
both feed random token ids (llama-bench cannot take the harness's prompts). The harness's
own layer-slice prefill (``slice_prefill_vocab``) instead runs every layer in full, so its
numbers on an ``L``-layer slice are lower than llama-bench's by about ``(L - 1) / L``
(:attr:`PrefillCrossCheck.all_layers_estimate_tokens_per_s`; attention ignored).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from baselines.llamacpp.bench import LlamaBench
from baselines.llamacpp.placement import Placement
from baselines.llamacpp.remote import LlamaCppWorker


@dataclass(frozen=True)
class PrefillCrossCheck:
    """Both sides' seconds per prefill of ``n_prompt`` tokens of ``gguf``."""

    gguf: str
    n_prompt: int
    layers: int | None
    harness_seconds: tuple[float, ...]
    bench_seconds: tuple[float, ...]
    bench_command: str
    harness_context: dict[str, Any]  # the context llama.cpp used in the worker
    bench_facts: dict[str, Any]  # what llama-bench reported (n_ubatch, flash_attn, ...)

    @property
    def harness_tokens_per_s(self) -> float:
        return mean(self.n_prompt / s for s in self.harness_seconds)

    @property
    def bench_tokens_per_s(self) -> float:
        return mean(self.n_prompt / s for s in self.bench_seconds)

    @property
    def ratio(self) -> float:
        """Harness tokens/s over llama-bench's (1.0 = agreement)."""
        return self.harness_tokens_per_s / self.bench_tokens_per_s

    def agrees(self, tolerance: float = 0.25) -> bool:
        """Whether the two are within a factor ``1 + tolerance`` of each other."""
        return abs(math.log(self.ratio)) <= math.log1p(tolerance)

    @property
    def all_layers_estimate_tokens_per_s(self) -> float | None:
        """llama-bench's number scaled to every layer's MoE running in full (the harness's
        slice prefill); None when the layer count is unknown or 1."""
        if not self.layers or self.layers < 2:
            return None
        return self.bench_tokens_per_s * (self.layers - 1) / self.layers

    def as_dict(self) -> dict[str, Any]:
        return {
            "gguf": self.gguf,
            "n_prompt": self.n_prompt,
            "layers": self.layers,
            "harness_seconds": list(self.harness_seconds),
            "bench_seconds": list(self.bench_seconds),
            "harness_tokens_per_s": round(self.harness_tokens_per_s, 2),
            "bench_tokens_per_s": round(self.bench_tokens_per_s, 2),
            "ratio": round(self.ratio, 4),
            "all_layers_estimate_tokens_per_s": self.all_layers_estimate_tokens_per_s,
            "bench_command": self.bench_command,
            "harness_context": self.harness_context,
            "bench_facts": self.bench_facts,
        }


def gguf_facts(path: Path) -> tuple[int | None, int | None]:
    """``(block_count, vocabulary size)`` of a GGUF (None where unreadable)."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path, "r")
        arch = reader.get_field("general.architecture").contents()
        blocks = reader.get_field(f"{arch}.block_count")
        tokens = reader.get_field("tokenizer.ggml.tokens")
        return (
            int(blocks.contents()) if blocks is not None else None,
            len(tokens.data) if tokens is not None else None,
        )
    except Exception:  # noqa: BLE001 - llama.cpp itself reports what is wrong with the file
        return None, None


def crosscheck_prefill(
    bench_binary: str,
    gguf: Path,
    placement: Placement,
    n_prompt: int,
    *,
    n_ubatch: int | None = None,
    repetitions: int = 3,
    seed: int = 0,
) -> PrefillCrossCheck:
    """Time ``repetitions`` prefills of ``n_prompt`` random tokens of ``gguf`` through the
    harness's worker and through ``bench_binary`` (llama-bench) with the same placement
    and micro-batch (``n_ubatch`` None: the prompt length on both sides). The KV cache type
    and flash attention are llama.cpp's defaults on both sides (f16, auto); what each side
    actually used is in the result."""
    if n_prompt < 1 or repetitions < 1:
        raise ValueError(f"need n_prompt >= 1 and repetitions >= 1: {n_prompt}, {repetitions}")
    layers, vocab = gguf_facts(gguf)
    rng = random.Random(seed)
    ids = [rng.randrange(vocab or 256) for _ in range(n_prompt)]
    worker = LlamaCppWorker()
    try:
        worker.load(gguf, placement, "f16", None, n_ubatch)
        worker.prefill(ids)  # warm-up, as llama-bench does its own
        harness = tuple(worker.prefill(ids) for _ in range(repetitions))
        context = dict(worker.actual)
    finally:
        worker.close()
    bench = LlamaBench(
        bench_binary,
        gguf,
        placement,
        repetitions=repetitions,
        n_ubatch=n_ubatch,
        ubatch_is_prompt=n_ubatch is None,
    )
    timed = tuple(bench.seconds(n_prompt, 0) for _ in range(repetitions))
    return PrefillCrossCheck(
        str(gguf), n_prompt, layers, harness, timed, bench.commands[-1], context, bench.facts
    )

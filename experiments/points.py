"""Measurement points: what one row group of the results table measures, and its identity.

A point's ``point_id`` hashes everything that shapes its numbers (model identity, system
and its options, precision, expert split, token counts, trials, workload), so a rerun of
the same command recognises points it already measured, and a changed knob makes a new
point instead of silently reusing an old number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.registry import Registry, RegistryError
from experiments.errors import HmoeError


@dataclass(frozen=True)
class Point:
    """One point of an experiment (measured ``trials`` times)."""

    experiment: str
    stage: str  # prefill | decode | accuracy
    precision: str
    variant: str = ""
    immediate_experts: int | None = None
    deferred_experts: int = 0
    prompt_tokens: int = 0
    decode_tokens: int = 0
    task: str = ""
    system_options: dict[str, Any] = field(default_factory=dict)  # variant overrides

    def describe(self, precision: str | None = None) -> str:
        """Short human-readable label for progress bars and messages; ``precision`` replaces
        the point's own precision name (the label a system records, e.g. llama.cpp's fp16)."""
        parts = [self.stage, precision or self.precision]
        if self.variant:
            parts.append(self.variant)
        if self.immediate_experts is not None:
            parts.append(f"{self.immediate_experts}+{self.deferred_experts}")
        if self.task:
            parts.append(self.task)
        if self.prompt_tokens:
            parts.append(f"p{self.prompt_tokens}")
        if self.decode_tokens:
            parts.append(f"n{self.decode_tokens}")
        return " ".join(parts)


@dataclass(frozen=True)
class Experiment:
    """One experiment: its name (conf/experiment/<name>.yaml), run_all's step title, and
    its planner (the points a job of this experiment measures; each point's stage says how
    it is measured, see experiments.stages)."""

    name: str
    title: str
    plan: Callable[[Any], list[Point]]


EXPERIMENTS = Registry(
    "experiment",
    {
        "prefill": "experiments.prefill:EXPERIMENT",
        "decode": "experiments.decode:EXPERIMENT",
        "breakdown": "experiments.breakdown:EXPERIMENT",
        "accuracy": "experiments.accuracy:EXPERIMENT",
    },
)


def experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (HmoeError listing the known ones otherwise)."""
    try:
        return EXPERIMENTS.load(name)
    except RegistryError as exc:
        raise HmoeError(str(exc)) from exc


def point_id(point: Point, identity: dict[str, Any]) -> str:
    """Stable hash of the point and the job identity (model, system, trials, workload)."""
    payload = json.dumps({"point": asdict(point), **identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def parse_expert_config(text: str, top_k: int) -> tuple[str, int, int]:
    """Parse ``"int8:4+4"`` into (precision, immediate, deferred), checking it sums to top-k."""
    try:
        precision, split = text.split(":")
        immediate, deferred = (int(x) for x in split.split("+"))
    except ValueError as exc:
        raise HmoeError(
            f"bad expert configuration {text!r}: expected PRECISION:IMMEDIATE+DEFERRED, "
            "e.g. 'int8:4+4'"
        ) from exc
    if immediate < 1 or deferred < 0 or immediate + deferred != top_k:
        raise HmoeError(
            f"bad expert configuration {text!r}: immediate ({immediate}) >= 1 and "
            f"immediate + deferred must equal the model's top-k ({top_k})"
        )
    return precision, immediate, deferred


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as a positive int, else one clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise HmoeError(f"{name} must be a positive integer, got {value!r}")
    return value

"""Measuring one point of each stage (prefill, decode, accuracy): the only place that does.

Throughput stages run the point's own shape ``warmup`` times untimed (first calls pay for
allocations and kernel selection), then ``trials`` timed runs, each on its own seeded
prompt window; with ``max_trials`` set, more trials follow (up to it) while the trials'
CV exceeds ``cv_threshold`` (adaptive repetition). A system times its own work after
device synchronisation. Every trial
becomes one row (seconds, tokens/s, telemetry). Accuracy runs the task once through
lm-eval (experiments.accuracy) and returns one row with the score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config_schema import Config
from experiments.points import Point
from experiments.statistics import summarize
from experiments.system_api import System
from experiments.telemetry import Telemetry
from experiments.workload import PromptSource


@dataclass(frozen=True)
class MeasureContext:
    """What a stage needs besides the system and the point."""

    cfg: Config
    prompts: PromptSource | None
    run_dir: Path
    point_id: str


def _one_run(
    system: System, point: Point, ids: list[int], decode_tokens: int
) -> tuple[float, int, dict[str, Any]]:
    """One prefill or decode run: (seconds, tokens, extra columns) of its timed region."""
    if point.stage == "prefill":
        t = system.prefill(ids)
        return t.seconds, t.tokens, ({"placement": t.placement} if t.placement else {})
    d = system.decode(ids, decode_tokens, point.immediate_experts, point.deferred_experts)
    extra = {}
    if d.expert_cpu_util is not None:
        extra["expert_cpu_util_pct"] = round(100.0 * d.expert_cpu_util, 1)
    return d.decode_seconds, d.decode_tokens, extra


def measure_throughput(system: System, point: Point, ctx: MeasureContext) -> list[dict[str, Any]]:
    """Warm-up, then ``trials`` timed runs of a prefill or decode point."""
    prompts = ctx.prompts
    if prompts is None:
        raise ValueError(f"{point.stage} points need prompts")
    for i in range(ctx.cfg.experiment.warmup):
        ids = prompts.window(point.prompt_tokens, 1000 + i, "warmup")
        _one_run(system, point, ids, min(16, point.decode_tokens))
    rows: list[dict[str, Any]] = []
    exp = ctx.cfg.experiment
    cap = max(exp.trials, exp.max_trials or 0)
    trial = 0
    while trial < exp.trials or (
        trial < cap and summarize(r["tokens_per_s"] for r in rows).noisy(exp.cv_threshold)
    ):
        ids = prompts.window(point.prompt_tokens, trial, point.stage)
        with Telemetry() as tel:
            seconds, tokens, extra = _one_run(system, point, ids, point.decode_tokens)
        if seconds <= 0:
            raise RuntimeError(f"system reported a non-positive time ({seconds})")
        rows.append(
            {
                "trial": trial,
                "seconds": seconds,
                "tokens_per_s": tokens / seconds,
                **tel.reading.as_row(),
                **extra,
            }
        )
        trial += 1
    return rows


def measure_accuracy(system: System, point: Point, ctx: MeasureContext) -> list[dict[str, Any]]:
    """One lm-eval run of the point's task; one row with its score."""
    from experiments import accuracy

    with Telemetry() as tel:
        out = accuracy.measure(system, point, ctx.cfg, ctx.run_dir, ctx.point_id)
    return [
        {
            "trial": 0,
            "seconds": out["seconds"],
            "score": out["score"],
            "scoring_rules": out["scoring_rules"],
            **tel.reading.as_row(),
        }
    ]


STAGES: dict[str, Callable[[System, Point, MeasureContext], list[dict[str, Any]]]] = {
    "prefill": measure_throughput,
    "decode": measure_throughput,
    "accuracy": measure_accuracy,
}


def measure(system: System, point: Point, ctx: MeasureContext) -> list[dict[str, Any]]:
    """The rows of one point, measured by its stage's function."""
    try:
        stage = STAGES[point.stage]
    except KeyError:
        raise ValueError(f"unknown stage {point.stage!r}; known: {', '.join(STAGES)}") from None
    return stage(system, point, ctx)

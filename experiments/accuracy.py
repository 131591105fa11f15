"""Table 2: benchmark accuracy with and without expert deferral.

The points are planned here (model x expert configuration x task); scoring through
lm-eval and the sandboxed code execution are not part of this version, so every point
is recorded NOT RUN with that reason instead of a made-up score.
"""

from __future__ import annotations

from experiments.config_schema import Config
from experiments.points import Point, parse_expert_config

NOT_IMPLEMENTED = (
    "accuracy experiment (lm-eval tasks, sandboxed code execution) is not implemented "
    "in this version"
)


def plan(cfg: Config) -> list[Point]:
    """One point per (expert configuration, task) of the model."""
    points = []
    for text in cfg.model.accuracy_configs:
        precision, immediate, deferred = parse_expert_config(text, cfg.model.top_k)
        if precision not in cfg.system.precisions:
            continue
        for task in cfg.experiment.tasks:
            points.append(
                Point(
                    experiment="accuracy",
                    stage="accuracy",
                    precision=precision,
                    immediate_experts=immediate,
                    deferred_experts=deferred,
                    task=task,
                )
            )
    return points

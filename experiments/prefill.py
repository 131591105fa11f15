"""Figure 11: prefill throughput over a sweep of prompt lengths."""

from __future__ import annotations

from experiments.config_schema import Config
from experiments.points import Experiment, Point, check_positive_int


def plan(cfg: Config) -> list[Point]:
    """One point per (precision, prompt length) this system and model share."""
    lengths = [
        check_positive_int("experiment.prompt_lengths entry", length)
        for length in cfg.experiment.prompt_lengths
    ]
    if not lengths:
        return []
    precisions = [p for p in cfg.model.precisions if p in cfg.system.precisions]
    return [
        Point(experiment="prefill", stage="prefill", precision=precision, prompt_tokens=length)
        for precision in precisions
        for length in sorted(set(lengths))
    ]


EXPERIMENT = Experiment("prefill", "Figure 11: prefill throughput", plan)

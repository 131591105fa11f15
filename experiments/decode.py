"""Figure 12: decode throughput, with and without expert deferral."""

from __future__ import annotations

from experiments.config_schema import Config
from experiments.points import Experiment, Point, check_positive_int, parse_expert_config


def plan(cfg: Config) -> list[Point]:
    """One point per expert configuration of the model that this system can run.

    Systems without expert deferral (the baselines) only run the ``k+0`` configurations,
    as in the paper's figure.
    """
    prompt = check_positive_int("experiment.prompt_tokens", cfg.experiment.prompt_tokens)
    steps = check_positive_int("experiment.decode_tokens", cfg.experiment.decode_tokens)
    points = []
    for text in cfg.model.decode_configs:
        precision, immediate, deferred = parse_expert_config(text, cfg.model.top_k)
        if precision not in cfg.system.precisions:
            continue
        if deferred and not cfg.system.supports_deferral:
            continue
        points.append(
            Point(
                experiment="decode",
                stage="decode",
                precision=precision,
                immediate_experts=immediate,
                deferred_experts=deferred,
                prompt_tokens=prompt,
                decode_tokens=steps,
            )
        )
    return points


EXPERIMENT = Experiment("decode", "Figure 12: decode throughput", plan)

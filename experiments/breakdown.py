"""Figure 13: the ablation breakdown (+v, +m, +d, +n, +c), prefill and decode.

Variants (experiments.variants) name the system that runs them (base = Fiddler, the
others the engine with kernel/scheduling/NUMA/CUDA Graph switches); each job runs the
variants of its own system.
"""

from __future__ import annotations

from experiments.config_schema import Config
from experiments.points import Experiment, Point, check_positive_int
from experiments.variants import check_variants


def plan(cfg: Config) -> list[Point]:
    """The variants of this job's system, for the prefill and the decode stage."""
    exp = cfg.experiment
    prefill_len = check_positive_int(
        "experiment.breakdown_prefill_tokens", exp.breakdown_prefill_tokens
    )
    prompt = check_positive_int("experiment.prompt_tokens", exp.prompt_tokens)
    steps = check_positive_int("experiment.decode_tokens", exp.decode_tokens)
    full_precision = cfg.model.precisions[0]
    points = []
    for stage, names in (("prefill", exp.prefill_variants), ("decode", exp.decode_variants)):
        for variant in check_variants(stage, names):
            if variant.system != cfg.system.name:
                continue
            points.append(
                Point(
                    experiment="breakdown",
                    stage=stage,
                    precision=full_precision,
                    variant=variant.name,
                    immediate_experts=cfg.model.top_k if stage == "decode" else None,
                    prompt_tokens=prefill_len if stage == "prefill" else prompt,
                    decode_tokens=0 if stage == "prefill" else steps,
                    system_options=dict(variant.options),
                )
            )
    return points


EXPERIMENT = Experiment("breakdown", "Figure 13: breakdown", plan)

"""Figure 11: prefill throughput over a sweep of prompt lengths.

For a system with a ``prefill_placement`` option (the engine), its own setting is measured
with variant "" (the series the claims compare), and every other placement in
``experiment.placements`` as its own series: variant = the placement's name, with that
option overridden.
"""

from __future__ import annotations

from engine.runtime.cost_model import POLICIES
from experiments.config_schema import Config
from experiments.errors import HmoeError
from experiments.points import Experiment, Point, check_positive_int

PLACEMENTS = POLICIES
PLACEMENT_OPTION = "prefill_placement"


def placement_variants(cfg: Config) -> list[tuple[str, dict[str, str]]]:
    """``(variant, system option overrides)`` of each placement this system measures."""
    options = cfg.system.options or {}
    if PLACEMENT_OPTION not in options:
        return [("", {})]
    own = options[PLACEMENT_OPTION]
    wanted = list(cfg.experiment.placements or [])
    for name, values in (
        (f"system.options.{PLACEMENT_OPTION}", [own]),
        ("experiment.placements", wanted),
    ):
        bad = [p for p in values if p not in PLACEMENTS]
        if bad:
            raise HmoeError(f"{name}: unknown placement(s) {bad}; choose from {list(PLACEMENTS)}")
    extra = [p for p in dict.fromkeys(wanted) if p != own]
    return [("", {}), *((p, {PLACEMENT_OPTION: p}) for p in extra)]


def plan(cfg: Config) -> list[Point]:
    """One point per (placement, precision, prompt length) this system and model share."""
    lengths = [
        check_positive_int("experiment.prompt_lengths entry", length)
        for length in cfg.experiment.prompt_lengths
    ]
    if not lengths:
        return []
    precisions = [p for p in cfg.model.precisions if p in cfg.system.precisions]
    return [
        Point(
            experiment="prefill",
            stage="prefill",
            precision=precision,
            prompt_tokens=length,
            variant=variant,
            system_options=overrides,
        )
        for variant, overrides in placement_variants(cfg)
        for precision in precisions
        for length in sorted(set(lengths))
    ]


EXPERIMENT = Experiment("prefill", "Figure 11: prefill throughput", plan)

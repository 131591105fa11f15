"""Checks on a composed config that Hydra's typed schemas cannot make, run before any job.

Names are checked against their registries (experiment, system, accuracy tasks, breakdown
variants) and a system's options against the system's own typed options, so a typo fails
at once with one message naming it (exit 2) instead of as FAILED rows later.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from engine.errors import EngineError
from engine.registry import RegistryError
from experiments.errors import HmoeError
from experiments.model_resolution import check_checkpoint, gguf_paths
from experiments.points import experiment
from experiments.system_api import SYSTEMS, SystemUnavailable, system_class
from experiments.variants import check_variants


def check_config(cfg: Any) -> None:  # noqa: ANN401 - a composed DictConfig
    """HmoeError naming the first unknown name or bad option in ``cfg``."""
    experiment(str(cfg.experiment.name))
    if cfg.model.path:
        check_checkpoint(cfg.model)
    else:
        gguf_paths(cfg.model)
    name = str(cfg.system.name)
    try:
        SYSTEMS.check(name)
    except RegistryError as exc:
        raise HmoeError(str(exc)) from exc
    if cfg.experiment.name == "breakdown":
        check_variants("prefill", list(cfg.experiment.prefill_variants))
        check_variants("decode", list(cfg.experiment.decode_variants))
    if cfg.experiment.name == "prefill":
        from experiments.prefill import placement_variants

        placement_variants(cfg)
    if cfg.experiment.name == "accuracy":
        from experiments.accuracy_tasks import get_task

        for task in cfg.experiment.tasks:
            get_task(str(task))
    options = OmegaConf.to_container(cfg.system.options, resolve=True)
    try:
        cls = system_class(name)
    except SystemUnavailable:
        return  # its package is missing: the points will say NOT RUN
    check = getattr(cls, "check_options", None)
    if check is not None:
        try:
            check(options)
        except (EngineError, ValueError, TypeError) as exc:
            raise HmoeError(f"system.options ({name}): {exc}") from exc

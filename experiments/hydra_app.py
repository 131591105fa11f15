"""The Hydra application behind ``hmoe run``: compose the config, run one job, print a summary.

Sweeps are Hydra multirun (``hmoe run -m experiment=prefill model=qw2,ds2 system=engine,
fiddler``); each job composes its own config when it starts. Exit status: 0 when every
point is ok or NOT RUN, 1 when a point failed, 2 for bad input (one clear message).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from experiments.config_schema import register_configs
from experiments.errors import HmoeError
from experiments.runner import JobRunner

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

register_configs()

# Jobs of one process (a multirun) report their worst outcome here.
OUTCOME = {"failed": False}


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def job(cfg: DictConfig) -> None:
    """One experiment x model x system."""
    title = f"{cfg.experiment.name} | model {cfg.model.key} | system {cfg.system.name}"
    try:
        summary = JobRunner(cfg).run()
    except HmoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    done = summary.planned - summary.skipped
    print(
        f"== {title}: {summary.planned} point(s), {summary.skipped} already measured, "
        f"{done} run now: {summary.ok} ok, {summary.not_run} not run, {summary.failed} failed"
    )
    for line in summary.lines:
        print(f"   {line}")
    for reason, count in summary.reasons.items():
        print(f"   {reason} ({count} point(s))")
    if summary.failed:
        OUTCOME["failed"] = True

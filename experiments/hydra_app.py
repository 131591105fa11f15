"""The Hydra application behind ``hmoe run``: compose the config, run one job, print a summary.

Sweeps are Hydra multirun (``hmoe run -m experiment=prefill model=qw2,ds2 system=engine,
fiddler``); each job composes its own config when it starts. Exit status: 0 when every
point is ok or NOT RUN, 1 when a point failed, 2 for bad input (one clear message).
"""

from __future__ import annotations

import os
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
    if summary.noisy:
        print(
            f"   {summary.noisy} point(s) NOISY: their trials vary by more than "
            f"{cfg.experiment.cv_threshold:.0%} (CV); compare them with care, or set "
            "experiment.max_trials=N to add trials while the CV stays high"
        )
    for reason, count in summary.reasons.items():
        print(f"   {reason} ({count} point(s))")
    if summary.failed:
        OUTCOME["failed"] = True


def cli_main(args: list[str]) -> int:
    """``hmoe run [-m] [overrides...]``: one job or a Hydra multirun sweep; exit status 0
    (every point ok or NOT RUN), 1 (a point failed), 2 (bad input)."""
    from experiments.provenance import new_run_id
    from experiments.run_all import _check_writable, _override, choose_profile, validate_overrides

    if not any(a in ("--help", "-h", "--hydra-help") for a in args):
        args, line = choose_profile(args)
        if not os.environ.get("HMOE_PROFILE_PRINTED"):
            print(line, flush=True)
        if _override(args, "run_id") is None:
            args = [*args, f"run_id={new_run_id()}"]  # one id for every job of this call
        validate_overrides([a for a in args if "=" in a and not a.startswith("-")])
        _check_writable(Path(_override(args, "results_root") or "results"))
    sys.argv = ["hmoe run", *args]
    try:
        job()
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 2
    if OUTCOME["failed"]:
        return 1
    from experiments.run_all import launched_failures, launcher

    # jobs run by a launcher ran in other processes: their outcome is read from their shards
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return 1 if launcher(overrides) and launched_failures(overrides) else 0

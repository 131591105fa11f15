"""The accuracy benchmarks as lm-eval tasks: YAML files here plus their ``!function`` hooks.

Load them with ``TaskManager(include_path=TASKS_DIR, metadata={"data_dir": ...})``; task
``hmoe_<name>`` wraps the project's task ``<name>`` of :mod:`experiments.accuracy_tasks`.
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
PREFIX = "hmoe_"


def lm_eval_name(task: str) -> str:
    """The lm-eval task name of the project's task ``task`` (``mbpp`` -> ``hmoe_mbpp``)."""
    return PREFIX + task

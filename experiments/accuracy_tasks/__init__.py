"""Accuracy tasks with the paper artifact's prompts: mbpp, human_eval, gsm8k, strategy_qa, mmlu.

``TASKS`` maps each name to its Task (see ``protocol``); ``get_task(name)`` looks one up.
Docs come from a local directory of the shared layout or the Hugging Face Hub (``data``).
Completions are scored under one of two named rule sets (``rules``): ``paper`` (the
artifact's scorer, the default) or ``strict``.
"""

from __future__ import annotations

from experiments.accuracy_tasks.data import DataUnavailable, resolve_data_dir
from experiments.accuracy_tasks.gsm8k import Gsm8k
from experiments.accuracy_tasks.human_eval import HumanEval
from experiments.accuracy_tasks.mbpp import Mbpp
from experiments.accuracy_tasks.mmlu import Mmlu, mmlu_accuracy
from experiments.accuracy_tasks.protocol import MultipleChoiceTask, Task
from experiments.accuracy_tasks.rules import DEFAULT_RULES, RULES, check_rules
from experiments.accuracy_tasks.strategy_qa import StrategyQa
from experiments.errors import HmoeError

TASKS: dict[str, Task] = {
    task.name: task for task in (Mbpp(), HumanEval(), Gsm8k(), StrategyQa(), Mmlu())
}


def get_task(name: str) -> Task:
    """The task called ``name``, or an HmoeError listing the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise HmoeError(f"unknown accuracy task {name!r} (known: {', '.join(TASKS)})") from None


__all__ = [
    "DEFAULT_RULES",
    "RULES",
    "TASKS",
    "DataUnavailable",
    "MultipleChoiceTask",
    "Task",
    "check_rules",
    "get_task",
    "mmlu_accuracy",
    "resolve_data_dir",
]

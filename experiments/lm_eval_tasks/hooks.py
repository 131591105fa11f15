"""The ``!function`` hooks of the project's lm-eval task YAMLs: each delegates to the task.

Documents come from :mod:`experiments.accuracy_tasks` (the same loader, prompt builder and
scorer that ``hmoe score`` uses), so lm-eval adds only its request/aggregation machinery.
Each dataset row is ``{"task", "idx", "doc"}`` with the task's document as JSON text, which
keeps the document exactly as the task built it (no Arrow type coercion of mixed fields).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import datasets

from experiments.accuracy_tasks import get_task, resolve_data_dir


def load_dataset(
    task: str, data_dir: str | None = None, doc_limit: int | None = None, **_metadata: Any
) -> datasets.DatasetDict:
    """``custom_dataset``: the task's first ``doc_limit`` problems (test split, all when None)
    from ``data_dir`` or the Hub.

    ``data_dir`` and ``doc_limit`` arrive through the TaskManager's metadata (lm-eval's own
    ``limit`` takes the same first problems); other metadata is ignored.
    """
    docs = get_task(task).load_docs(resolve_data_dir(data_dir), doc_limit)
    rows = [{"task": task, "idx": int(doc["idx"]), "doc": json.dumps(doc)} for doc in docs]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


@lru_cache(maxsize=4096)
def _decode(text: str) -> dict[str, Any]:
    return json.loads(text)


def task_doc(row: dict[str, Any]) -> dict[str, Any]:
    """The task's own document of a dataset row (do not mutate: it is cached)."""
    return _decode(row["doc"])


def doc_to_text(row: dict[str, Any]) -> str:
    """The paper's prompt for the problem."""
    return get_task(row["task"]).prompt(task_doc(row))


def doc_to_target(row: dict[str, Any]) -> int | str:
    """Gold choice index (multiple choice); generation tasks score by running/extracting."""
    task = get_task(row["task"])
    return task.gold(task_doc(row)) if task.kind == "multiple_choice" else ""


def doc_to_choice(row: dict[str, Any]) -> list[str]:
    """The answer continuations scored by loglikelihood (MMLU: " A", " B", " C", " D")."""
    return list(get_task(row["task"]).choices(task_doc(row)))


def keep_all(resps: Any, docs: Any) -> Any:
    """Filter keeping every sampled completion of a problem (lm-eval keeps only the first)."""
    return resps


def process_results(row: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """``score``: the task's score of each completion, averaged (pass@1 over samples)."""
    completions = results[0]
    if isinstance(completions, str):
        completions = [completions]
    task, doc = get_task(row["task"]), task_doc(row)
    scores = [float(task.score(doc, text)) for text in completions]
    return {"score": sum(scores) / len(scores)}

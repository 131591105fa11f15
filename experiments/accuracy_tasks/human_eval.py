"""HumanEval: 164 problems; the prompt is the problem's own prompt (signature + docstring).

A completion passes when prompt + completion + the problem's test + ``check(entry_point)``
runs to the end in the sandbox. Completions are scored as saved (generation applies the
stop strings); nothing is cut here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import data
from experiments.sandbox import run_program

HUB_DATASET = "openai/openai_humaneval"


def program(doc: dict[str, Any], completion: str) -> str:
    """The program the sandbox runs."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


class HumanEval:
    """The HumanEval task (pass@1; several samples per problem are averaged by the scorer)."""

    name = "human_eval"
    kind = "generate"
    stop: tuple[str, ...] = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
    max_new_tokens = 512
    timeout_s = 10.0

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        local = data.local_file(data_dir, "human_eval", "test.jsonl")
        if local is not None:
            docs = data.read_jsonl(local)
        else:
            docs = data.hub_rows("human_eval", HUB_DATASET, None, "test")
        return data.number_docs(docs, limit)

    def prompt(self, doc: dict[str, Any]) -> str:
        return doc["prompt"]

    def score(self, doc: dict[str, Any], completion: str) -> float:
        return 1.0 if run_program(program(doc, completion), self.timeout_s).passed else 0.0

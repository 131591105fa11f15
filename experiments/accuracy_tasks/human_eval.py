"""HumanEval: 164 problems; the prompt is the problem's own prompt (signature + docstring).

Scoring runs a program in the sandbox; the completion passes when it runs to its end.
``paper`` rules: the artifact's program (its cuts, the body re-indented by 4 spaces, 3 s;
see ``paper_code``). ``strict``: prompt + completion as saved + the problem's test +
``check(entry_point)``, 10 s (generation applies the stop strings; nothing is cut).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import data, paper_code
from experiments.accuracy_tasks.rules import DEFAULT_RULES, PAPER, program_score

HUB_DATASET = "openai/openai_humaneval"


def program(doc: dict[str, Any], completion: str) -> str:
    """The program the sandbox runs under ``strict`` rules."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


class HumanEval:
    """The HumanEval task (pass@1; several samples per problem are averaged by the scorer)."""

    name = "human_eval"
    kind = "generate"
    stop: tuple[str, ...] = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
    max_new_tokens = 512

    def load_problems(
        self, data_dir: Path | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = data.problem_rows("human_eval", data_dir, HUB_DATASET, None)
        return data.number_docs(rows, limit)

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.load_problems(data_dir, limit)

    def prompt(self, doc: dict[str, Any]) -> str:
        return doc["prompt"]

    def score(self, doc: dict[str, Any], completion: str, rules: str = DEFAULT_RULES) -> float:
        if rules == PAPER:
            return program_score(paper_code.human_eval_program(doc, completion), rules)
        return program_score(program(doc, completion), rules)

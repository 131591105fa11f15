"""GSM8K: 1319 test problems, the artifact's 8-shot chain-of-thought prompt, exact answer.

Prompt = ``gsm8k/shots.md`` + "\\n\\nQuestion: {question}\\nAnswer:". The exemplars (Wei et
al.'s chain-of-thought ones) are not part of the Hub dataset, so generating needs the shots
file in the local data directory even when the problems come from the Hub (openai/gsm8k,
main); scoring needs only the problems.

Scoring: ``paper`` rules (the artifact's extraction, normalisation and comparison, see
``math_normalize``) or ``strict`` (the number right after the first "The answer is").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import answer_extraction, data, math_normalize
from experiments.accuracy_tasks.rules import DEFAULT_RULES, PAPER, check_rules

HUB_DATASET = "openai/gsm8k"


def question_prompt(shots: str, question: str) -> str:
    """The artifact's "Question: ...\\nAnswer:" prompt after its exemplars."""
    return f"{shots}\n\nQuestion: {question}\nAnswer:"


def require_shots(data_dir: Path | None, task: str) -> str:
    """The local shots file of a few-shot chain-of-thought task, or DataUnavailable."""
    shots = data.read_shots(data_dir, task)
    if shots is None:
        raise data.DataUnavailable(
            f"{task}: the few-shot exemplars needed to build prompts are missing: "
            f"{data.where_local(data_dir, task, 'shots.md')} (the Hugging Face Hub does not "
            "have them; scoring saved generations does not need them)"
        )
    return shots


class Gsm8k:
    """The GSM8K task (exact answer)."""

    name = "gsm8k"
    kind = "generate"
    stop: tuple[str, ...] = ("\n\nQuestion:", "\nQuestion:", "\n\n\n")
    max_new_tokens = 256

    def load_problems(
        self, data_dir: Path | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        rows = data.problem_rows("gsm8k", data_dir, HUB_DATASET, "main")
        return data.number_docs(rows, limit)

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        shots = require_shots(data_dir, "gsm8k")
        return [{**doc, "fewshot": shots} for doc in self.load_problems(data_dir, limit)]

    def prompt(self, doc: dict[str, Any]) -> str:
        return question_prompt(doc["fewshot"], doc["question"])

    def score(self, doc: dict[str, Any], completion: str, rules: str = DEFAULT_RULES) -> float:
        if check_rules(rules) == PAPER:
            label = math_normalize.gsm8k_label(doc)
            right = math_normalize.math_equal(label, math_normalize.gsm8k_answer(completion))
            return 1.0 if right else 0.0
        answer = answer_extraction.gsm8k_answer(completion)
        return 1.0 if answer is not None and answer == answer_extraction.gsm8k_gold(doc) else 0.0

"""GSM8K: 1319 test problems, the artifact's 8-shot chain-of-thought prompt, exact match.

Prompt = ``gsm8k/shots.md`` + "\\n\\nQuestion: {question}\\nAnswer:". The exemplars (Wei et
al.'s chain-of-thought ones) are not part of the Hub dataset, so the shots file must be in
the local data directory even when the problems come from the Hub (openai/gsm8k, main).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import answer_extraction, data

HUB_DATASET = "openai/gsm8k"


def question_prompt(shots: str, question: str) -> str:
    """The artifact's "Question: ...\\nAnswer:" prompt after its exemplars."""
    return f"{shots}\n\nQuestion: {question}\nAnswer:"


def require_shots(data_dir: Path | None, task: str) -> str:
    """The local shots file of a few-shot chain-of-thought task, or DataUnavailable."""
    shots = data.read_shots(data_dir, task)
    if shots is None:
        raise data.DataUnavailable(
            f"{task}: the few-shot exemplars ({task}/shots.md) are needed in the local data "
            f"directory (data.dir or {data.ENV_VAR}); the Hugging Face Hub does not have them"
        )
    return shots


class Gsm8k:
    """The GSM8K task (exact match of the number after "The answer is")."""

    name = "gsm8k"
    kind = "generate"
    stop: tuple[str, ...] = ("\n\nQuestion:", "\nQuestion:", "\n\n\n")
    max_new_tokens = 256

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        shots = require_shots(data_dir, "gsm8k")
        local = data.local_file(data_dir, "gsm8k", "test.jsonl")
        if local is not None:
            docs = data.read_jsonl(local)
        else:
            docs = data.hub_rows("gsm8k", HUB_DATASET, "main", "test")
        return [{**doc, "fewshot": shots} for doc in data.number_docs(docs, limit)]

    def prompt(self, doc: dict[str, Any]) -> str:
        return question_prompt(doc["fewshot"], doc["question"])

    def score(self, doc: dict[str, Any], completion: str) -> float:
        answer = answer_extraction.gsm8k_answer(completion)
        return 1.0 if answer is not None and answer == answer_extraction.gsm8k_gold(doc) else 0.0

"""StrategyQA: 2286 questions, the artifact's 4-shot chain-of-thought prompt, yes/no accuracy.

Prompt = ``strategy_qa/shots.md`` + "\\n\\nQuestion: {question}\\nAnswer:"; the shots file must
be local. Hub fallback for the questions: wics/strategy-qa (test split, 2290 questions) minus
the questions that appear in the exemplars, which is how the artifact's 2286 appear to have
been chosen (not verifiable offline; the local test.jsonl is the reference).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import answer_extraction, data
from experiments.accuracy_tasks.gsm8k import question_prompt, require_shots

HUB_DATASET = "wics/strategy-qa"


def _shot_questions(shots: str) -> set[str]:
    questions = set()
    for line in shots.splitlines():
        if line.startswith("Question: "):
            question = line[len("Question: ") :]
            questions.add(question.removeprefix("Yes or no: ").strip())
    return questions


class StrategyQa:
    """The StrategyQA task (yes/no after "So the answer is")."""

    name = "strategy_qa"
    kind = "generate"
    stop: tuple[str, ...] = ("\n\nQuestion:", "\nQuestion:", "\n\n\n")
    max_new_tokens = 128

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        shots = require_shots(data_dir, "strategy_qa")
        local = data.local_file(data_dir, "strategy_qa", "test.jsonl")
        if local is not None:
            docs = data.read_jsonl(local)
        else:
            excluded = _shot_questions(shots)
            docs = [
                {**row, "label": "yes" if row["answer"] else "no"}
                for row in data.hub_rows("strategy_qa", HUB_DATASET, None, "test")
                if row["question"].strip() not in excluded
            ]
        return [{**doc, "fewshot": shots} for doc in data.number_docs(docs, limit)]

    def prompt(self, doc: dict[str, Any]) -> str:
        return question_prompt(doc["fewshot"], doc["question"])

    def score(self, doc: dict[str, Any], completion: str) -> float:
        answer = answer_extraction.strategy_qa_answer(completion)
        return 1.0 if answer == answer_extraction.strategy_qa_gold(doc) else 0.0

"""StrategyQA: 2286 questions, the artifact's 4-shot chain-of-thought prompt, yes/no accuracy.

Prompt = ``strategy_qa/shots.md`` + "\\n\\nQuestion: {question}\\nAnswer:"; generating needs
the shots file locally, scoring does not. Hub fallback for the questions: wics/strategy-qa
(test split, 2290 questions) minus the 4 exemplar questions, which is how the artifact's
2286 appear to have been chosen (not verifiable offline; the local test.jsonl is the
reference).

Scoring: ``paper`` rules (the artifact's answer hints, the last " yes "/" no ", "no" when
neither; see ``paper_strategy_qa``) or ``strict`` (yes/no right after "So the answer is").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import answer_extraction, data, paper_strategy_qa
from experiments.accuracy_tasks.gsm8k import question_prompt, require_shots
from experiments.accuracy_tasks.rules import DEFAULT_RULES, PAPER, check_rules

HUB_DATASET = "wics/strategy-qa"
EXEMPLAR_QUESTIONS = frozenset(
    {  # the questions of strategy_qa/shots.md, without its "Yes or no: " prefixes
        "Do hamsters provide food for any animals?",
        "Could Brooke Shields succeed at University of Pennsylvania?",
        "Hydrogen's atomic number squared exceeds number of Spice Girls?",
        "Is it common to see frost during some college commencements?",
    }
)


class StrategyQa:
    """The StrategyQA task (yes/no)."""

    name = "strategy_qa"
    kind = "generate"
    stop: tuple[str, ...] = ("\n\nQuestion:", "\nQuestion:", "\n\n\n")
    max_new_tokens = 128

    def load_problems(
        self, data_dir: Path | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        local = data.local_file(data_dir, "strategy_qa", "test.jsonl")
        if local is not None:
            rows = data.read_jsonl(local)
        else:
            looked = data.where_local(data_dir, "strategy_qa", "test.jsonl")
            rows = [
                {**row, "label": "yes" if row["answer"] else "no"}
                for row in data.hub_rows("strategy_qa", HUB_DATASET, None, "test", looked)
                if row["question"].strip() not in EXEMPLAR_QUESTIONS
            ]
        return data.number_docs(rows, limit)

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        shots = require_shots(data_dir, "strategy_qa")
        return [{**doc, "fewshot": shots} for doc in self.load_problems(data_dir, limit)]

    def prompt(self, doc: dict[str, Any]) -> str:
        return question_prompt(doc["fewshot"], doc["question"])

    def score(self, doc: dict[str, Any], completion: str, rules: str = DEFAULT_RULES) -> float:
        if check_rules(rules) == PAPER:
            answer = paper_strategy_qa.strategy_qa_answer(completion)
            return 1.0 if answer == paper_strategy_qa.strategy_qa_label(doc) else 0.0
        answer = answer_extraction.strategy_qa_answer(completion)
        return 1.0 if answer == answer_extraction.strategy_qa_gold(doc) else 0.0

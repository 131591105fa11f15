"""MMLU: 57 subjects, 5-shot from each subject's dev set, accuracy by loglikelihood of A-D.

Prompt (the Hendrycks format as lm-evaluation-harness's ``mmlu`` task writes it)::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {letter}\\n\\n   (x5, dev)
    {question}\\nA. {a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer:

with the subject's underscores as spaces and questions stripped of surrounding whitespace.
The continuations are " A", " B", " C", " D". Docs are ordered by subject name, then file
order. Local data: mmlu/{test,dev}/<subject>_{test,dev}.csv; Hub: cais/mmlu, config "all".
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from experiments.accuracy_tasks import data
from experiments.accuracy_tasks.rules import DEFAULT_RULES, check_rules
from experiments.errors import HmoeError

HUB_DATASET = "cais/mmlu"
LETTERS = ("A", "B", "C", "D")
N_SHOTS = 5
HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"


def format_question(question: str, choices: list[str]) -> str:
    """One question with its lettered choices, ending in "Answer:"."""
    lines = [question.strip()]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=True)]
    return "\n".join(lines) + "\nAnswer:"


def fewshot_block(subject: str, shots: list[dict[str, Any]]) -> str:
    """The subject header and the answered dev exemplars that precede every test question."""
    header = HEADER.format(subject=subject_name(subject))
    answered = [
        f"{format_question(s['question'], s['choices'])} {LETTERS[s['answer']]}\n\n" for s in shots
    ]
    return header + "".join(answered)


def subject_name(subject: str) -> str:
    """ "high_school_biology" -> "high school biology"."""
    return subject.replace("_", " ")


def _read_csv(path: Path, subject: str) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, fields in enumerate(csv.reader(handle), 1):
            if len(fields) != 6 or fields[5] not in LETTERS:
                raise HmoeError(f"{path} row {number}: expected 6 fields ending in A/B/C/D")
            rows.append(
                {
                    "subject": subject,
                    "question": fields[0],
                    "choices": fields[1:5],
                    "answer": LETTERS.index(fields[5]),
                }
            )
    return rows


def _local(data_dir: Path | None) -> tuple[list[dict], dict[str, list[dict]]] | None:
    if data_dir is None or not (data_dir / "mmlu" / "test").is_dir():
        return None
    tests: list[dict] = []
    dev: dict[str, list[dict]] = {}
    for path in sorted((data_dir / "mmlu" / "test").glob("*_test.csv")):
        subject = path.name.removesuffix("_test.csv")
        dev_path = data_dir / "mmlu" / "dev" / f"{subject}_dev.csv"
        if not dev_path.is_file():
            raise HmoeError(f"{dev_path}: missing (needed for the 5-shot prompt of {subject})")
        tests += _read_csv(path, subject)
        dev[subject] = _read_csv(dev_path, subject)
    return (tests, dev) if tests else None


def _hub() -> tuple[list[dict], dict[str, list[dict]]]:
    def rows(split: str) -> list[dict]:
        return [
            {k: row[k] for k in ("subject", "question", "choices", "answer")}
            for row in data.hub_rows("mmlu", HUB_DATASET, "all", split)
        ]

    tests = sorted(rows("test"), key=lambda row: row["subject"])
    dev: dict[str, list[dict]] = defaultdict(list)
    for row in rows("dev"):
        dev[row["subject"]].append(row)
    return tests, dict(dev)


def mmlu_accuracy(per_doc_correct: list[tuple[str, bool]]) -> dict[str, Any]:
    """Overall accuracy (over questions), its macro average over subjects, and per subject."""
    by_subject: dict[str, list[bool]] = defaultdict(list)
    for subject, correct in per_doc_correct:
        by_subject[subject].append(bool(correct))
    subjects = {
        name: {"accuracy": sum(marks) / len(marks), "n": len(marks)}
        for name, marks in sorted(by_subject.items())
    }
    total = len(per_doc_correct)
    return {
        "accuracy": sum(bool(c) for _, c in per_doc_correct) / total if total else 0.0,
        "macro_accuracy": (
            sum(s["accuracy"] for s in subjects.values()) / len(subjects) if subjects else 0.0
        ),
        "n": total,
        "subjects": subjects,
    }


class Mmlu:
    """The MMLU task (multiple choice by loglikelihood)."""

    name = "mmlu"
    kind = "multiple_choice"
    stop: tuple[str, ...] = ()
    max_new_tokens = 1

    def load_problems(
        self, data_dir: Path | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return self.load_docs(data_dir, limit)

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        tests, dev = _local(data_dir) or _hub()
        blocks = {subject: fewshot_block(subject, rows[:N_SHOTS]) for subject, rows in dev.items()}
        docs = data.number_docs(tests, limit)
        missing = sorted({d["subject"] for d in docs} - blocks.keys())
        if missing:
            raise HmoeError(f"mmlu: no dev exemplars for {', '.join(missing)}")
        return [{**doc, "fewshot": blocks[doc["subject"]]} for doc in docs]

    def prompt(self, doc: dict[str, Any]) -> str:
        return doc["fewshot"] + format_question(doc["question"], doc["choices"])

    def choices(self, doc: dict[str, Any]) -> list[str]:
        return [f" {letter}" for letter in LETTERS]

    def gold(self, doc: dict[str, Any]) -> int:
        return int(doc["answer"])

    def score(self, doc: dict[str, Any], completion: str, rules: str = DEFAULT_RULES) -> float:
        """A generated or chosen answer (" B", "B.", "B. text") against the gold letter
        (the same under both rule sets)."""
        check_rules(rules)
        answer = completion.strip()[:1].upper()
        return 1.0 if answer == LETTERS[self.gold(doc)] else 0.0

"""Accuracy tasks: the paper artifact's prompts byte for byte, MMLU's format, answer
extraction and code scoring under the ``strict`` rules (the ``paper`` rules have their own
tests in test_scoring_paper_rules.py), data resolution and missing-data messages."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from experiments.accuracy_tasks import (
    TASKS,
    DataUnavailable,
    get_task,
    mmlu_accuracy,
    resolve_data_dir,
)
from experiments.accuracy_tasks import answer_extraction as ax
from experiments.accuracy_tasks.mbpp import extract_code
from experiments.errors import HmoeError

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """$HMOE_DATA_DIR, else ../shared/datasets beside the repository, if it exists."""
    path = Path(os.environ.get("HMOE_DATA_DIR") or REPO.parent / "shared" / "datasets")
    return path if path.is_dir() else None


DATA = shared_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="no ../shared/datasets (or HMOE_DATA_DIR)")


# --- prompts -------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    ("name", "count"), [("mbpp", 500), ("human_eval", 164), ("gsm8k", 1319), ("strategy_qa", 2286)]
)
def test_prompts_reproduce_the_artifact_inputs_byte_for_byte(name, count):
    task = get_task(name)
    docs = task.load_docs(DATA)
    with (DATA / name / "input.jsonl").open(encoding="utf-8") as handle:
        expected = [json.loads(line)["instructions"] for line in handle if line.strip()]
    assert len(docs) == len(expected) == count
    assert [doc["idx"] for doc in docs] == list(range(count))
    pairs = zip(docs, expected, strict=True)
    mismatches = [doc["idx"] for doc, text in pairs if task.prompt(doc) != text]
    assert mismatches == []


@needs_data
def test_limit_keeps_the_first_docs():
    docs = get_task("gsm8k").load_docs(DATA, limit=3)
    assert [d["idx"] for d in docs] == [0, 1, 2]
    assert docs[0]["question"].startswith("Janet")


def _write_mmlu(root: Path) -> None:
    for split, rows in {
        "dev": [
            ["What is 1+1?", "1", "2", "3", "4", "B"],
            ['Pick "x", please', "x", "y", "z, w", "v", "A"],
            ["Q3", "a", "b", "c", "d", "C"],
            ["Q4", "a", "b", "c", "d", "D"],
            ["Q5", "a", "b", "c", "d", "A"],
            ["Q6 (not a shot)", "a", "b", "c", "d", "A"],
        ],
        "test": [[" Which is even? ", "3", "5", "8", "9", "C"]],
    }.items():
        folder = root / "mmlu" / split
        folder.mkdir(parents=True)
        lines = [",".join('"' + f.replace('"', '""') + '"' for f in row) for row in rows]
        (folder / f"college_math_{split}.csv").write_text("\n".join(lines) + "\n")


def test_mmlu_prompt_is_the_five_shot_hendrycks_format(tmp_path):
    _write_mmlu(tmp_path)
    task = get_task("mmlu")
    (doc,) = task.load_docs(tmp_path)
    expected = (
        "The following are multiple choice questions (with answers) about college math.\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        'Pick "x", please\nA. x\nB. y\nC. z, w\nD. v\nAnswer: A\n\n'
        "Q3\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\n"
        "Q4\nA. a\nB. b\nC. c\nD. d\nAnswer: D\n\n"
        "Q5\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\n"
        "Which is even?\nA. 3\nB. 5\nC. 8\nD. 9\nAnswer:"
    )
    assert task.kind == "multiple_choice"
    assert task.prompt(doc) == expected
    assert task.choices(doc) == [" A", " B", " C", " D"]
    assert task.gold(doc) == 2 and doc["subject"] == "college_math" and doc["idx"] == 0
    assert task.score(doc, " C") == 1.0 and task.score(doc, "B. 5") == 0.0


@needs_data
def test_mmlu_real_data_has_57_subjects():
    docs = get_task("mmlu").load_docs(DATA)
    assert len(docs) == 14042
    assert len({d["subject"] for d in docs}) == 57
    assert docs[0]["subject"] == "abstract_algebra"


def test_mmlu_accuracy_overall_and_per_subject():
    result = mmlu_accuracy([("a", True), ("a", False), ("a", True), ("a", True), ("b", False)])
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["macro_accuracy"] == pytest.approx((0.75 + 0.0) / 2)
    assert result["n"] == 5
    assert result["subjects"] == {"a": {"accuracy": 0.75, "n": 4}, "b": {"accuracy": 0.0, "n": 1}}


# --- answer extraction ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("5 + 13 = 18. The answer is 18.", Decimal(18)),
        ("The answer is 1,000.", Decimal(1000)),
        ("So she makes $18 a day. The answer is $18.", Decimal(18)),
        ("The answer is 18.00", Decimal(18)),
        ("The answer is -3.", Decimal(-3)),
        ("The answer is: 0.5 liters", Decimal("0.5")),
        ("The answer is 7.\n\nQuestion: x?\nAnswer: The answer is 9.", Decimal(7)),
        ("the answer is 42", Decimal(42)),
        ("It is 18 eggs, so 18.", None),
        ("", None),
    ],
)
def test_gsm8k_answer_extraction(completion, expected):
    assert ax.gsm8k_answer(completion) == expected


def test_gsm8k_scoring_compares_values():
    task = get_task("gsm8k")
    doc = {"question": "q", "answer": "... #### 1,000", "label": "1,000"}
    assert task.score(doc, "So 1000 in all. The answer is 1000.", "strict") == 1.0
    assert task.score(doc, "The answer is $1,000.00.", "strict") == 1.0
    assert task.score(doc, "The answer is 100. The answer is 1000.", "strict") == 0.0
    assert task.score(doc, "1000", "strict") == 0.0  # no "The answer is": wrong
    assert ax.gsm8k_gold({"answer": "Work.\n#### -12"}) == Decimal(-12)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("Thus, yes. So the answer is yes.", "yes"),
        ("So the answer is No.", "no"),
        ("So the answer is: **YES**", "yes"),
        ("so the answer is no\n\nQuestion: ...So the answer is yes.", "no"),
        ("The answer is yes.", None),
        ("So the answer is maybe.", None),
        ("So the answer is nobody.", None),
    ],
)
def test_strategy_qa_answer_extraction(completion, expected):
    assert ax.strategy_qa_answer(completion) == expected


def test_strategy_qa_scoring():
    task = get_task("strategy_qa")
    assert task.score({"label": "yes"}, "So the answer is yes.", "strict") == 1.0
    assert task.score({"label": "yes"}, "So the answer is no.", "strict") == 0.0
    assert task.score({"answer": False}, "So the answer is no.", "strict") == 1.0
    assert task.score({"label": "no"}, "I cannot tell.", "strict") == 0.0


def test_unknown_rules_are_refused():
    with pytest.raises(HmoeError, match="choose one of: paper, strict"):
        get_task("strategy_qa").score({"label": "yes"}, "yes", "lenient")


# --- code scoring on self-written problems -------------------------------------------

MBPP_DOC = {
    "task_id": 9001,
    "text": "Write a function to return the second largest distinct number in a list.",
    "test_setup_code": "",
    "test_list": [
        "assert second_largest([1, 5, 3]) == 3",
        "assert second_largest([7, 7, 2]) == 2",
        "assert second_largest([-1, -4, -2]) == -2",
    ],
}
MBPP_RIGHT = "def second_largest(xs):\n    return sorted(set(xs))[-2]\n"
MBPP_WRONG = "def second_largest(xs):\n    return sorted(xs)[-2]\n"

HUMAN_EVAL_DOC = {
    "task_id": "Own/0",
    "prompt": 'def count_vowels(s: str) -> int:\n    """Count a, e, i, o, u (any case)."""\n',
    "entry_point": "count_vowels",
    "test": (
        "def check(candidate):\n"
        "    assert candidate('Hello') == 2\n"
        "    assert candidate('AEIOUxyz') == 5\n"
        "    assert candidate('') == 0\n"
    ),
}


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (MBPP_RIGHT + "[DONE]\nYou are an expert...", 1.0),
        ("[BEGIN]\n" + MBPP_RIGHT + "[DONE]", 1.0),
        ("```python\n" + MBPP_RIGHT + "```\n[DONE]", 1.0),
        (MBPP_WRONG + "[DONE]", 0.0),
        ("", 0.0),
        ("import sys\nsys.exit(0)\n" + MBPP_RIGHT, 0.0),
    ],
)
def test_mbpp_scoring(completion, expected):
    assert get_task("mbpp").score(MBPP_DOC, completion, "strict") == expected


def test_mbpp_code_extraction():
    assert extract_code("x = 1\n[DONE]\ny = 2") == "x = 1\n"
    assert extract_code("  [BEGIN]\nx = 1\n") == "\nx = 1\n"
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("    return sum(c in 'aeiou' for c in s.lower())\n", 1.0),
        ("    return sum(c in 'aeiou' for c in s)\n", 0.0),
        ("    while True:\n        pass\n", None),
    ],
)
def test_human_eval_scoring(completion, expected):
    task = get_task("human_eval")
    if expected is None:  # an infinite loop: bounded by the paper rules' 3 s, scores 0
        assert task.score(HUMAN_EVAL_DOC, completion, "paper") == 0.0
        return
    assert task.score(HUMAN_EVAL_DOC, completion, "strict") == expected


@needs_data
def test_canonical_solutions_pass_and_empty_ones_fail():
    mbpp, human_eval = get_task("mbpp"), get_task("human_eval")
    for doc in mbpp.load_docs(DATA, limit=3):
        assert mbpp.score(doc, doc["code"] + "\n[DONE]", "strict") == 1.0
        assert mbpp.score(doc, "[DONE]", "strict") == 0.0
    for doc in human_eval.load_docs(DATA, limit=3):
        for rules in ("paper", "strict"):
            assert human_eval.score(doc, doc["canonical_solution"], rules) == 1.0
            assert human_eval.score(doc, "    pass\n", rules) == 0.0
    # Under the paper rules MBPP keeps only the first function: the reference solution of
    # problem 2 (task 13) needs its "from collections import Counter" and fails.
    docs = mbpp.load_problems(DATA, limit=3)
    assert [mbpp.score(d, d["code"] + "\n[DONE]", "paper") for d in docs] == [1.0, 1.0, 0.0]


# --- tasks and data resolution -------------------------------------------------------


def test_registry():
    assert set(TASKS) == {"mbpp", "human_eval", "gsm8k", "strategy_qa", "mmlu"}
    for name, task in TASKS.items():
        assert task.name == name and task.max_new_tokens > 0
        assert task.kind == ("multiple_choice" if name == "mmlu" else "generate")
    assert TASKS["mbpp"].stop == ("[DONE]",)
    with pytest.raises(HmoeError, match="known: mbpp, human_eval"):
        get_task("mmmlu")


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HMOE_DATA_DIR", raising=False)
    assert resolve_data_dir(None) is None
    assert resolve_data_dir(str(tmp_path)) == tmp_path
    with pytest.raises(HmoeError, match="no such directory"):
        resolve_data_dir(str(tmp_path / "missing"))
    monkeypatch.setenv("HMOE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.setenv("HMOE_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(HmoeError, match="HMOE_DATA_DIR"):
        resolve_data_dir(None)


def test_missing_data_fails_fast_with_one_line(tmp_path, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("HMOE_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DataUnavailable) as info:
        get_task("human_eval").load_docs(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'human_eval' / 'test.jsonl'} does not exist" in message
    assert "Hugging Face Hub (openai/openai_humaneval, test split) failed" in message
    with pytest.raises(DataUnavailable, match="directory is set to hold mbpp") as info:
        get_task("mbpp").load_problems(None)
    assert "HMOE_DATA_DIR" in str(info.value)
    with pytest.raises(DataUnavailable, match=f"{tmp_path / 'gsm8k' / 'shots.md'} does not"):
        get_task("gsm8k").load_docs(tmp_path)
    with pytest.raises(DataUnavailable, match="shots.md"):
        get_task("strategy_qa").load_docs(None)


@needs_data
def test_scoring_needs_only_the_problems(tmp_path):
    """load_problems (what scoring uses) reads <task>/test.jsonl and nothing else."""
    for name in ("mbpp", "human_eval", "gsm8k", "strategy_qa"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "test.jsonl").symlink_to(DATA / name / "test.jsonl")
        docs = get_task(name).load_problems(tmp_path, limit=2)
        assert [d["idx"] for d in docs] == [0, 1] and "fewshot" not in docs[0]
    with pytest.raises(DataUnavailable, match="shots.md"):
        get_task("gsm8k").load_docs(tmp_path)


def test_unreadable_data_file_is_one_line(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_bytes(b'{"question": "\xff"}\n')
    with pytest.raises(HmoeError, match="not UTF-8"):
        get_task("gsm8k").load_problems(tmp_path)

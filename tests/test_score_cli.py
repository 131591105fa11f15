"""``hmoe score`` (experiments.scoring.main): scores generation files, rejects bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from experiments import scoring

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """$HMOE_DATA_DIR, else ../shared/datasets beside the repository, if it exists."""
    path = Path(os.environ.get("HMOE_DATA_DIR") or REPO.parent / "shared" / "datasets")
    return path if path.is_dir() else None


DATA = shared_data_dir()
pytestmark = pytest.mark.skipif(DATA is None, reason="no ../shared/datasets (or HMOE_DATA_DIR)")


def _rows(task: str, limit: int) -> list[dict]:
    with (DATA / task / "test.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle.read().splitlines()[:limit]]


def _write(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _score(capsys, *args: str) -> tuple[int, str, str]:
    code = scoring.main(["--data-dir", str(DATA), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_mbpp_canonical_solutions_score_one_and_empty_ones_zero(tmp_path, capsys):
    rows = _rows("mbpp", 4)
    good = _write(
        tmp_path / "good.jsonl",
        [{"idx": i, "completion": row["code"] + "\n[DONE]"} for i, row in enumerate(rows)],
    )
    code, out, err = _score(capsys, "--task", "mbpp", str(good), "--workers", "2")
    assert code == 0, err
    assert "score 1.0000 (4/4 problems, 4 samples)" in out
    (record,) = [json.loads(x) for x in (tmp_path / "good.score.jsonl").read_text().splitlines()]
    assert record["task"] == "mbpp" and record["score"] == 1.0
    assert record["n_problems"] == 4 and record["n_samples"] == 4
    assert set(record) == {"task", "file", "n_problems", "n_samples", "score", "timestamp"}

    empty = _write(tmp_path / "empty.jsonl", [{"idx": i, "completion": ""} for i in range(3)])
    out_file = tmp_path / "scores.jsonl"
    for _ in range(2):  # appends
        code, out, _ = _score(
            capsys, "--task", "mbpp", str(empty), "--out", str(out_file), "--workers", "1"
        )
        assert code == 0 and "score 0.0000 (0/3 problems" in out
    assert [json.loads(x)["score"] for x in out_file.read_text().splitlines()] == [0.0, 0.0]


def test_human_eval_samples_average_per_problem(tmp_path, capsys):
    rows = _rows("human_eval", 2)
    lines = [
        {"idx": 0, "completion": rows[0]["canonical_solution"]},
        {"idx": 0, "completion": "    return None\n"},
        {"idx": 1, "completion": rows[1]["canonical_solution"]},
        {"idx": 1, "completion": rows[1]["canonical_solution"]},
    ]
    path = _write(tmp_path / "he.jsonl", lines)
    result = scoring.score_file("human_eval", path, DATA, workers=1)
    assert result["score"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["n_problems"] == 2 and result["n_samples"] == 4


def test_gsm8k_and_strategy_qa_files(tmp_path):
    gsm = _write(
        tmp_path / "gsm.jsonl",
        [
            {"idx": 0, "completion": " 16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is $18."},
            {"idx": 1, "completion": " The answer is 4."},
        ],
    )
    assert scoring.score_file("gsm8k", gsm, DATA)["score"] == 0.5
    labels = [row["label"] for row in _rows("strategy_qa", 2)]
    sqa = _write(
        tmp_path / "sqa.jsonl",
        [{"idx": i, "completion": f" So the answer is {label}."} for i, label in enumerate(labels)],
    )
    assert scoring.score_file("strategy_qa", sqa, DATA)["score"] == 1.0


@pytest.mark.parametrize(
    ("task", "lines", "message"),
    [
        ("mbpp", None, "no such file"),
        ("mbpp", [{"idx": 0, "completion": ""}, "{not json"], "line 2: not valid JSON"),
        ("mbpp", [{"idx": 500, "completion": ""}], "idx 500 out of range"),
        ("mbpp", [{"idx": -1, "completion": ""}], "out of range"),
        ("mbpp", [{"idx": "0", "completion": ""}], "idx must be an integer"),
        ("mbpp", [{"completion": ""}], 'expected an object with "idx"'),
        ("mbpp", [], "no generations"),
        ("mbbp", [{"idx": 0, "completion": ""}], "unknown accuracy task 'mbbp'"),
        ("mmlu", [{"idx": 0, "completion": " A"}], "not scored from generations"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, task, lines, message):
    path = tmp_path / "gen.jsonl"
    if lines is not None:
        _write(path, lines)
    code, out, err = _score(capsys, "--task", task, str(path), "--workers", "1")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("hmoe score: error:")
    assert not (tmp_path / "gen.score.jsonl").exists()

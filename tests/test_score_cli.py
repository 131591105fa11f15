"""``hmoe score`` (experiments.scoring.main): both rule sets, the artifact's file layout,
one-line errors (exit 2), --help (exit 0), no few-shot file needed."""

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
needs_data = pytest.mark.skipif(DATA is None, reason="no ../shared/datasets (or HMOE_DATA_DIR)")


def _rows(task: str, limit: int) -> list[dict]:
    assert DATA is not None
    with (DATA / task / "test.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle.read().splitlines()[:limit]]


def _write(path: Path, lines: list[dict | str]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _score(capsys, *args: str, data: Path | None = None) -> tuple[int, str, str]:
    code = scoring.main(["--data-dir", str(data or DATA), *args])
    out, err = capsys.readouterr()
    return code, out, err


@needs_data
def test_strict_mbpp_canonical_solutions_score_one_and_empty_ones_zero(tmp_path, capsys):
    rows = _rows("mbpp", 4)
    good = _write(
        tmp_path / "good.jsonl",
        [{"idx": i, "completion": row["code"] + "\n[DONE]"} for i, row in enumerate(rows)],
    )
    code, out, err = _score(
        capsys, "--task", "mbpp", "--rules", "strict", str(good), "--workers", "2"
    )
    assert code == 0, err
    assert "score 1.0000 (strict rules; 4 lines scored, 4 problems; 4 problems right)" in out
    (record,) = [json.loads(x) for x in (tmp_path / "good.score.jsonl").read_text().splitlines()]
    assert record["task"] == "mbpp" and record["score"] == 1.0 and record["rules"] == "strict"
    assert record["n_problems"] == 4 and record["n_lines"] == 4
    assert set(record) == set(scoring.RECORD_KEYS)

    empty = _write(tmp_path / "empty.jsonl", [{"idx": i, "completion": ""} for i in range(3)])
    out_file = tmp_path / "scores.jsonl"
    for _ in range(2):  # appends
        code, out, _ = _score(
            capsys,
            *("--task", "mbpp", "--rules", "strict", str(empty)),
            *("--out", str(out_file), "--workers", "1"),
        )
        assert code == 0 and "score 0.0000 (strict rules; 3 lines scored" in out
    assert [json.loads(x)["score"] for x in out_file.read_text().splitlines()] == [0.0, 0.0]


@needs_data
def test_paper_rules_are_the_default_and_pair_lines_by_position(tmp_path, capsys):
    rows = _rows("human_eval", 2)
    right = [row["canonical_solution"].lstrip() for row in rows]  # unindented, as stored
    # 3 rounds of 2 problems; idx values are ignored (all 0 here): line j -> problem j % 2.
    lines = [
        {"idx": 0, "completion": right[0]},
        {"idx": 0, "completion": right[1]},
        {"idx": 0, "completion": "pass"},
        {"idx": 0, "completion": right[1]},
        {"idx": 0, "completion": right[0]},  # problem 0's solution for problem 0: right
        {"idx": 0, "completion": right[0]},  # problem 0's solution for problem 1: wrong
    ]
    path = _write(tmp_path / "he.jsonl", lines)
    code, out, err = _score(capsys, "--task", "human_eval", "--limit", "2", str(path))
    assert code == 0, err
    assert "score 0.6667 (paper rules; 6 lines scored, 2 problems; 4 lines right)" in out
    record = json.loads((tmp_path / "he.score.jsonl").read_text())
    assert record["rules"] == "paper" and record["n_lines"] == 6
    # Strict pairs by idx (all 0 -> one problem) and runs the bodies as stored: unindented,
    # so none compiles.
    strict = scoring.score_file("human_eval", path, DATA, rules="strict", workers=1)
    assert strict["score"] == 0.0 and strict["n_problems"] == 1 and strict["n_lines"] == 6


@needs_data
@pytest.mark.slow
def test_full_artifact_layout_without_limit(tmp_path):
    """10 rounds of 164 HumanEval lines, as the artifact's files (here: its solutions)."""
    rows = _rows("human_eval", 164)
    lines = [
        {"idx": i, "completion": row["canonical_solution"].lstrip()}
        for _ in range(10)
        for i, row in enumerate(rows)
    ]
    path = _write(tmp_path / "he.jsonl", lines)
    result = scoring.score_file("human_eval", path, DATA, workers=4)
    assert result["score"] == 1.0 and result["n_lines"] == 1640 and result["n_problems"] == 164


@needs_data
def test_gsm8k_and_strategy_qa_need_no_shots_file(tmp_path, capsys):
    data = tmp_path / "data"  # test.jsonl only, no shots.md
    for task in ("gsm8k", "strategy_qa"):
        (data / task).mkdir(parents=True)
        (data / task / "test.jsonl").symlink_to(DATA / task / "test.jsonl")
    gsm = _write(
        tmp_path / "gsm.jsonl",
        [
            {"idx": 0, "completion": " 16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is $18."},
            {"idx": 1, "completion": " The answer is 4."},
            {"idx": 2, "completion": " She makes 70000 in profit."},  # paper: last number
        ],
    )
    assert [r["label"] for r in _rows("gsm8k", 3)] == ["18", "3", "70000"]
    code, out, err = _score(capsys, "--task", "gsm8k", "--limit", "3", str(gsm), data=data)
    assert code == 0, err
    assert "score 0.6667 (paper rules; 3 lines scored, 3 problems; 2 lines right)" in out
    strict = scoring.score_file("gsm8k", gsm, data, rules="strict")
    assert strict["score"] == pytest.approx(1 / 3)
    labels = [row["label"] for row in _rows("strategy_qa", 2)]
    sqa = _write(
        tmp_path / "sqa.jsonl",
        [{"idx": i, "completion": f" So the answer is {label}."} for i, label in enumerate(labels)],
    )
    assert scoring.score_file("strategy_qa", sqa, data, rules="strict")["score"] == 1.0
    assert scoring.score_file("strategy_qa", sqa, data, limit=2)["score"] == 1.0


def test_help_exits_0(capsys):
    assert scoring.main(["--help"]) == 0
    out, _ = capsys.readouterr()
    assert "--rules {paper,strict}" in out and "--limit" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "mbpp", "--rules", "lenient", "f.jsonl"], "invalid choice: 'lenient'"),
        (["f.jsonl"], "the following arguments are required: --task"),
        (["--task", "mbpp", "--limit", "x", "f.jsonl"], "invalid int value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, args, message):
    assert scoring.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


@needs_data
@pytest.mark.parametrize(
    ("task", "lines", "extra", "message"),
    [
        ("mbpp", None, [], "no such file"),
        ("mbpp", [{"idx": 0, "completion": ""}, "{not json"], [], "line 2: not valid JSON"),
        ("mbpp", [{"idx": 0}], [], 'line 1: expected an object with "idx" and "completion"'),
        ("mbpp", [{"completion": ""}], [], 'expected an object with "idx"'),
        ("mbpp", ["[1, 2]"], [], 'expected an object with "idx"'),
        ("mbpp", [{"idx": 0, "completion": 3}], [], "completion must be a string"),
        ("mbpp", [], [], "no generations"),
        ("mbpp", [{"idx": 0, "completion": ""}] * 3, [], "3 lines is not a multiple of the 500"),
        ("human_eval", [{"idx": 0, "completion": ""}] * 1639, [], "1639 lines is not a multiple"),
        ("mbpp", [{"idx": 0, "completion": ""}] * 3, ["--limit", "2"], "multiple of the 2"),
        ("mbpp", [{"idx": 0, "completion": ""}], ["--limit", "0"], "--limit must be at least 1"),
        ("mbpp", [{"idx": 0, "completion": ""}], ["--limit", "501"], "has only 500 problems"),
        ("mbpp", [{"idx": 500, "completion": ""}], ["--rules", "strict"], "idx 500 out of range"),
        ("mbpp", [{"idx": -1, "completion": ""}], ["--rules", "strict"], "out of range"),
        ("mbpp", [{"idx": "0", "completion": ""}], ["--rules", "strict"], "idx must be an int"),
        ("mbbp", [{"idx": 0, "completion": ""}], [], "unknown accuracy task 'mbbp'"),
        ("mmlu", [{"idx": 0, "completion": " A"}], [], "not scored from generations"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, task, lines, extra, message):
    path = tmp_path / "gen.jsonl"
    if lines is not None:
        _write(path, lines)
    code, out, err = _score(capsys, "--task", task, str(path), "--workers", "1", *extra)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("hmoe score: error:")
    assert not (tmp_path / "gen.score.jsonl").exists()


@needs_data
def test_not_utf8_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "gen.jsonl"
    path.write_bytes(b'{"idx": 0, "completion": "ok"}\n{"idx": 1, "completion": "\xe9t\xe9"}\n')
    code, out, err = _score(capsys, "--task", "gsm8k", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "line 2: not UTF-8 text (byte 0xe9 at offset 57)" in err


def test_missing_data_names_what_and_where(tmp_path, capsys, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    path = _write(tmp_path / "gen.jsonl", [{"idx": 0, "completion": "The answer is 1."}])
    empty = tmp_path / "data"
    empty.mkdir()
    code, out, err = _score(capsys, "--task", "gsm8k", str(path), data=empty)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{empty / 'gsm8k' / 'test.jsonl'} does not exist" in err
    assert "Hugging Face Hub (openai/gsm8k, test split) failed" in err
    assert "shots" not in err


def test_score_subcommand_help_through_the_hmoe_cli(capsys):
    from experiments.cli import main

    assert main(["score", "--help"]) == 0
    assert "hmoe score" in capsys.readouterr().out

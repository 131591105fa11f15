"""The regression gate ``hmoe compare``: matching, the table, and exit codes 0 / 1 / 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.cli import main as cli_main
from experiments.compare import compare, main
from experiments.results_store import ResultsStore

STAMP = "2025-01-01T00:00:00+00:00"


def _row(pid: str, **kw) -> dict:
    row = {
        "run": "r",
        "point_id": pid,
        "experiment": "decode",
        "stage": "decode",
        "model": "tiny_qwen2_moe",
        "paper_model": "qw2",
        "synthetic": True,
        "system": "engine",
        "precision": "bf16",
        "variant": "",
        "immediate_experts": 8,
        "deferred_experts": 0,
        "prompt_tokens": 32,
        "decode_tokens": 64,
        "task": "",
        "trial": 0,
        "status": "ok",
        "error": "",
        "timestamp": STAMP,
    }
    row.update(kw)
    return row


def write_run(
    path: Path, decode_tps: list[float], scores: tuple[float, float], prefill_tps: float = 100.0
) -> Path:
    """A run: one decode point (trials ``decode_tps``), one prefill point, two accuracy points
    (8+0 and 4+4 on mbpp with ``scores``) and a NOT RUN point that must not be matched."""
    store = ResultsStore(path)
    store.append_point(
        [_row("dec", trial=i, seconds=64 / t, tokens_per_s=t) for i, t in enumerate(decode_tps)]
    )
    store.append_point(
        [
            _row(
                "pre",
                experiment="prefill",
                stage="prefill",
                immediate_experts=None,
                deferred_experts=None,
                prompt_tokens=128,
                decode_tokens=None,
                tokens_per_s=prefill_tps,
                seconds=128 / prefill_tps,
            )
        ]
    )
    for pid, (imm, dfr), score in zip(("a80", "a44"), ((8, 0), (4, 4)), scores, strict=True):
        store.append_point(
            [
                _row(
                    pid,
                    experiment="accuracy",
                    stage="accuracy",
                    precision="int8",
                    immediate_experts=imm,
                    deferred_experts=dfr,
                    prompt_tokens=None,
                    decode_tokens=None,
                    task="mbpp",
                    score=score,
                    seconds=3.0,
                )
            ]
        )
    store.append_point(
        [_row("nr", system="llamacpp", status="not_run", error="no llama.cpp", trial=-1)]
    )
    return path


def test_equal_runs_pass_and_print_every_matched_point(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0, 12.0], (0.50, 0.48))
    new = write_run(tmp_path / "new", [11.0, 11.0], (0.50, 0.48))
    assert main([str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "decode tiny_qwen2_moe engine bf16 8+0 p32 n64" in out
    assert "accuracy tiny_qwen2_moe engine int8 4+4 mbpp" in out
    assert "prefill tiny_qwen2_moe engine bf16 p128" in out
    assert "llamacpp" not in out  # NOT RUN rows are not points
    assert "+0.00 %" in out  # decode mean 11 vs 11
    assert out.strip().endswith("PASS")


def test_means_over_trials_are_compared(tmp_path):
    base = write_run(tmp_path / "base", [10.0, 12.0], (0.5, 0.5))
    new = write_run(tmp_path / "new", [9.0, 10.0], (0.5, 0.5))  # mean 9.5 vs 11: -13.6 %
    result = compare(base, new, max_accuracy_drop=1.0, max_slowdown=5.0)
    dec = result.table[result.table["experiment"] == "decode"].iloc[0]
    assert dec["base"] == pytest.approx(11.0) and dec["new"] == pytest.approx(9.5)
    assert not result.passed and len(result.slow_points) == 1
    assert compare(base, new, max_accuracy_drop=1.0, max_slowdown=14.0).passed


def test_slowdown_beyond_bound_fails(tmp_path, capsys):
    base = write_run(tmp_path / "base", [100.0], (0.5, 0.5), prefill_tps=100.0)
    new = write_run(tmp_path / "new", [100.0], (0.5, 0.5), prefill_tps=94.0)  # -6 %
    assert main([str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "SLOWER" in out and out.strip().endswith("FAIL")
    assert main([str(base), str(new), "--max-slowdown", "7"]) == 0


def test_average_accuracy_drop_beyond_bound_fails(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0], (0.50, 0.50))
    # drops of 3 pp and -1 pp: average 1 pp, at the bound -> pass; 1.5 pp -> fail
    at_bound = write_run(tmp_path / "at", [10.0], (0.47, 0.51))
    assert main([str(base), str(at_bound), "--max-accuracy-drop", "1.0"]) == 0
    over = write_run(tmp_path / "over", [10.0], (0.47, 0.50))
    assert main([str(base), str(over)]) == 1
    out = capsys.readouterr().out
    assert "average drop 1.50 pp" in out and "-3.00 pp" in out
    # Faster and more accurate is never a regression.
    better = write_run(tmp_path / "better", [20.0], (0.9, 0.9), prefill_tps=200.0)
    assert main([str(base), str(better), "--max-accuracy-drop", "0", "--max-slowdown", "0"]) == 0


def test_unusable_input_exits_2_with_one_line(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0], (0.5, 0.5))
    assert main([str(base), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no results table" in err and "\n" not in err
    empty = ResultsStore(tmp_path / "empty")
    empty.append_point([_row("x", status="failed", error="boom", trial=-1)])
    assert main([str(base), str(tmp_path / "empty")]) == 2
    assert "no measured" in capsys.readouterr().err
    other = ResultsStore(tmp_path / "other")
    other.append_point([_row("y", model="tiny_deepseek_v3", tokens_per_s=5.0, seconds=1.0)])
    assert main([str(base), str(tmp_path / "other")]) == 2
    assert "match" in capsys.readouterr().err
    assert main([str(base)]) == 2  # argparse: missing NEW
    assert main([str(base), str(base), "--max-slowdown", "-1"]) == 2


def test_cli_dispatches_compare(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0], (0.5, 0.5))
    assert cli_main(["compare", str(base), str(base)]) == 0
    assert "PASS" in capsys.readouterr().out

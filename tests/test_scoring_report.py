"""Table 2 and claim 5 use the ``paper``-scored rows by default and say which rules scored
the measured numbers; ``strict`` rows are shown only when nothing was paper-scored."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from plots.claims import FAIL, PASS, judge_accuracy
from plots.references import load_references
from plots.results_io import normalize_results
from plots.table2_accuracy import recorded_rules, select_rules, table2_markdown

QW2 = {"model": "qw2", "paper_model": "qw2", "synthetic": False, "layers_run": 28}


def rows(scores: dict[str, tuple[float, float]], rules: str) -> list[dict[str, Any]]:
    """8+0 and 4+4 accuracy rows of qw2 int8, scored by ``rules``."""
    out = []
    for task, (plain, deferred) in scores.items():
        for immediate, deferred_n, score in ((8, 0, plain), (4, 4, deferred)):
            out.append(
                {
                    "run": "t",
                    "experiment": "accuracy",
                    "stage": "accuracy",
                    "system": "engine",
                    "precision": "int8",
                    "variant": "",
                    "trial": 0,
                    "status": "ok",
                    "error": "",
                    "immediate_experts": immediate,
                    "deferred_experts": deferred_n,
                    "task": task,
                    "score": score,
                    "scoring_rules": rules,
                    "layers_total": 28,
                    **QW2,
                }
            )
    return out


PAPER_ROWS = rows({"gsm8k": (0.85, 0.84), "mbpp": (0.52, 0.53)}, "paper")
STRICT_ROWS = rows({"gsm8k": (0.73, 0.60), "mbpp": (0.59, 0.50)}, "strict")


def frame(data: list[dict[str, Any]]) -> pd.DataFrame:
    return normalize_results(pd.DataFrame(data))


def test_select_rules_prefers_paper_and_falls_back():
    both = frame(PAPER_ROWS + STRICT_ROWS)
    kept, chosen, left_out = select_rules(both)
    assert chosen == "paper" and left_out == 4 and (kept["scoring_rules"] == "paper").all()
    kept, chosen, left_out = select_rules(both, "strict")
    assert chosen == "strict" and left_out == 4
    kept, chosen, left_out = select_rules(frame(STRICT_ROWS))
    assert chosen == "strict" and left_out == 0 and len(kept) == 4
    # Rows from before the rules were recorded were scored by what is now "strict".
    old = frame([{**r, "scoring_rules": ""} for r in STRICT_ROWS])
    assert set(recorded_rules(old)) == {"strict"}
    with pytest.raises(ValueError):
        select_rules(both, "lenient")


def test_table2_says_which_rules_scored_the_measured_column():
    references = load_references()
    text = table2_markdown(frame(PAPER_ROWS + STRICT_ROWS), references, {"run": "t"})
    assert "use the `paper` scoring rules" in text
    assert "4 accuracy row(s) scored with other rules are not shown" in text
    assert "| 85.00 | 84.69 |" in text  # the paper-scored gsm8k 8+0 beside the paper's
    assert "73.00" not in text
    text = table2_markdown(frame(STRICT_ROWS), references, {"run": "t"})
    assert "use the `strict` scoring rules, NOT the rules of the paper's numbers" in text
    assert "hmoe score --rules paper" in text and "| 73.00 | 84.69 |" in text


def test_claim5_judges_paper_scored_rows_by_default():
    both = frame(PAPER_ROWS + STRICT_ROWS)
    result = judge_accuracy(both)  # paper: drops 1 and -1 pp -> average 0 pp: PASS
    assert result.status == PASS and "(paper scoring rules)" in result.explanation
    assert all(key.endswith("paper rules") for key in result.ratios)
    strict = judge_accuracy(both, "strict")  # strict: drops 13 and 9 pp -> 11 pp: FAIL
    assert strict.status == FAIL and "(strict scoring rules)" in strict.explanation

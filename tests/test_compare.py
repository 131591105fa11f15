"""The regression gate ``hmoe compare``: matching, mean ± sd and p per point, threshold AND
significance (noisy reruns of identical code pass, real slowdowns fail), exit codes 0 / 1 / 2."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from scipy import stats

from experiments.cli import main as cli_main
from experiments.compare import NO_CHANGE, SLOWER, compare, main
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


def _prefill(pid: str, trial: int, tps: float, prompt: int = 128) -> dict:
    return _row(
        pid,
        experiment="prefill",
        stage="prefill",
        immediate_experts=None,
        deferred_experts=None,
        prompt_tokens=prompt,
        decode_tokens=None,
        trial=trial,
        tokens_per_s=tps,
        seconds=prompt / tps,
    )


def write_run(
    path: Path,
    decode_tps: list[float],
    scores: tuple[float, float],
    prefill_tps: tuple[float, ...] = (100.0,),
) -> Path:
    """A run: one decode point (trials ``decode_tps``), one prefill point (trials
    ``prefill_tps``), two accuracy points (8+0 and 4+4 on mbpp with ``scores``) and a NOT
    RUN point that must not be matched."""
    store = ResultsStore(path)
    store.append_point(
        [_row("dec", trial=i, seconds=64 / t, tokens_per_s=t) for i, t in enumerate(decode_tps)]
    )
    store.append_point([_prefill("pre", i, t) for i, t in enumerate(prefill_tps)])
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


def test_means_sd_and_p_value_are_printed_per_side(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0, 12.0], (0.5, 0.5))
    new = write_run(tmp_path / "new", [9.0, 10.0], (0.5, 0.5))  # mean 9.5 vs 11: -13.6 %
    result = compare(base, new, max_accuracy_drop=1.0, max_slowdown=5.0)
    dec = result.table[result.table["experiment"] == "decode"].iloc[0]
    assert dec["base"] == pytest.approx(11.0) and dec["new"] == pytest.approx(9.5)
    assert dec["base_sd"] == pytest.approx(2**0.5) and dec["new_sd"] == pytest.approx(0.5**0.5)
    assert (dec["base_n"], dec["new_n"]) == (2, 2)
    expected_p = stats.ttest_ind([10.0, 12.0], [9.0, 10.0], equal_var=False).pvalue
    assert dec["p_value"] == pytest.approx(expected_p)  # about 0.35: noise, not a regression
    assert dec["verdict"] == NO_CHANGE and dec["why"].startswith("not significant (p=0.")
    assert result.passed and result.slow_points == []
    assert main([str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "11.00 ± 1.41 (n=2, CV 13% > 10%)" in out and "9.50 ± 0.71 (n=2) |" in out
    assert f"p={expected_p:.3g}" in out and "-13.64 %" in out


def test_significant_slowdown_beyond_bound_fails(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0], (0.5, 0.5), prefill_tps=(100.0, 101.0, 99.0))
    new = write_run(tmp_path / "new", [10.0], (0.5, 0.5), prefill_tps=(94.0, 95.0, 93.0))  # -6 %
    assert main([str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "| SLOWER |" in out and out.strip().endswith("FAIL")
    assert "1 of 2 point(s) significantly slower by more than 5 %" in out
    # The same change is within a 7 % threshold: no regression, whatever the p-value.
    assert main([str(base), str(new), "--max-slowdown", "7"]) == 0
    assert "no significant change: within threshold (±7 %)" in capsys.readouterr().out


def test_single_trials_are_never_called_slower(tmp_path, capsys):
    base = write_run(tmp_path / "base", [100.0], (0.5, 0.5), prefill_tps=(100.0,))
    new = write_run(tmp_path / "new", [100.0], (0.5, 0.5), prefill_tps=(50.0,))  # -50 %, n=1
    assert main([str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "no significant change: too few trials (n=1 vs 1" in out
    assert "SLOWER" not in out and out.strip().endswith("PASS")


def test_significant_speedup_is_faster_and_passes(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0, 10.1, 9.9], (0.5, 0.5))
    new = write_run(tmp_path / "new", [20.0, 20.2, 19.8], (0.5, 0.5))
    assert main([str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "| FASTER |" in out and "1 faster" in out


def test_zero_variance_sides_are_exact(tmp_path):
    base = write_run(tmp_path / "base", [10.0, 10.0, 10.0], (0.5, 0.5))
    same = write_run(tmp_path / "same", [10.0, 10.0, 10.0], (0.5, 0.5))
    slower = write_run(tmp_path / "slower", [8.0, 8.0, 8.0], (0.5, 0.5))
    assert compare(base, same, 1.0, 5.0).passed
    result = compare(base, slower, 1.0, 5.0)
    dec = result.table[result.table["experiment"] == "decode"].iloc[0]
    assert dec["p_value"] == 0.0 and dec["verdict"] == SLOWER and not result.passed


def _noisy_run(path: Path, seed: int, factor: float, cv: float, trials: int) -> Path:
    """Twelve prefill points with lognormal trial noise of coefficient of variation ``cv``
    around true means 100, 200, ... tokens/s times ``factor`` (same seed = same noise)."""
    rng = random.Random(seed)
    sigma = math.sqrt(math.log(1 + cv**2))
    store = ResultsStore(path)
    for k in range(12):
        mean = 100.0 * (k + 1) * factor
        values = [rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma) for _ in range(trials)]
        store.append_point([_prefill(f"p{k}", i, v, 32 * (k + 1)) for i, v in enumerate(values)])
    return path


@pytest.mark.parametrize("seed", range(8))
def test_rerun_of_identical_code_with_high_noise_passes(tmp_path, capsys, seed):
    # CV 30 %, 3 trials, same true means: the old 5 % threshold alone called such points
    # SLOWER; threshold AND significance (adjusted over the 12 points) must not.
    base = _noisy_run(tmp_path / "base", 1000 + seed, 1.0, 0.30, 3)
    new = _noisy_run(tmp_path / "new", 2000 + seed, 1.0, 0.30, 3)
    result = compare(base, new, max_accuracy_drop=1.0, max_slowdown=5.0)
    assert (result.table["change_pct"] < -5).any()  # noise alone moves means beyond 5 %
    assert main([str(base), str(new)]) == 0
    assert "0 of 12 point(s) significantly slower" in capsys.readouterr().out


@pytest.mark.parametrize(("cv", "trials"), [(0.10, 3), (0.30, 5)])
@pytest.mark.parametrize("seed", range(4))
def test_twofold_slowdown_fails(tmp_path, capsys, seed, cv, trials):
    base = _noisy_run(tmp_path / "base", 1000 + seed, 1.0, cv, trials)
    new = _noisy_run(tmp_path / "new", 2000 + seed, 0.5, cv, trials)
    assert main([str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "| SLOWER |" in out and out.strip().endswith("FAIL")


def test_within_threshold_change_passes_even_when_significant(tmp_path, capsys):
    base = _noisy_run(tmp_path / "base", 7, 1.0, 0.002, 3)
    new = _noisy_run(tmp_path / "new", 8, 0.97, 0.002, 3)  # 3 % slower, clearly measurable
    result = compare(base, new, max_accuracy_drop=1.0, max_slowdown=5.0)
    assert (result.table["p_adjusted"] < 0.05).all()
    assert (result.table["why"] == "within threshold (±5 %)").all()
    assert main([str(base), str(new)]) == 0
    assert main([str(base), str(new), "--max-slowdown", "2"]) == 1
    capsys.readouterr()


def test_alpha_option_is_checked(tmp_path, capsys):
    base = write_run(tmp_path / "base", [10.0], (0.5, 0.5))
    assert main([str(base), str(base), "--alpha", "0"]) == 2
    assert main([str(base), str(base), "--alpha", "1.5"]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert main([str(base), str(base), "--alpha", "0.01"]) == 0


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
    better = write_run(tmp_path / "better", [20.0], (0.9, 0.9), prefill_tps=(200.0,))
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

"""The five claims: PASS, FAIL, NOT RUN and NOT MEANINGFUL on hand-made results.

Throughput claims are judged on a synthetic layer slice of the real shapes (``MODEL``); on
a tiny synthetic stand-in (``TINY``) they are NOT MEANINGFUL."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from plots.claims import (
    FAIL,
    NOT_MEANINGFUL,
    NOT_RUN,
    PASS,
    evaluate_claims,
    judge_accuracy,
    judge_decode,
    judge_decode_breakdown,
    judge_prefill,
    judge_prefill_breakdown,
)
from plots.references import load_references, reference_points
from plots.results_io import normalize_results

MODEL = {
    "model": "qw2",
    "paper_model": "qw2",
    "synthetic": True,
    "layers_run": 4,
    "layers_total": 28,
    "model_source": "synthetic-slice",
}
TINY = {
    "model": "tiny_qwen2_moe",
    "paper_model": "qw2",
    "synthetic": True,
    "layers_run": 2,
    "layers_total": 2,
    "model_source": "synthetic-tiny",
}
LENGTHS = (32, 128, 512)


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return normalize_results(pd.DataFrame(rows))


def row(**fields: Any) -> dict[str, Any]:
    base = {"run": "t", "status": "ok", "trial": 0, "error": "", "variant": "", "task": ""}
    return {**base, **MODEL, **fields}


def prefill_rows(engine: float, fiddler: float | None, llamacpp: float | None) -> list[dict]:
    """Prefill at three lengths; a baseline given as None is recorded NOT RUN."""
    rows = []
    for length in LENGTHS:
        for system, precision, tps in (
            ("engine", "bf16", engine),
            ("fiddler", "bf16", fiddler),
            ("llamacpp", "fp16", llamacpp),
        ):
            common = {
                "experiment": "prefill",
                "stage": "prefill",
                "system": system,
                "precision": precision,
                "prompt_tokens": length,
            }
            if tps is None:
                rows.append(
                    row(
                        **common,
                        status="not_run",
                        trial=-1,
                        error=f"{system} unavailable: package missing",
                    )
                )
            else:
                rows.append(row(**common, tokens_per_s=tps * length))
    return rows


def test_prefill_pass_when_engine_far_ahead_everywhere() -> None:
    result = judge_prefill(frame(prefill_rows(engine=40.0, fiddler=2.0, llamacpp=1.0)))
    assert result.status == PASS
    assert result.ratios["qw2 engine/llamacpp prefill (full) best"] == pytest.approx(40)
    assert result.ratios["qw2 engine/fiddler prefill (full) worst"] == pytest.approx(20)


def test_prefill_fails_when_engine_is_ten_times_slower() -> None:
    result = judge_prefill(frame(prefill_rows(engine=1.0, fiddler=10.0, llamacpp=10.0)))
    assert result.status == FAIL
    assert "not faster than fiddler" in result.explanation


def test_prefill_fails_below_best_case_threshold() -> None:
    result = judge_prefill(frame(prefill_rows(engine=5.0, fiddler=1.0, llamacpp=1.0)))
    assert result.status == FAIL
    assert "below 15x" in result.explanation


def test_prefill_not_run_names_the_missing_baseline_and_why() -> None:
    result = judge_prefill(frame(prefill_rows(engine=40.0, fiddler=1.0, llamacpp=None)))
    assert result.status == NOT_RUN
    assert any("llamacpp" in m and "package missing" in m for m in result.missing)


def test_prefill_fail_wins_over_missing_points() -> None:
    result = judge_prefill(frame(prefill_rows(engine=1.0, fiddler=3.0, llamacpp=None)))
    assert result.status == FAIL


def test_prefill_uses_mean_of_ok_trials_only() -> None:
    rows = prefill_rows(engine=40.0, fiddler=1.0, llamacpp=1.0)
    # A failed trial with a bogus huge baseline number must not count.
    rows.append(
        row(
            experiment="prefill",
            stage="prefill",
            system="fiddler",
            precision="bf16",
            prompt_tokens=32,
            tokens_per_s=1e9,
            status="failed",
            error="crash",
        )
    )
    rows.append(
        row(
            experiment="prefill",
            stage="prefill",
            system="engine",
            precision="bf16",
            prompt_tokens=32,
            trial=1,
            tokens_per_s=20.0 * 32,
        )
    )
    result = judge_prefill(frame(rows))
    assert result.status == PASS
    assert result.ratios["qw2 engine/fiddler prefill (full) worst"] == pytest.approx(30)


def decode_rows(k0: float, deferral: float | None, fiddler: float, llamacpp: float) -> list[dict]:
    configs = [
        ("engine", "bf16", 8, 0, k0),
        ("fiddler", "bf16", 8, 0, fiddler),
        ("llamacpp", "fp16", 8, 0, llamacpp),
    ]
    if deferral is not None:
        configs.append(("engine", "bf16", 6, 2, deferral))
    return [
        row(
            experiment="decode",
            stage="decode",
            system=system,
            precision=precision,
            immediate_experts=imm,
            deferred_experts=dfr,
            prompt_tokens=32,
            decode_tokens=64,
            tokens_per_s=tps,
        )
        for system, precision, imm, dfr, tps in configs
    ]


def test_decode_pass() -> None:
    result = judge_decode(frame(decode_rows(k0=20, deferral=25, fiddler=5, llamacpp=10)))
    assert result.status == PASS
    assert result.ratios["best engine (incl. deferral)/baseline"] == pytest.approx(5.0)
    assert result.ratios["qw2 bf16 deferral/k+0"] == pytest.approx(1.25)


def test_decode_fails_when_deferral_is_slower() -> None:
    result = judge_decode(frame(decode_rows(k0=20, deferral=15, fiddler=4, llamacpp=10)))
    assert result.status == FAIL
    assert "deferral does not add" in result.explanation


def test_decode_fails_when_engine_slower_than_baseline() -> None:
    result = judge_decode(frame(decode_rows(k0=2, deferral=3, fiddler=20, llamacpp=20)))
    assert result.status == FAIL


def test_decode_not_run_without_deferral_config() -> None:
    result = judge_decode(frame(decode_rows(k0=20, deferral=None, fiddler=4, llamacpp=10)))
    assert result.status == NOT_RUN
    assert any("deferral" in m for m in result.missing)


PREFILL_GOOD = {"base": 100, "+v": 40, "+m": 200, "+m+d": 300, "+m+d+n": 400, "+m+d+n+c": 404}
DECODE_GOOD = {"base": 5, "+v": 9, "+m": 8, "+v+d": 10, "+v+d+n": 11, "+v+d+n+c": 12}


def breakdown_rows(stage: str, values: dict[str, float | None]) -> list[dict]:
    rows = []
    for variant, tps in values.items():
        common = {
            "experiment": "breakdown",
            "stage": stage,
            "system": "fiddler" if variant == "base" else "engine",
            "precision": "bf16",
            "variant": variant,
            "prompt_tokens": 512 if stage == "prefill" else 32,
            "decode_tokens": 0 if stage == "prefill" else 64,
        }
        if tps is None:
            rows.append(row(**common, status="not_run", trial=-1, error="needs 2 NUMA nodes"))
        else:
            rows.append(row(**common, tokens_per_s=tps))
    return rows


def test_prefill_breakdown_pass_fail_not_run() -> None:
    assert judge_prefill_breakdown(frame(breakdown_rows("prefill", PREFILL_GOOD))).status == PASS
    off = {**PREFILL_GOOD, "+m+d+n+c": 440}  # +c 10% faster: outside +-3%
    failed = judge_prefill_breakdown(frame(breakdown_rows("prefill", off)))
    assert failed.status == FAIL
    assert "+m+d+n+c/+m+d+n" in failed.explanation
    fast_v = {**PREFILL_GOOD, "+v": 150}  # AVX-512 faster than base contradicts the claim
    assert judge_prefill_breakdown(frame(breakdown_rows("prefill", fast_v))).status == FAIL
    missing = {**PREFILL_GOOD, "+m+d+n": None, "+m+d+n+c": None}
    not_run = judge_prefill_breakdown(frame(breakdown_rows("prefill", missing)))
    assert not_run.status == NOT_RUN
    assert "needs 2 NUMA nodes" in not_run.explanation
    assert judge_prefill_breakdown(frame(breakdown_rows("decode", DECODE_GOOD))).status == NOT_RUN


def test_decode_breakdown_pass_fail_not_run() -> None:
    assert judge_decode_breakdown(frame(breakdown_rows("decode", DECODE_GOOD))).status == PASS
    amx_ahead = {**DECODE_GOOD, "+m": 9.5}
    result = judge_decode_breakdown(frame(breakdown_rows("decode", amx_ahead)))
    assert result.status == FAIL
    assert "+v/+m" in result.explanation
    missing = {k: v for k, v in DECODE_GOOD.items() if k != "+v+d+n+c"}
    result = judge_decode_breakdown(frame(breakdown_rows("decode", missing)))
    assert result.status == NOT_RUN
    assert "not in this run" in result.explanation


def accuracy_rows(scores: dict[str, tuple[float, float]], synthetic: bool) -> list[dict]:
    rows = []
    for task, (plain, deferred) in scores.items():
        for imm, dfr, score in ((8, 0, plain), (4, 4, deferred)):
            rows.append(
                row(
                    experiment="accuracy",
                    stage="accuracy",
                    system="engine",
                    precision="int8",
                    immediate_experts=imm,
                    deferred_experts=dfr,
                    task=task,
                    score=score,
                    synthetic=synthetic,
                    model="qw2" if not synthetic else "tiny_qwen2_moe",
                )
            )
    return rows


def test_accuracy_pass_fail_not_meaningful_not_run() -> None:
    small = {"gsm8k": (0.80, 0.79), "mbpp": (0.50, 0.50)}  # average drop 0.5 pp
    result = judge_accuracy(frame(accuracy_rows(small, synthetic=False)))
    assert result.status == PASS
    assert list(result.ratios.values()) == [pytest.approx(0.5)]
    large = {"gsm8k": (0.80, 0.74), "mbpp": (0.50, 0.50)}  # average drop 3 pp
    assert judge_accuracy(frame(accuracy_rows(large, synthetic=False))).status == FAIL
    noise = judge_accuracy(frame(accuracy_rows(large, synthetic=True)))
    assert noise.status == NOT_MEANINGFUL
    only_plain = [r for r in accuracy_rows(small, synthetic=False) if r["deferred_experts"] == 0]
    assert judge_accuracy(frame(only_plain)).status == NOT_RUN


def test_everything_not_run_gives_not_run_with_reasons() -> None:
    rows = [
        {**r, "status": "not_run", "trial": -1, "tokens_per_s": None, "error": "no GPU"}
        for r in prefill_rows(1, 1, 1) + decode_rows(1, 1, 1, 1)
    ]
    claims = evaluate_claims(frame(rows))
    assert [c.number for c in claims] == [1, 2, 3, 4, 5]
    assert all(c.status == NOT_RUN for c in claims)
    assert "no GPU" in claims[0].explanation
    assert "no accuracy points" in claims[4].explanation


def test_paper_numbers_satisfy_every_claim() -> None:
    claims = evaluate_claims(reference_points(load_references()))
    assert [c.status for c in claims] == [PASS] * 5
    best = max(v for k, v in claims[0].ratios.items() if k.endswith("best"))
    assert best == pytest.approx(412.17 / 20.88)


def _on(model: dict[str, Any], rows: list[dict]) -> list[dict]:
    """``rows`` measured on ``model`` instead of MODEL."""
    return [{**r, **model} for r in rows]


TINY_CASES = {
    1: (judge_prefill, prefill_rows(engine=1.0, fiddler=10.0, llamacpp=10.0)),
    2: (judge_decode, decode_rows(k0=2, deferral=3, fiddler=20, llamacpp=20)),
    3: (judge_prefill_breakdown, breakdown_rows("prefill", {**PREFILL_GOOD, "+v": 150})),
    4: (judge_decode_breakdown, breakdown_rows("decode", {**DECODE_GOOD, "+m": 9.5})),
}


@pytest.mark.parametrize("number", sorted(TINY_CASES))
def test_throughput_claims_on_tiny_models_are_not_meaningful(number: int) -> None:
    judge, rows = TINY_CASES[number]
    assert judge(frame(rows)).status == FAIL  # these numbers contradict the claim on a slice
    result = judge(frame(_on(TINY, rows)))
    assert result.number == number and result.status == NOT_MEANINGFUL
    assert "tiny synthetic stand-in(s) (tiny_qwen2_moe)" in result.explanation
    assert "say nothing about the paper's models" in result.explanation
    # A tiny model is recognised by its layers alone (rows without model_source, as older
    # results.csv files have).
    bare = [{k: v for k, v in r.items() if k != "model_source"} for r in _on(TINY, rows)]
    assert judge(frame(bare)).status == NOT_MEANINGFUL


def test_slice_is_judged_and_says_so_while_tiny_beside_it_is_left_out() -> None:
    slice_rows = prefill_rows(engine=40.0, fiddler=2.0, llamacpp=1.0)
    tiny_rows = _on(TINY, prefill_rows(engine=1.0, fiddler=10.0, llamacpp=10.0))
    result = judge_prefill(frame(slice_rows + tiny_rows))
    assert result.status == PASS  # the tiny model's contradicting ratios are not judged
    assert not any(name.startswith("tiny_qwen2_moe") for name in result.ratios)
    assert "tiny synthetic stand-in(s) tiny_qwen2_moe not judged" in result.explanation
    assert "synthetic layer slice(s) of the real shapes (qw2)" in result.explanation
    real = {**MODEL, "synthetic": False, "layers_run": 28, "model_source": "/ckpt/qw2"}
    checkpoint = judge_prefill(frame(_on(real, slice_rows)))
    assert checkpoint.status == PASS and "slice" not in checkpoint.explanation


def test_claim_that_needs_an_unimplemented_variant_says_it_cannot_pass() -> None:
    rows = breakdown_rows("decode", {**DECODE_GOOD, "+v+d+n+c": None})
    reason = "CUDA Graph decode is not implemented yet"
    rows = [{**r, "error": reason} if r["variant"] == "+v+d+n+c" else r for r in rows]
    result = judge_decode_breakdown(frame(rows))
    assert result.status == NOT_RUN
    assert result.explanation.startswith("this version cannot pass this claim by construction")
    assert "+v+d+n+c" in result.explanation and reason in result.explanation
    # A point missing for another reason (hardware) is not "by construction".
    other = judge_decode_breakdown(frame(breakdown_rows("decode", {**DECODE_GOOD, "+m": None})))
    assert other.status == NOT_RUN and "by construction" not in other.explanation


def test_tiny_models_not_run_are_not_meaningful_but_slices_not_run_name_why() -> None:
    rows = [
        {**r, "status": "not_run", "trial": -1, "tokens_per_s": None, "error": "no GPU"}
        for r in prefill_rows(1, 1, 1)
    ]
    assert judge_prefill(frame(_on(TINY, rows))).status == NOT_MEANINGFUL
    sliced = judge_prefill(frame(rows))
    assert sliced.status == NOT_RUN and "no GPU" in sliced.explanation


def test_tiny_breakdown_with_unimplemented_variants_says_both() -> None:
    reason = "engine cpu_kernel=avx512: the avx512 CPU expert kernel is not implemented yet"
    rows = breakdown_rows("decode", {**DECODE_GOOD, "+v": None, "+v+d": None})
    rows = [{**r, "error": reason} if r["status"] == "not_run" else r for r in rows]
    result = judge_decode_breakdown(frame(_on(TINY, rows)))
    assert result.status == NOT_MEANINGFUL
    assert f"nor could this version pass it by construction: +v, +v+d not run ({reason})" in (
        result.explanation
    )


def test_llamacpp_best_is_shown_but_does_not_judge_the_papers_claim() -> None:
    """The paper's claim 1 is against its baselines (Fiddler, llama.cpp with the artifact's
    flags); llama.cpp at its best settings is measured beside them and its ratio listed,
    but an engine slower than it does not fail the claim."""
    best = [
        row(
            experiment="prefill",
            stage="prefill",
            system="llamacpp_best",
            precision="fp16",
            prompt_tokens=length,
            tokens_per_s=100_000.0,
        )
        for length in LENGTHS
    ]
    result = judge_prefill(frame(prefill_rows(2000.0, 100.0, 100.0) + best))
    assert result.status == PASS, result.explanation
    assert any("llamacpp_best" in name for name in result.ratios)

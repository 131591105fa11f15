"""Judge the artifact's five claims on ratios measured within one run.

Only ratios between points of the same run count (never absolute numbers against the
paper's hardware). Each claim is PASS, FAIL, NOT RUN (points it needs are missing; the
result says which and why) or NOT MEANINGFUL (throughput measured only on tiny synthetic
stand-ins, accuracy only on synthetic weights). Throughput claims (1-4) are judged on real
checkpoints and on synthetic layer slices of the real shapes, where ratios between systems
on the same slice are meaningful. A claim that needs a point this version does not
implement says so: it cannot pass by construction.
Values are the mean over the ok trials of each point. A comparison that already
contradicts a claim makes it FAIL even when other points are missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import pandas as pd

from experiments.variants import PAPER_RELATIONS
from plots.accuracy_drop import average_drops
from plots.breakdown_settings import BreakdownSetting, breakdown_settings
from plots.point_means import SLICE, TINY, model_kinds, point_means
from plots.speedups import ENGINE, PAPER_BASELINES, decode_speedups, prefill_speedups

PASS = "PASS"
FAIL = "FAIL"
NOT_RUN = "NOT RUN"
NOT_MEANINGFUL = "NOT MEANINGFUL"

PREFILL_BEST_SPEEDUP_MIN = 15.0  # claim 1: best-case engine/baseline prefill ratio
DECODE_BEST_SPEEDUP_MIN = 4.0  # claim 2: best-case engine (incl. deferral)/baseline decode ratio
CUDA_GRAPH_PREFILL_TOLERANCE = 0.03  # claim 3: +c within +-3% of +m+d+n
ACCURACY_MAX_AVG_DROP_PP = 1.0  # claim 5: average drop over the benchmarks, percentage points

# (variant a, relation, variant b): "<" a slower than b, ">" a faster, "~" within tolerance.
PREFILL_CHECKS = PAPER_RELATIONS["prefill"]
DECODE_CHECKS = PAPER_RELATIONS["decode"]

TITLES = {
    1: "Prefill: engine beats both baselines at every prompt length; best case >= "
    f"{PREFILL_BEST_SPEEDUP_MIN:g}x",
    2: "Decode: engine beats both baselines, deferral adds more; best case >= "
    f"{DECODE_BEST_SPEEDUP_MIN:g}x",
    3: "Prefill breakdown: +v < base; +m > base; +d, +n add; +c within "
    f"{CUDA_GRAPH_PREFILL_TOLERANCE:.0%}",
    4: "Decode breakdown: +v, +m > base; +v > +m; +d, +n, +c each add",
    5: f"Accuracy: average drop from expert deferral <= {ACCURACY_MAX_AVG_DROP_PP:g} pp",
}


@dataclass(frozen=True)
class ClaimResult:
    """One claim's verdict, the ratios it rests on, and a one-line explanation."""

    number: int
    title: str
    status: str
    ratios: dict[str, float] = field(default_factory=dict)
    explanation: str = ""
    missing: tuple[str, ...] = ()


def _reason(rows: pd.DataFrame) -> str:
    """' (why)' from the most common error of rows that did not run ok, else ''."""
    errors = [str(e) for e in rows.loc[rows["status"] != "ok", "error"] if str(e).strip()]
    if errors:
        return f" ({Counter(errors).most_common(1)[0][0]})"
    if rows.empty:
        return " (not in this run)"
    return ""


def _missing_pair(rows: pd.DataFrame, model: str, baseline: str, what: str) -> str:
    mine = rows[rows["model"] == model]
    engine = mine[mine["system"] == ENGINE]
    other = mine[mine["system"] == baseline]
    if not (engine["status"] == "ok").any():
        why = f"engine{_reason(engine)}"
    elif not (other["status"] == "ok").any():
        why = f"{baseline}{_reason(other)}"
    else:
        why = "no point matched in model, precision class" + (
            " and prompt length" if what == "prefill" else ""
        )
    return f"engine vs {baseline} {what} on {model}: {why}"


NOT_IMPLEMENTED = "not implemented"  # in a NOT RUN reason: this version lacks the code


def _throughput_scope(
    results: pd.DataFrame, number: int, experiment: str, stage: str | None = None
) -> tuple[pd.DataFrame, ClaimResult | None, str]:
    """Claim ``number``'s results without tiny synthetic stand-ins, and what that means.

    Returns (results to judge, NOT MEANINGFUL when only tiny stand-ins ran the experiment
    else None, a note for the explanation naming what was left out and what was judged).
    """
    kinds = model_kinds(results)
    mine = results["experiment"] == experiment
    if stage is not None:
        mine &= results["stage"] == stage
    tiny = sorted(m for m in results.loc[mine, "model"].unique() if kinds.get(m) == TINY)
    dropped = mine & results["model"].isin(tiny)
    judged = results[~dropped]
    names = ", ".join(tiny)
    if tiny and not (mine & ~dropped).any():
        text = (
            f"{experiment} throughput was measured only on tiny synthetic stand-in(s) "
            f"({names}): ratios of toy shapes say nothing about the paper's models; the claim "
            "is judged on real checkpoints or synthetic layer slices of the real shapes"
        )
        unbuilt = _not_implemented(results[mine])
        if unbuilt:
            text += f"; nor could this version pass it by construction: {unbuilt}"
        return judged, ClaimResult(number, TITLES[number], NOT_MEANINGFUL, {}, text), ""
    notes = [f"tiny synthetic stand-in(s) {names} not judged"] if tiny else []
    slices = sorted(
        m for m in judged.loc[mine & ~dropped, "model"].unique() if kinds.get(m) == SLICE
    )
    if slices:
        notes.append(
            f"judged on synthetic layer slice(s) of the real shapes ({', '.join(slices)}): "
            "ratios between systems on the same slice are meaningful, absolute tokens/s "
            "are not the paper's"
        )
    return judged, None, "; ".join(notes)


def _not_implemented(rows: pd.DataFrame) -> str:
    """'+v, +v+d not run (why)' for rows NOT RUN because their code is not implemented."""
    reasons = rows["error"].fillna("").astype(str).str.lower()
    bad = rows[(rows["status"] != "ok") & reasons.str.contains(NOT_IMPLEMENTED, regex=False)]
    parts = []
    for error, group in bad.groupby("error", sort=True):
        names = [v or s for v, s in zip(group["variant"], group["system"], strict=True)]
        parts.append(f"{', '.join(dict.fromkeys(names))} not run ({error})")
    return "; ".join(parts)


def _noted(result: ClaimResult, note: str) -> ClaimResult:
    """``result`` with ``note`` appended to its explanation."""
    return replace(result, explanation=f"{result.explanation} [{note}]") if note else result


def _verdict(
    number: int,
    ratios: dict[str, float],
    failures: list[str],
    missing: list[str],
    best: float | None,
    threshold: float | None,
    ok_text: str,
) -> ClaimResult:
    """FAIL on any contradiction, else NOT RUN on missing points, else the threshold."""
    if failures:
        return ClaimResult(
            number, TITLES[number], FAIL, ratios, "; ".join(failures), tuple(missing)
        )
    if missing:
        text = "required points missing: " + "; ".join(missing)
        unbuilt = [m for m in missing if NOT_IMPLEMENTED in m.lower()]
        if unbuilt:
            text = (
                "this version cannot pass this claim by construction: points it needs are "
                f"not implemented: {'; '.join(unbuilt)}"
            )
            others = [m for m in missing if m not in unbuilt]
            text += f"; also missing: {'; '.join(others)}" if others else ""
        return ClaimResult(number, TITLES[number], NOT_RUN, ratios, text, tuple(missing))
    if threshold is not None and not (best is not None and best >= threshold):
        text = f"best-case speedup {best:.2f}x is below {threshold:g}x"  # NaN: no pairs
        return ClaimResult(number, TITLES[number], FAIL, ratios, text)
    return ClaimResult(number, TITLES[number], PASS, ratios, ok_text)


def _speedup_ratios(
    pairs: pd.DataFrame, ratios: dict[str, float], failures: list[str], what: str
) -> None:
    for (model, baseline, pclass), group in pairs.groupby(
        ["model", "baseline", "precision_class"], sort=True
    ):
        name = f"{model} engine/{baseline} {what} ({pclass})"
        ratios[f"{name} worst"] = float(group["speedup"].min())
        ratios[f"{name} best"] = float(group["speedup"].max())
        losing = group[group["speedup"] <= 1.0]
        if losing.empty or baseline not in PAPER_BASELINES:
            continue  # the paper's claims are about its baselines; others are only shown
        if what == "prefill":
            where = ", ".join(str(int(x)) for x in sorted(losing["prompt_tokens"].unique()))
            failures.append(
                f"{model}: engine not faster than {baseline} ({pclass}) at prompt "
                f"length(s) {where} (worst {losing['speedup'].min():.2f}x)"
            )
        else:
            failures.append(
                f"{model}: engine k+0 not faster than {baseline} ({pclass}): "
                f"{losing['speedup'].min():.2f}x"
            )


def judge_prefill(results: pd.DataFrame) -> ClaimResult:
    """Claim 1 on the run's prefill points."""
    results, meaningless, note = _throughput_scope(results, 1, "prefill")
    if meaningless is not None:
        return meaningless
    rows = results[results["experiment"] == "prefill"]
    pairs = prefill_speedups(point_means(results, "prefill"))
    ratios: dict[str, float] = {}
    failures: list[str] = []
    _speedup_ratios(pairs, ratios, failures, "prefill")
    models = sorted(m for m in rows["model"].unique() if m)
    missing = [] if models else ["no prefill points in this run"]
    for model in models:
        for baseline in PAPER_BASELINES:
            if pairs[(pairs["model"] == model) & (pairs["baseline"] == baseline)].empty:
                missing.append(_missing_pair(rows, model, baseline, "prefill"))
    judged = pairs[pairs["baseline"].isin(PAPER_BASELINES)]
    best = float(judged["speedup"].max()) if not judged.empty else float("nan")
    text = (
        f"engine faster than both baselines at all {len(judged)} matched points; "
        f"best case {best:.2f}x >= {PREFILL_BEST_SPEEDUP_MIN:g}x"
    )
    return _noted(
        _verdict(1, ratios, failures, missing, best, PREFILL_BEST_SPEEDUP_MIN, text), note
    )


def _deferral_gains(
    engine: pd.DataFrame, ratios: dict[str, float], failures: list[str]
) -> set[str]:
    """Best deferral config / k+0 per engine model x precision; returns models with a pair."""
    covered = set()
    deferred = engine["deferred_experts"].fillna(0)
    for (model, _layers, precision), group in engine.assign(deferred=deferred).groupby(
        ["model", "layers_run", "precision"], dropna=False, sort=True
    ):
        plain = group[group["deferred"] == 0]
        with_deferral = group[group["deferred"] > 0]
        if plain.empty or with_deferral.empty:
            continue
        covered.add(model)
        gain = float(with_deferral["tokens_per_s"].max() / plain["tokens_per_s"].max())
        ratios[f"{model} {precision} deferral/k+0"] = gain
        if gain <= 1.0:
            failures.append(f"{model} {precision}: expert deferral does not add ({gain:.2f}x)")
    return covered


def judge_decode(results: pd.DataFrame) -> ClaimResult:
    """Claim 2 on the run's decode points."""
    results, meaningless, note = _throughput_scope(results, 2, "decode")
    if meaningless is not None:
        return meaningless
    rows = results[results["experiment"] == "decode"]
    points = point_means(results, "decode")
    pairs = decode_speedups(points)
    plain_pairs = pairs[pairs["deferred_experts"].fillna(0) == 0]
    ratios: dict[str, float] = {}
    failures: list[str] = []
    _speedup_ratios(plain_pairs, ratios, failures, "decode k+0")
    covered = _deferral_gains(points[points["system"] == ENGINE], ratios, failures)
    models = sorted(m for m in rows["model"].unique() if m)
    missing = [] if models else ["no decode points in this run"]
    for model in models:
        for baseline in PAPER_BASELINES:
            mine = plain_pairs[
                (plain_pairs["model"] == model) & (plain_pairs["baseline"] == baseline)
            ]
            if mine.empty:
                missing.append(_missing_pair(rows, model, baseline, "decode k+0"))
        if model not in covered:
            engine_rows = rows[(rows["model"] == model) & (rows["system"] == ENGINE)]
            missing.append(
                f"engine k+0 and deferral (N+D, D > 0) decode at one precision on "
                f"{model}{_reason(engine_rows)}"
            )
    judged = pairs[pairs["baseline"].isin(PAPER_BASELINES)]
    best = float(judged["speedup"].max()) if not judged.empty else float("nan")
    if not judged.empty:
        ratios["best engine (incl. deferral)/baseline"] = best
    text = (
        f"engine k+0 faster than both baselines, deferral adds on top; best case "
        f"{best:.2f}x >= {DECODE_BEST_SPEEDUP_MIN:g}x"
    )
    return _noted(_verdict(2, ratios, failures, missing, best, DECODE_BEST_SPEEDUP_MIN, text), note)


def _setting_name(setting: BreakdownSetting, settings: list[BreakdownSetting]) -> str:
    if sum(s.model == setting.model for s in settings) == 1:
        return setting.model
    key = setting.key
    workload = key["prompt_tokens"] if setting.stage == "prefill" else key["decode_tokens"]
    return f"{setting.model} {key['precision']} {setting.stage} {workload:g}"


def _check(a: float, relation: str, b: float) -> bool:
    if relation == "<":
        return a < b
    if relation == ">":
        return a > b
    return abs(a / b - 1.0) <= CUDA_GRAPH_PREFILL_TOLERANCE


def _judge_breakdown(
    results: pd.DataFrame, stage: str, number: int, checks: tuple[tuple[str, str, str], ...]
) -> ClaimResult:
    results, meaningless, note = _throughput_scope(results, number, "breakdown", stage)
    if meaningless is not None:
        return meaningless
    settings = breakdown_settings(results, stage)
    ratios: dict[str, float] = {}
    failures: list[str] = []
    missing = [] if settings else [f"no {stage} breakdown points in this run"]
    expected = {
        "<": "slower than",
        ">": "faster than",
        "~": f"within {CUDA_GRAPH_PREFILL_TOLERANCE:.0%} of",
    }
    for setting in settings:
        name = _setting_name(setting, settings)
        for a, relation, b in checks:
            absent = [v for v in (a, b) if v not in setting.values]
            if absent:
                why = ", ".join(
                    f"{v} {setting.missing[v][0]} ({setting.missing[v][1]})" for v in absent
                )
                missing.append(f"{name}: {a} vs {b}: {why}")
                continue
            ratio = setting.values[a] / setting.values[b]
            ratios[f"{name} {a}/{b}"] = ratio
            if not _check(setting.values[a], relation, setting.values[b]):
                failures.append(
                    f"{name}: {a}/{b} = {ratio:.3f}x, expected {a} {expected[relation]} {b}"
                )
    text = f"all {len(ratios)} breakdown comparisons hold"
    return _noted(_verdict(number, ratios, failures, missing, None, None, text), note)


def judge_prefill_breakdown(results: pd.DataFrame) -> ClaimResult:
    """Claim 3 on the run's prefill breakdown points."""
    return _judge_breakdown(results, "prefill", 3, PREFILL_CHECKS)


def judge_decode_breakdown(results: pd.DataFrame) -> ClaimResult:
    """Claim 4 on the run's decode breakdown points."""
    return _judge_breakdown(results, "decode", 4, DECODE_CHECKS)


def judge_accuracy(results: pd.DataFrame, rules: str | None = None) -> ClaimResult:
    """Claim 5 on the run's accuracy points (synthetic weights: NOT MEANINGFUL), scored by
    one rule set: ``rules`` (default: "paper", the paper's) if the run has such rows, else
    the run's other one; the ratios' names say which."""
    from experiments.accuracy_tasks.rules import DEFAULT_RULES
    from plots.table2_accuracy import select_rules

    results, chosen, _ = select_rules(results, rules or DEFAULT_RULES)
    rows = results[results["experiment"] == "accuracy"]
    drops = average_drops(point_means(results, "accuracy"))
    ratios = {
        f"{r.model} {r.precision} {int(r.immediate_experts)}+{int(r.deferred_experts)} "
        f"avg drop pp over {int(r.tasks)} task(s), {chosen} rules": float(r.avg_drop_pp)
        for r in drops.itertuples()
    }
    real = drops[~drops["synthetic"].astype(bool)]
    if not real.empty:
        over = real[real["avg_drop_pp"] > ACCURACY_MAX_AVG_DROP_PP]
        if over.empty:
            worst = real["avg_drop_pp"].max()
            return ClaimResult(
                5,
                TITLES[5],
                PASS,
                ratios,
                f"largest average drop {worst:.2f} pp <= {ACCURACY_MAX_AVG_DROP_PP:g} pp "
                f"({chosen} scoring rules)",
            )
        text = "; ".join(
            f"{r.model} {r.precision}: average drop {r.avg_drop_pp:.2f} pp > "
            f"{ACCURACY_MAX_AVG_DROP_PP:g} pp ({chosen} scoring rules)"
            for r in over.itertuples()
        )
        return ClaimResult(5, TITLES[5], FAIL, ratios, text)
    if not drops.empty:
        return ClaimResult(
            5,
            TITLES[5],
            NOT_MEANINGFUL,
            ratios,
            "accuracy was measured only on synthetic (random-weight) models; "
            "their scores say nothing about deferral's accuracy cost",
        )
    models = sorted(m for m in rows["model"].unique() if m)
    missing = [
        f"k+0 and deferral scores on the same task for {m}{_reason(rows[rows['model'] == m])}"
        for m in models
    ]
    missing = missing or ["no accuracy points in this run"]
    return ClaimResult(
        5,
        TITLES[5],
        NOT_RUN,
        ratios,
        "required points missing: " + "; ".join(missing),
        tuple(missing),
    )


def evaluate_claims(results: pd.DataFrame) -> list[ClaimResult]:
    """All five claims, in order, judged on ``results`` (result rows of one run)."""
    return [
        judge_prefill(results),
        judge_decode(results),
        judge_prefill_breakdown(results),
        judge_decode_breakdown(results),
        judge_accuracy(results),
    ]

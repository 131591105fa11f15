"""Measured-vs-paper Markdown tables for prefill, decode and the breakdown (report body).

Each table has one row per point this run defined (measured, not run or failed) with the
paper's number for the same model, system, precision and workload beside it. A measured
value is shown as mean ± sd (n trials, CV), and a CV above the threshold is flagged
(:data:`NOISY_FLAG`). Paper-only points are left out here; they are in the figures and in
reference_results/.
"""

from __future__ import annotations

import math

import pandas as pd

from experiments.markdown import DASH, md_table, number
from experiments.statistics import DEFAULT_CV_THRESHOLD, is_noisy
from plots.breakdown_settings import STAGE_VARIANTS, breakdown_settings
from plots.describe import experts_label, run_model_label
from plots.point_means import is_slice, point_means, unmeasured_points
from plots.references import reference_points
from plots.speedups import ratio_text
from plots.style import series_name, system_name


def _points_with_status(results: pd.DataFrame, experiment: str) -> pd.DataFrame:
    rows = results[results["experiment"] == experiment]
    ok = point_means(rows).assign(status="ok")
    missing = unmeasured_points(rows).assign(tokens_per_s=float("nan"))
    return pd.concat([ok, missing], ignore_index=True)


def _paper_value(paper: pd.DataFrame, point: pd.Series, columns: list[str]) -> float | None:
    same = paper
    for column in columns:
        same = same[same[column] == point[column]]
    return None if same.empty else float(same["tokens_per_s"].iloc[0])


NOISY_FLAG = f"⚠ CV > {DEFAULT_CV_THRESHOLD:.0%}"


def spread_text(mean: float, sd: float, trials: int, cv: float) -> str:
    """'12.34 ± 0.56 (n=3, CV 4.5%)', flagged when the CV is above the threshold; a single
    trial has no spread: '12.34 (n=1, no sd)'."""
    if math.isnan(sd):
        return f"{mean:.2f} (n={trials}, no sd)"
    cv_text = DASH if math.isnan(cv) else f"{cv:.1%}"
    flag = f" {NOISY_FLAG}" if is_noisy(cv) else ""
    return f"{mean:.2f} ± {sd:.2f} (n={trials}, CV {cv_text}){flag}"


def _measured_text(point: pd.Series) -> str:
    if point["status"] != "ok":
        return f"{point['status'].replace('_', ' ')}: {point['error']}"
    return spread_text(point["tokens_per_s"], point["sd"], int(point["trials"]), point["cv"])


def _model_text(point: pd.Series) -> str:
    return run_model_label(
        point["model"], bool(point["synthetic"]), point["layers_run"], point["layers_total"]
    )


def prefill_table(results: pd.DataFrame, references: pd.DataFrame) -> str:
    """Prefill tokens/s per measured point beside the paper's (same precision and length)."""
    points = _points_with_status(results, "prefill")
    paper = references[references["experiment"] == "prefill"]
    match = ["paper_model", "system", "precision", "prompt_tokens"]
    points = points.assign(variant=points["variant"].fillna("").astype(str))
    rows = []
    for _, p in points.sort_values(
        ["paper_model", "model", "system", "variant", "precision", "prompt_tokens"]
    ).iterrows():
        projection = DASH
        if p["status"] == "ok" and is_slice(p["layers_run"], p["layers_total"]):
            projection = number(p["tokens_per_s"] * p["layers_run"] / p["layers_total"])
        rows.append(
            [
                p["paper_model"],
                _model_text(p),
                series_name(p["system"], p["variant"]),
                p["precision"],
                int(p["prompt_tokens"]) if pd.notna(p["prompt_tokens"]) else DASH,
                _measured_text(p),
                projection,
                # the paper measured its engine with CPU experts only: no value beside the
                # engine's other placements
                DASH if p["variant"] else number(_paper_value(paper, p, match)),
            ]
        )
    headers = [
        "paper model",
        "run model",
        "system",
        "precision",
        "prompt tokens",
        "measured tokens/s, mean ± sd (n, CV)",
        "projected full model tokens/s",
        "paper tokens/s",
    ]
    return md_table(headers, rows)


PLACEMENT_COLUMNS = ("cpu", "gpu_stream", "split", "auto")
BASELINE_SETTINGS = ("llamacpp", "llamacpp_best")


def placement_table(results: pd.DataFrame) -> str:
    """Prefill tokens/s of the engine per placement beside llama.cpp's two settings, per
    run model, precision (llama.cpp's F16 beside bf16) and prompt length, with the
    engine's best placement over llama.cpp at its best (same run); empty when no engine
    placement other than its own setting was measured."""
    points = point_means(results, "prefill")
    if points.empty:
        return ""
    points = points.assign(
        variant=points["variant"].fillna("").astype(str),
        # llama.cpp's full precision is F16 (recorded fp16) beside the engine's bf16
        same_precision=points["precision"].replace({"fp16": "bf16"}),
    )
    engine = points[points["system"] == "engine"]
    if not (engine["variant"] != "").any():
        return ""
    rows = []
    for (model, precision, tokens), group in points.groupby(
        ["model", "same_precision", "prompt_tokens"], sort=True
    ):
        eng = group[group["system"] == "engine"]
        own = eng[eng["variant"] == ""]
        values: dict[str, float] = {}
        for name in PLACEMENT_COLUMNS:
            match = eng[eng["variant"] == name]
            if not match.empty:
                values[name] = float(match["tokens_per_s"].iloc[0])
        base = {}
        for system in BASELINE_SETTINGS:
            match = group[group["system"] == system]
            if not match.empty:
                base[system] = float(match["tokens_per_s"].iloc[0])
        if eng.empty:
            continue
        own_value = float(own["tokens_per_s"].iloc[0]) if not own.empty else math.nan
        best = max([*values.values(), own_value], default=math.nan)
        ratio = best / base["llamacpp_best"] if "llamacpp_best" in base else math.nan
        rows.append(
            [
                model,
                precision,
                int(tokens),
                number(own_value),
                *(number(values.get(name)) for name in PLACEMENT_COLUMNS),
                *(number(base.get(system)) for system in BASELINE_SETTINGS),
                DASH if math.isnan(ratio) else f"{ratio_text(ratio)}x",
            ]
        )
    headers = [
        "run model",
        "precision",
        "prompt tokens",
        "engine (its prefill_placement option)",
        *(f"engine {name}" for name in PLACEMENT_COLUMNS),
        "llama.cpp (artifact flags)",
        "llama.cpp (best settings)",
        "engine best / llama.cpp best",
    ]
    return md_table(headers, rows)


def decode_table(results: pd.DataFrame, references: pd.DataFrame) -> str:
    """Decode tokens/s per measured configuration beside the paper's."""
    points = _points_with_status(results, "decode")
    paper = references[references["experiment"] == "decode"]
    match = ["paper_model", "system", "precision", "immediate_experts", "deferred_experts"]
    rows = []
    for _, p in points.sort_values(
        ["paper_model", "model", "system", "precision", "deferred_experts"]
    ).iterrows():
        rows.append(
            [
                p["paper_model"],
                _model_text(p),
                system_name(p["system"]),
                p["precision"],
                experts_label(p["immediate_experts"], p["deferred_experts"]) or DASH,
                _measured_text(p),
                number(_paper_value(paper, p, match)),
            ]
        )
    headers = [
        "paper model",
        "run model",
        "system",
        "precision",
        "experts (N+D)",
        "measured tokens/s, mean ± sd (n, CV)",
        "paper tokens/s",
    ]
    return md_table(headers, rows)


def breakdown_table(results: pd.DataFrame, references: pd.DataFrame) -> str:
    """Per stage and setting: each variant's tokens/s and ratio to base, measured and paper."""
    paper_rows = reference_points(references[references["experiment"] == "breakdown"])
    rows = []
    for stage, variants in STAGE_VARIANTS.items():
        paper = {s.paper_model: s for s in breakdown_settings(paper_rows, stage)}
        for setting in breakdown_settings(results, stage):
            ref = paper.get(setting.paper_model)
            base = setting.values.get("base")
            ref_base = ref.values.get("base") if ref else None
            key = setting.key
            label = run_model_label(
                setting.model, bool(key["synthetic"]), key["layers_run"], key["layers_total"]
            )
            for variant in variants:
                value = setting.values.get(variant)
                if value is None:
                    status, reason = setting.missing[variant]
                    measured, ratio = f"{status}: {reason}", DASH
                else:
                    measured = spread_text(
                        value,
                        setting.sd.get(variant, math.nan),
                        setting.trials.get(variant, 1),
                        setting.cv.get(variant, math.nan),
                    )
                    ratio = f"{value / base:.2f}x" if base else DASH
                ref_value = ref.values.get(variant) if ref else None
                ref_ratio = (
                    f"{ref_value / ref_base:.2f}x" if ref_value is not None and ref_base else DASH
                )
                rows.append(
                    [
                        stage,
                        setting.paper_model,
                        label,
                        key["precision"],
                        variant,
                        measured,
                        ratio,
                        number(ref_value),
                        ref_ratio,
                    ]
                )
    headers = [
        "stage",
        "paper model",
        "run model",
        "precision",
        "variant",
        "measured tokens/s, mean ± sd (n, CV)",
        "measured / base",
        "paper tokens/s",
        "paper / base",
    ]
    return md_table(headers, rows)

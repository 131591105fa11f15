"""Reduce trial rows to measured points: mean over ok trials, and the points that were not.

A *point* is everything that defines one measurement (experiment, model, system, precision,
variant, expert configuration, workload, task). Figures, tables and claims work on point
means; NOT RUN and failed rows never become values.
"""

from __future__ import annotations

import pandas as pd

from experiments.schema import STATUS_OK

POINT_KEYS: tuple[str, ...] = (
    "experiment",
    "stage",
    "model",
    "paper_model",
    "synthetic",
    "layers_run",
    "layers_total",
    "system",
    "precision",
    "variant",
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "task",
)

FULL_PRECISIONS = ("bf16", "fp16")
QUANTIZED_PRECISIONS = ("int8", "int4")


def precision_class(precision: str) -> str:
    """'full' for bf16/fp16, 'quantized' for int8/int4, else the precision itself."""
    if precision in FULL_PRECISIONS:
        return "full"
    if precision in QUANTIZED_PRECISIONS:
        return "quantized"
    return precision


def is_slice(layers_run: float, layers_total: float) -> bool:
    """True when a point ran only the first layers_run of layers_total layers."""
    return bool(pd.notna(layers_run) and pd.notna(layers_total) and layers_run < layers_total)


def point_means(results: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """Mean tokens_per_s / score over the ok trials of each point (``trials`` = their count).

    Points without any ok trial are absent. ``experiment`` filters first.
    """
    rows = results
    if experiment is not None:
        rows = rows[rows["experiment"] == experiment]
    rows = rows[rows["status"] == STATUS_OK]
    columns = [*POINT_KEYS, "tokens_per_s", "score", "trials"]
    if rows.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype=results[c].dtype if c in results else "float64") for c in columns}
        )
    grouped = rows.groupby(list(POINT_KEYS), dropna=False, sort=True)
    means = grouped.agg(
        tokens_per_s=("tokens_per_s", "mean"),
        score=("score", "mean"),
        trials=("status", "size"),
    ).reset_index()
    return means[columns]


def unmeasured_points(results: pd.DataFrame) -> pd.DataFrame:
    """Points with no ok trial, one row each: POINT_KEYS + ``status`` + ``error``.

    ``status`` is 'failed' if any row of the point failed, else 'not_run'; ``error`` is the
    first non-empty reason given.
    """
    keys = list(POINT_KEYS)
    ok_keys = results.loc[results["status"] == STATUS_OK, keys].drop_duplicates()
    others = results[results["status"] != STATUS_OK]
    if others.empty:
        return pd.DataFrame(columns=[*keys, "status", "error"])
    merged = others.merge(ok_keys, on=keys, how="left", indicator=True)
    merged = merged[merged["_merge"] == "left_only"]
    if merged.empty:
        return pd.DataFrame(columns=[*keys, "status", "error"])

    def first_reason(errors: pd.Series) -> str:
        texts = [str(e) for e in errors if str(e).strip()]
        return texts[0] if texts else "(no reason recorded)"

    grouped = merged.groupby(keys, dropna=False, sort=True)
    out = grouped.agg(
        status=("status", lambda s: "failed" if (s == "failed").any() else "not_run"),
        error=("error", first_reason),
    ).reset_index()
    return out

"""Reduce trial rows to measured points: mean, sd and CV over ok trials, and the points that
were not measured.

A *point* is everything that defines one measurement (experiment, model, system, precision,
variant, expert configuration, workload, task). Figures, tables and claims work on point
means, shown with their spread (experiments.statistics); NOT RUN and failed rows never
become values.
"""

from __future__ import annotations

import pandas as pd

from experiments.schema import POINT_KEYS, STATUS_OK
from experiments.statistics import DEFAULT_CV_THRESHOLD, is_noisy, summarize

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
    """Mean tokens_per_s / score over the ok trials of each point, with their spread.

    ``trials`` is the number of ok trials (n); ``sd`` (sample, ddof=1) and ``cv`` (sd/mean)
    describe the point's value (tokens_per_s, or score where there is no throughput) and are
    NaN for a single trial; ``noisy`` is True when cv exceeds DEFAULT_CV_THRESHOLD. Points
    without any ok trial are absent. ``experiment`` filters first.
    """
    rows = results
    if experiment is not None:
        rows = rows[rows["experiment"] == experiment]
    rows = rows[rows["status"] == STATUS_OK]
    columns = [*POINT_KEYS, "tokens_per_s", "score", "trials", "sd", "cv", "noisy"]
    if rows.empty:
        dtypes = {"trials": "int64", "sd": "float64", "cv": "float64", "noisy": "bool"}
        return pd.DataFrame(
            {
                c: pd.Series(dtype=results[c].dtype if c in results else dtypes.get(c, "float64"))
                for c in columns
            }
        )
    rows = rows.assign(
        _value=rows["tokens_per_s"].where(rows["tokens_per_s"].notna(), rows["score"])
    )
    grouped = rows.groupby(list(POINT_KEYS), dropna=False, sort=True)
    means = grouped.agg(
        tokens_per_s=("tokens_per_s", "mean"),
        score=("score", "mean"),
        trials=("status", "size"),
    ).reset_index()
    spreads = [summarize(values) for _, values in grouped["_value"]]
    means["sd"] = [s.sd for s in spreads]
    means["cv"] = [s.cv for s in spreads]
    means["noisy"] = [is_noisy(s.cv, DEFAULT_CV_THRESHOLD) for s in spreads]
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


REAL = "real"  # a real checkpoint (all or some of its layers)
SLICE = "slice"  # synthetic weights in the real model's shapes, first layers only
TINY = "tiny"  # a tiny synthetic stand-in (shapes far from the paper's model)
UNKNOWN = "unknown"  # synthetic, but no row says which kind (nothing was loaded)


def model_kinds(results: pd.DataFrame) -> dict[str, str]:
    """Per model key of ``results``: REAL, SLICE, TINY or UNKNOWN, from all of its rows.

    The runner records ``model_source`` 'synthetic-slice...' / 'synthetic-tiny...' and the
    layer counts once the model is built; a synthetic model that ran all of its layers and
    is not marked a slice is a tiny stand-in. Rows that never loaded the model (NOT RUN
    before loading) carry neither, so only the other rows of the model decide.
    """
    kinds: dict[str, str] = {}
    for model, rows in results.groupby("model", sort=True, dropna=False):
        sources = [str(s) for s in rows.get("model_source", pd.Series(dtype=str)).dropna()]
        ran_layers = rows.dropna(subset=["layers_run", "layers_total"])
        if not rows["synthetic"].astype(bool).any():
            kind = REAL
        elif any(s.startswith("synthetic-slice") for s in sources) or any(
            is_slice(r, t)
            for r, t in zip(ran_layers["layers_run"], ran_layers["layers_total"], strict=True)
        ):
            kind = SLICE
        elif any(s.startswith("synthetic-tiny") for s in sources) or not ran_layers.empty:
            kind = TINY
        else:
            kind = UNKNOWN
        kinds[str(model)] = kind
    return kinds

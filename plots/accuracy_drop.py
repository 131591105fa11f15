"""Accuracy cost of expert deferral: per-task and average drop from k+0 to N+D configs.

A deferral configuration ``N+D`` (D > 0) is compared with the no-deferral configuration
``k+0`` of the same model and precision where ``k = N + D`` (the same routed top-k).
Drops are in percentage points: (score k+0 - score N+D) x 100; positive = deferral loses.
"""

from __future__ import annotations

import pandas as pd

TASK_DROP_COLUMNS = (
    "model",
    "paper_model",
    "synthetic",
    "precision",
    "top_k",
    "immediate_experts",
    "deferred_experts",
    "task",
    "score_no_deferral",
    "score_deferral",
    "drop_pp",
)
AVERAGE_DROP_COLUMNS = (
    "model",
    "paper_model",
    "synthetic",
    "precision",
    "top_k",
    "immediate_experts",
    "deferred_experts",
    "tasks",
    "avg_drop_pp",
)


def task_drops(points: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, precision, deferral config, task) with both configs scored."""
    rows = points[(points["experiment"] == "accuracy") & points["score"].notna()].copy()
    if rows.empty:
        return pd.DataFrame(columns=list(TASK_DROP_COLUMNS))
    rows["deferred_experts"] = rows["deferred_experts"].fillna(0)
    rows["top_k"] = rows["immediate_experts"] + rows["deferred_experts"]
    keys = ["model", "precision", "top_k", "task"]
    base = rows[rows["deferred_experts"] == 0][[*keys, "score"]]
    base = base.rename(columns={"score": "score_no_deferral"})
    deferral = rows[rows["deferred_experts"] > 0]
    merged = deferral.merge(base, on=keys, how="inner")
    merged = merged.rename(columns={"score": "score_deferral"})
    merged["drop_pp"] = (merged["score_no_deferral"] - merged["score_deferral"]) * 100.0
    return merged[list(TASK_DROP_COLUMNS)].reset_index(drop=True)


def average_drops(points: pd.DataFrame) -> pd.DataFrame:
    """Mean drop over tasks per (model, precision, deferral config)."""
    drops = task_drops(points)
    if drops.empty:
        return pd.DataFrame(columns=list(AVERAGE_DROP_COLUMNS))
    keys = [
        "model",
        "paper_model",
        "synthetic",
        "precision",
        "top_k",
        "immediate_experts",
        "deferred_experts",
    ]
    out = (
        drops.groupby(keys, sort=True, dropna=False)
        .agg(tasks=("task", "size"), avg_drop_pp=("drop_pp", "mean"))
        .reset_index()
    )
    return out[list(AVERAGE_DROP_COLUMNS)]

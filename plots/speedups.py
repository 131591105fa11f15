"""Engine-over-baseline throughput ratios at matched points, for figures and claims.

Pairs are formed within one run model (same ``model`` and layer count), one precision
class (full = bf16/fp16, quantized = int8/int4) and, for prefill, one prompt length. An
engine point is compared with a baseline point of the same precision when the baseline
measured it, else with the baseline's fastest point of the same class.
"""

from __future__ import annotations

import pandas as pd

from experiments.schema import SYSTEM_LABELS
from plots.points import precision_class

ENGINE = "engine"
BASELINES = ("fiddler", "llamacpp")

PAIR_COLUMNS = (
    "model",
    "paper_model",
    "synthetic",
    "layers_run",
    "layers_total",
    "precision_class",
    "prompt_tokens",
    "engine_precision",
    "immediate_experts",
    "deferred_experts",
    "engine_tps",
    "baseline",
    "baseline_precision",
    "baseline_tps",
    "speedup",
)


def _with_class(points: pd.DataFrame) -> pd.DataFrame:
    out = points.copy()
    out["precision_class"] = out["precision"].map(precision_class)
    return out


def _pairs(points: pd.DataFrame, experiment: str, match: list[str]) -> pd.DataFrame:
    rows = _with_class(points[(points["experiment"] == experiment) & points["tokens_per_s"].gt(0)])
    engine = rows[rows["system"] == ENGINE]
    baseline = rows[rows["system"].isin(BASELINES)]
    if engine.empty or baseline.empty:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    if experiment == "decode":
        # Baselines have no deferral: compare with their k+0 configuration only.
        baseline = baseline[baseline["deferred_experts"].fillna(0) == 0]
    keep_engine = [
        *match,
        "paper_model",
        "synthetic",
        "layers_total",
        "precision",
        "immediate_experts",
        "deferred_experts",
        "tokens_per_s",
    ]
    keep_engine = list(dict.fromkeys(keep_engine))
    left = engine[keep_engine].rename(
        columns={"precision": "engine_precision", "tokens_per_s": "engine_tps"}
    )
    left = left.reset_index(drop=True).reset_index(names="engine_row")
    right = baseline[[*match, "system", "precision", "tokens_per_s"]].rename(
        columns={
            "system": "baseline",
            "precision": "baseline_precision",
            "tokens_per_s": "baseline_tps",
        }
    )
    merged = left.merge(right, on=match, how="inner")
    if merged.empty:
        return pd.DataFrame(columns=list(PAIR_COLUMNS))
    merged["exact"] = merged["engine_precision"] == merged["baseline_precision"]
    chosen = []
    for _, group in merged.groupby(["engine_row", "baseline"], sort=True):
        exact = group[group["exact"]]
        pick = exact if not exact.empty else group
        chosen.append(pick.loc[[pick["baseline_tps"].idxmax()]])
    out = pd.concat(chosen, ignore_index=True)
    out["speedup"] = out["engine_tps"] / out["baseline_tps"]
    if "prompt_tokens" not in out.columns:
        out["prompt_tokens"] = float("nan")
    return out[list(PAIR_COLUMNS)].reset_index(drop=True)


def prefill_speedups(points: pd.DataFrame) -> pd.DataFrame:
    """Engine/baseline ratios per prefill point matched on model, layers, class, prompt."""
    return _pairs(points, "prefill", ["model", "layers_run", "precision_class", "prompt_tokens"])


def decode_speedups(points: pd.DataFrame) -> pd.DataFrame:
    """Engine/baseline ratios per engine decode config (deferral included) vs baseline k+0."""
    return _pairs(points, "decode", ["model", "layers_run", "precision_class"])


def best_speedup_lines(pairs: pd.DataFrame, with_model: bool = False) -> list[str]:
    """Short text lines: the best engine speedup per baseline and precision class."""
    if pairs.empty:
        return []
    keys = (
        ["model", "baseline", "precision_class"] if with_model else ["baseline", "precision_class"]
    )
    lines = []
    for key, group in pairs.groupby(keys, sort=True):
        parts = dict(zip(keys, key, strict=True))
        label = SYSTEM_LABELS.get(parts["baseline"], parts["baseline"])
        prefix = f"{parts['model']}: " if with_model else ""
        lines.append(
            f"{prefix}{group['speedup'].max():.2f}x vs {label} ({parts['precision_class']})"
        )
    return lines

"""Engine-over-baseline throughput ratios at matched points, for figures and claims.

Pairs are formed within one run model (same ``model`` and layer count), one precision
class (full = bf16/fp16, quantized = int8/int4) and, for prefill, one prompt length. An
engine point is compared with a baseline point of the same precision when the baseline
measured it, else with the baseline's fastest point of the same class.
"""

from __future__ import annotations

import pandas as pd

from experiments.schema import SYSTEM_LABELS
from plots.point_means import precision_class

ENGINE = "engine"
BASELINES = ("fiddler", "llamacpp", "llamacpp_best")
# The paper's claims compare against its two baselines (llama.cpp with the artifact's flags);
# llama.cpp at its best settings is shown beside them but judged by no claim.
PAPER_BASELINES = ("fiddler", "llamacpp")

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
    if "variant" in engine:  # the engine's own setting: not its other prefill placements
        engine = engine[engine["variant"].fillna("").astype(str) == ""]
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


def ratio_text(ratio: float) -> str:
    """A ratio with two decimals, or two significant digits below 0.1 (never '0.00')."""
    return f"{ratio:.2f}" if abs(ratio) >= 0.1 else f"{ratio:.2g}"


def speedup_range_lines(pairs: pd.DataFrame, over: str, with_model: bool = False) -> list[str]:
    """Short text lines: the engine speedup's min–max per baseline and precision class.

    ``over`` names what the range runs over (e.g. 'prompt lengths', 'engine configs'); each
    line says how many pairs it covers, e.g. 'vs Fiddler (full): 0.80–6.00x over 3 prompt
    lengths'; one value when min and max print alike. The maximum alone would hide
    the points where the engine is slower.
    """
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
        low, high = group["speedup"].min(), group["speedup"].max()
        low_text, high_text = ratio_text(low), ratio_text(high)
        value = f"{low_text}x" if low_text == high_text else f"{low_text}–{high_text}x"
        lines.append(
            f"{prefix}vs {label} ({parts['precision_class']}): {value} over {len(group)} {over}"
        )
    return lines

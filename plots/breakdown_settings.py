"""Figure 13's ablation variants: their paper order and each setting's per-variant values.

A *setting* is one model x precision x workload that the breakdown ran its variants on.
For each setting this gives the mean tokens/s of every variant with ok trials (with the
spread of its trials: sd, CV, n), and for the others whether they were not run or failed,
and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from experiments.variants import STAGE_SEQUENCES
from plots.point_means import point_means, unmeasured_points

STAGE_VARIANTS = STAGE_SEQUENCES
SETTING_KEYS = [
    "model",
    "paper_model",
    "synthetic",
    "layers_run",
    "layers_total",
    "precision",
    "prompt_tokens",
    "decode_tokens",
]
ABSENT_REASON = "not in this run"


@dataclass
class BreakdownSetting:
    """One setting's variants: ``values`` (mean tokens/s), their ``sd``, ``cv`` and
    ``trials`` (NaN / absent for the paper's numbers), and ``missing`` (status, reason)."""

    stage: str
    key: dict[str, object]
    values: dict[str, float] = field(default_factory=dict)
    missing: dict[str, tuple[str, str]] = field(default_factory=dict)
    sd: dict[str, float] = field(default_factory=dict)
    cv: dict[str, float] = field(default_factory=dict)
    trials: dict[str, int] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.key["model"])

    @property
    def paper_model(self) -> str:
        return str(self.key["paper_model"])


def _key(row: pd.Series) -> tuple[object, ...]:
    return tuple(row[k] for k in SETTING_KEYS)


def _is_na(value: object) -> bool:
    return isinstance(value, float) and pd.isna(value)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return all(x == y or (_is_na(x) and _is_na(y)) for x, y in zip(a, b, strict=True))


def breakdown_settings(rows: pd.DataFrame, stage: str) -> list[BreakdownSetting]:
    """Settings of ``stage`` (prefill/decode) in result-shaped ``rows``, in a stable order.

    ``rows`` are result rows (measured) or :func:`plots.references.reference_points` output
    (paper; needs a ``status`` column, added as ok when absent).
    """
    if "status" not in rows.columns:
        rows = rows.assign(status="ok", error="")
    rows = rows[(rows["experiment"] == "breakdown") & (rows["stage"] == stage)]
    variants = STAGE_VARIANTS[stage]
    settings: list[BreakdownSetting] = []

    def setting_for(row: pd.Series) -> BreakdownSetting:
        key = _key(row)
        for setting in settings:
            if _same(tuple(setting.key.values()), key):
                return setting
        setting = BreakdownSetting(stage, dict(zip(SETTING_KEYS, key, strict=True)))
        settings.append(setting)
        return setting

    means = point_means(rows)
    for _, row in means.sort_values(["paper_model", "model"]).iterrows():
        setting = setting_for(row)
        variant = row["variant"]
        setting.values[variant] = float(row["tokens_per_s"])
        setting.sd[variant] = float(row.get("sd", float("nan")))
        setting.cv[variant] = float(row.get("cv", float("nan")))
        setting.trials[variant] = int(row.get("trials", 1))
    for _, row in unmeasured_points(rows).iterrows():
        status = "failed" if row["status"] == "failed" else "not run"
        setting_for(row).missing[row["variant"]] = (status, row["error"])
    for setting in settings:
        for variant in variants:
            if variant not in setting.values and variant not in setting.missing:
                setting.missing[variant] = ("not run", ABSENT_REASON)
    return sorted(settings, key=lambda s: (s.paper_model, s.model, str(s.key["precision"])))

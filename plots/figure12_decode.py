"""Figure 12: decode throughput per configuration (deferral included), measured and paper.

Columns are paper models; the top row holds this run's bars (mean of ok trials, +-1 sd
error bars, noisy bars ringed), the bottom row the paper's (separate axes: the measured
model, named in the title, is usually not the paper's). The engine's speedup over each
baseline (same precision class, over the engine's configurations, deferral included) is
given as its min–max in every panel title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from plots.bars import BarEntry, bar_panel, legend_row, legend_rows, not_run_patch
from plots.describe import experts_label, run_model_titles, short_hardware
from plots.figure_io import save_figure
from plots.point_means import point_means, precision_class, unmeasured_points
from plots.references import reference_points
from plots.speedups import decode_speedups, speedup_range_lines
from plots.style import (
    FONT_SIZE,
    LEGEND_FONT_SIZE,
    NOISY_LABEL,
    legend_rows_height,
    model_title,
    new_figure,
    noisy_handle,
    panel_grid,
    panel_models,
    system_color,
    system_name,
)

STEM = "figure12_decode"
LEGEND_ENTRIES = 6  # three systems, deferral, not run, noisy
SYSTEM_ORDER = {"fiddler": 0, "llamacpp": 1, "llamacpp_best": 2, "engine": 3}
CLASS_ORDER = {"full": 0, "quantized": 1}
YLABEL = "measured decode (tokens/s)"
PAPER_YLABEL = "paper decode (tokens/s)"


def _sort_key(row: pd.Series) -> tuple[Any, ...]:
    return (
        row["model"],
        CLASS_ORDER.get(precision_class(row["precision"]), 2),
        SYSTEM_ORDER.get(row["system"], len(SYSTEM_ORDER)),
        row["precision"],
        0 if pd.isna(row["deferred_experts"]) else row["deferred_experts"],
    )


def _flag(value: object) -> bool:
    """A boolean column's value, False where missing (NOT RUN rows, the paper's numbers)."""
    return False if value is None or pd.isna(value) else bool(value)


def _entries(rows: pd.DataFrame, with_model: bool) -> list[BarEntry]:
    """Bars for point rows (``tokens_per_s`` NaN and ``status`` set for missing ones)."""
    entries = []
    ordered = sorted((row for _, row in rows.iterrows()), key=_sort_key)
    for row in ordered:
        label = f"{system_name(row['system'])} {row['precision']} " + experts_label(
            row["immediate_experts"], row["deferred_experts"]
        )
        if with_model:
            label = f"{row['model']}: {label}"
        value = row["tokens_per_s"]
        deferral = not pd.isna(row["deferred_experts"]) and row["deferred_experts"] > 0
        entries.append(
            BarEntry(
                label=label.strip(),
                value=None if pd.isna(value) else float(value),
                color=system_color(row["system"]),
                missing_text=str(row.get("status", "not_run")).replace("_", " "),
                hatch="xx" if deferral else "",
                sd=float(row.get("sd", float("nan"))),
                cv=float(row.get("cv", float("nan"))),
                noisy=_flag(row.get("noisy")),
            )
        )
    return entries


def _title(head: str, points: pd.DataFrame, with_model: bool) -> str:
    lines = speedup_range_lines(decode_speedups(points), "engine config(s)", with_model)
    if points.empty:
        return head
    return "\n".join(
        [
            head,
            "engine speedup, min–max over engine configs (incl. deferral):",
            *(lines or ["n/a (needs engine and a baseline)"]),
        ]
    )


def render_figure12(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any]
) -> Figure:
    """Build Figure 12 from result rows, reference rows and provenance (no file I/O)."""
    decode_rows = results[results["experiment"] == "decode"]
    points = point_means(results, "decode")
    missing = unmeasured_points(decode_rows).assign(tokens_per_s=float("nan"))
    measured_all = pd.concat([points.assign(status="ok"), missing], ignore_index=True)
    paper = reference_points(references[references["experiment"] == "decode"])
    models = panel_models(decode_rows["paper_model"], paper["paper_model"])
    columns = max(len(models), 1)
    caption = (
        "Top row: measured in this run, mean of ok trials with +-1 sd error bars; ringed: "
        f"{NOISY_LABEL}; hatched empty slots were not run or failed (no value). Bottom row: "
        "paper (KTransformers SOSP'25, Fig. 12), on its own axes.\n"
        "Labels: system, expert precision, immediate+deferred routed experts (N+D, D > 0 = "
        "expert deferral, cross-hatched bars). Speedup: each engine config over the "
        "baseline's k+0 in the same precision class, min–max over the engine configs.\n"
        f"Measured on: {short_hardware(provenance)}."
    )
    fig = new_figure(5.0 * columns, 9.0)
    legend_height = legend_rows_height(legend_rows(LEGEND_ENTRIES, columns))
    panels, legends = panel_grid(fig, columns, 2, 3.6, legend_height, caption, shared_legend=True)
    for column, paper_model in enumerate(models):
        mine = measured_all[measured_all["paper_model"] == paper_model]
        mine_points = points[points["paper_model"] == paper_model]
        many = mine["model"].nunique() > 1
        names = run_model_titles(decode_rows, paper_model)
        head = "\n".join(["measured:", *(names or [f"nothing for {model_title(paper_model)}"])])
        panels[0][column].set_title(_title(head, mine_points, many), fontsize=LEGEND_FONT_SIZE + 1)
        bar_panel(
            panels[0][column],
            _entries(mine, many),
            YLABEL,
            "no measured decode points for this model",
        )
        theirs = paper[paper["paper_model"] == paper_model]
        panels[1][column].set_title(
            _title(f"paper: {model_title(paper_model)}, full model", theirs, False),
            fontsize=LEGEND_FONT_SIZE + 1,
        )
        bar_panel(
            panels[1][column],
            _entries(theirs, False),
            PAPER_YLABEL,
            "no paper numbers for this model",
        )
    if not models:
        for row in panels:
            bar_panel(row[0], [], YLABEL, "no decode data (neither measured nor in the paper)")
    handles = [Patch(color=system_color(s), label=system_name(s)) for s in SYSTEM_ORDER]
    handles.append(
        Patch(
            facecolor="white", edgecolor="black", hatch="xx", label="expert deferral (N+D, D > 0)"
        )
    )
    handles.append(not_run_patch())
    handles.append(noisy_handle())
    legend_row(legends[0], handles, columns)
    fig.suptitle("Figure 12 - decode throughput", fontsize=FONT_SIZE + 2, fontweight="bold")
    return fig


def plot_figure12(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Write figure12_decode.png and .pdf into ``out_dir``; return their paths."""
    return save_figure(render_figure12(results, references, provenance), out_dir, STEM)

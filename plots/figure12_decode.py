"""Figure 12: decode throughput per configuration (deferral included), measured and paper.

Columns are paper models; the top row holds this run's bars, the bottom row the paper's
(separate axes, since the scales differ). The engine's best speedup over each baseline
(same precision class, deferral included) is written in every panel title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from plots.bars import BarEntry, bar_panel, legend_row, not_run_patch
from plots.describe import experts_label, run_model_label, short_hardware
from plots.figure_io import save_figure
from plots.points import point_means, precision_class, unmeasured_points
from plots.references import reference_points
from plots.speedups import best_speedup_lines, decode_speedups
from plots.style import (
    FONT_SIZE,
    LEGEND_FONT_SIZE,
    model_title,
    new_figure,
    panel_grid,
    panel_models,
    system_color,
    system_name,
)

STEM = "figure12_decode"
SYSTEM_ORDER = {"fiddler": 0, "llamacpp": 1, "engine": 2}
CLASS_ORDER = {"full": 0, "quantized": 1}
YLABEL = "decode throughput (tokens/s)"


def _sort_key(row: pd.Series) -> tuple[Any, ...]:
    return (
        row["model"],
        CLASS_ORDER.get(precision_class(row["precision"]), 2),
        SYSTEM_ORDER.get(row["system"], 3),
        row["precision"],
        0 if pd.isna(row["deferred_experts"]) else row["deferred_experts"],
    )


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
            )
        )
    return entries


def _title(head: str, points: pd.DataFrame, with_model: bool) -> str:
    lines = best_speedup_lines(decode_speedups(points), with_model=with_model)
    if points.empty:
        return head
    return "\n".join(
        [
            head,
            "engine speedup (best, incl. deferral):",
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
        "Top row: measured in this run (mean of ok trials); hatched empty slots were not run "
        "or failed (no value). Bottom row: paper (KTransformers SOSP'25, Fig. 12).\n"
        "Labels: system, expert precision, immediate+deferred routed experts (N+D, D > 0 = "
        "expert deferral, cross-hatched bars). Speedup: best engine config over the baseline's "
        "k+0 in the same precision class.\n"
        f"Measured on: {short_hardware(provenance)}."
    )
    fig = new_figure(5.0 * columns, 9.0)
    panels, legends = panel_grid(fig, columns, 2, 3.6, 0.4, caption, shared_legend=True)
    for column, paper_model in enumerate(models):
        mine = measured_all[measured_all["paper_model"] == paper_model]
        mine_points = points[points["paper_model"] == paper_model]
        many = mine["model"].nunique() > 1
        names = sorted(
            {
                run_model_label(
                    r["model"], bool(r["synthetic"]), r["layers_run"], r["layers_total"]
                )
                for _, r in mine.iterrows()
            }
        )
        head = f"{model_title(paper_model)}\nmeasured: {', '.join(names) or 'nothing'}"
        panels[0][column].set_title(_title(head, mine_points, many), fontsize=LEGEND_FONT_SIZE + 1)
        bar_panel(
            panels[0][column],
            _entries(mine, many),
            YLABEL,
            "no measured decode points for this model",
        )
        theirs = paper[paper["paper_model"] == paper_model]
        panels[1][column].set_title(
            _title(f"paper: {model_title(paper_model)}", theirs, False),
            fontsize=LEGEND_FONT_SIZE + 1,
        )
        bar_panel(
            panels[1][column], _entries(theirs, False), YLABEL, "no paper numbers for this model"
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
    legend_row(legends[0], handles)
    fig.suptitle("Figure 12 - decode throughput", fontsize=FONT_SIZE + 2, fontweight="bold")
    return fig


def plot_figure12(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Write figure12_decode.png and .pdf into ``out_dir``; return their paths."""
    return save_figure(render_figure12(results, references, provenance), out_dir, STEM)

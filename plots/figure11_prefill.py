"""Figure 11: prefill throughput vs prompt length, this run's measurements beside the paper's.

One panel per paper model; solid lines are measured (mean of ok trials), dashed lines the
paper's, dotted lines project a layer slice to the full model; the engine's best measured
speedup over each baseline is written under the panel title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from plots.describe import run_model_label, short_hardware
from plots.figure_io import save_figure
from plots.points import is_slice, point_means, unmeasured_points
from plots.speedups import best_speedup_lines, prefill_speedups
from plots.style import (
    FONT_SIZE,
    LEGEND_FONT_SIZE,
    MEASURED_STYLE,
    PAPER_STYLE,
    PROJECTION_STYLE,
    legend_rows_height,
    mark_empty,
    model_title,
    move_legend,
    new_figure,
    panel_grid,
    panel_models,
    precision_marker,
    system_color,
    system_name,
)

STEM = "figure11_prefill"
SERIES_KEYS = ["model", "synthetic", "layers_run", "layers_total", "system", "precision"]


def _plot_measured(ax: Axes, measured: pd.DataFrame) -> None:
    # Several run models in one panel (e.g. tiny and slice): hollow markers tell them apart.
    fills = {m: ("full", "none")[i % 2] for i, m in enumerate(sorted(measured["model"].unique()))}
    for key, series in measured.groupby(SERIES_KEYS, dropna=False, sort=True):
        model, synthetic, layers_run, layers_total, system, precision = key
        series = series.sort_values("prompt_tokens")
        label = (
            f"{system_name(system)} {precision} - "
            f"{run_model_label(model, bool(synthetic), layers_run, layers_total)}"
        )
        style = {
            "color": system_color(system),
            "marker": precision_marker(precision),
            "fillstyle": fills[model],
        }
        ax.plot(
            series["prompt_tokens"],
            series["tokens_per_s"],
            MEASURED_STYLE,
            label=label,
            markersize=4,
            linewidth=1.5,
            **style,
        )
        if is_slice(layers_run, layers_total):
            factor = layers_run / layers_total
            ax.plot(
                series["prompt_tokens"],
                series["tokens_per_s"] * factor,
                PROJECTION_STYLE,
                label=f"{label}: projection to {int(layers_total)} layers "
                f"(x{int(layers_run)}/{int(layers_total)})",
                markersize=3,
                linewidth=1.2,
                alpha=0.9,
                **style,
            )


def _plot_paper(ax: Axes, paper: pd.DataFrame) -> None:
    for (system, precision), series in paper.groupby(["system", "precision"], sort=True):
        series = series.sort_values("prompt_tokens")
        ax.plot(
            series["prompt_tokens"],
            series["tokens_per_s"],
            PAPER_STYLE,
            color=system_color(system),
            marker=precision_marker(precision),
            markersize=3,
            linewidth=1.0,
            alpha=0.6,
            label=f"paper: {system_name(system)} {precision}",
        )


def _panel(
    ax: Axes, paper_model: str, points: pd.DataFrame, paper: pd.DataFrame, unmeasured: pd.DataFrame
) -> None:
    measured = points[points["paper_model"] == paper_model]
    paper = paper[paper["paper_model"] == paper_model]
    skipped = unmeasured[unmeasured["paper_model"] == paper_model]
    title = [model_title(paper_model)]
    if measured.empty:
        title.append("measured: no prefill points")
    else:
        many = measured["model"].nunique() > 1
        lines = best_speedup_lines(prefill_speedups(measured), with_model=many)
        title.append("measured engine speedup:")
        title.extend(lines or ["n/a (needs engine and a baseline at matched points)"])
    if not skipped.empty:
        title.append(f"{len(skipped)} point(s) not run/failed (see report)")
    ax.set_title("\n".join(title), fontsize=LEGEND_FONT_SIZE + 1)
    if measured.empty and paper.empty:
        mark_empty(ax, "no prefill data for this model\n(neither measured nor in the paper)")
        return
    _plot_measured(ax, measured)
    _plot_paper(ax, paper)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    lengths = sorted(set(measured["prompt_tokens"].dropna()) | set(paper["prompt_tokens"].dropna()))
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(int(v)) for v in lengths], rotation=45, fontsize=LEGEND_FONT_SIZE)
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("prefill throughput (tokens/s, log)")
    ax.grid(True, which="both", alpha=0.3)


def _legend_entries(points: pd.DataFrame, paper: pd.DataFrame, models: list[str]) -> int:
    """The largest number of legend entries any panel will have."""
    most = 0
    for paper_model in models:
        measured = points[points["paper_model"] == paper_model]
        series = measured.drop_duplicates(SERIES_KEYS)
        slices = sum(
            is_slice(r, t)
            for r, t in zip(series["layers_run"], series["layers_total"], strict=True)
        )
        mine = paper[paper["paper_model"] == paper_model].drop_duplicates(["system", "precision"])
        most = max(most, len(series) + slices + len(mine))
    return most


def render_figure11(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any]
) -> Figure:
    """Build Figure 11 from result rows, reference rows and provenance (no file I/O)."""
    points = point_means(results, "prefill")
    unmeasured = unmeasured_points(results[results["experiment"] == "prefill"])
    paper = references[references["experiment"] == "prefill"]
    models = panel_models(
        results.loc[results["experiment"] == "prefill", "paper_model"], paper["paper_model"]
    )
    caption = (
        "Solid: measured in this run (mean of ok trials; NOT RUN / failed points omitted). "
        "Dashed: paper (KTransformers SOSP'25, Fig. 11, dual Xeon 8452Y + A100 / RTX 4080).\n"
        "Dotted: projection of a layer slice to the full model = measured tokens/s x "
        "layers_run / layers_total (assumes time per layer is constant; an estimate, not a "
        "measurement).\nSpeedup: max engine/baseline ratio at the same prompt length and "
        "precision class (full = bf16/fp16, quantized = int8/int4).\n"
        f"Measured on: {short_hardware(provenance)}."
    )
    columns = max(len(models), 1)
    fig = new_figure(5.2 * columns, 6.0)
    entries = _legend_entries(points, paper, models)
    panels, legends = panel_grid(fig, columns, 1, 4.2, legend_rows_height(entries), caption)
    if not models:
        mark_empty(panels[0][0], "no prefill data (neither measured nor in the paper)")
    for column, paper_model in enumerate(models):
        _panel(panels[0][column], paper_model, points, paper, unmeasured)
        move_legend(panels[0][column], legends[column])
    fig.suptitle(
        "Figure 11 - prefill throughput vs prompt length", fontsize=FONT_SIZE + 2, fontweight="bold"
    )
    return fig


def plot_figure11(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Write figure11_prefill.png and .pdf into ``out_dir``; return their paths."""
    return save_figure(render_figure11(results, references, provenance), out_dir, STEM)

"""Figure 11: prefill throughput vs prompt length, this run's measurements and the paper's.

Columns are paper models. The top row holds this run's lines (mean of ok trials, +-1 sd
error bars, noisy points ringed; dotted lines project a layer slice to the full model), the
bottom row the paper's: separate axes, since the measured model is usually not the paper's
(a tiny synthetic stand-in or a slice of a few layers, named in the title). The engine's
speedup over each baseline is given as its min–max over the prompt lengths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from plots.describe import run_model_label, run_model_titles, short_hardware
from plots.figure_io import save_figure
from plots.point_means import is_slice, point_means, unmeasured_points
from plots.speedups import prefill_speedups, speedup_range_lines
from plots.style import (
    ERROR_CAPSIZE,
    FONT_SIZE,
    LEGEND_FONT_SIZE,
    MEASURED_STYLE,
    NOISY_LABEL,
    PAPER_STYLE,
    PROJECTION_STYLE,
    legend_rows_height,
    mark_empty,
    mark_noisy,
    model_title,
    new_figure,
    panel_grid,
    panel_models,
    precision_marker,
    series_color,
    series_name,
    system_color,
    system_name,
)

STEM = "figure11_prefill"
SERIES_KEYS = ["model", "synthetic", "layers_run", "layers_total", "system", "variant", "precision"]


def _plot_measured(ax: Axes, measured: pd.DataFrame) -> None:
    # Several run models in one panel (e.g. tiny and slice): hollow markers tell them apart.
    fills = {m: ("full", "none")[i % 2] for i, m in enumerate(sorted(measured["model"].unique()))}
    noisy = measured[measured["noisy"].astype(bool)]
    measured = measured.assign(variant=measured["variant"].fillna("").astype(str))
    for key, series in measured.groupby(SERIES_KEYS, dropna=False, sort=True):
        model, synthetic, layers_run, layers_total, system, variant, precision = key
        series = series.sort_values("prompt_tokens")
        label = (
            f"{series_name(system, variant)} {precision} - "
            f"{run_model_label(model, bool(synthetic), layers_run, layers_total)}"
        )
        style = {
            "color": series_color(system, variant),
            "marker": precision_marker(precision),
            "fillstyle": fills[model],
        }
        ax.errorbar(
            series["prompt_tokens"],
            series["tokens_per_s"],
            yerr=series["sd"].fillna(0.0),
            fmt=MEASURED_STYLE,
            label=label,
            markersize=4,
            linewidth=1.5,
            elinewidth=0.8,
            capsize=ERROR_CAPSIZE,
            **style,
        )
        if is_slice(layers_run, layers_total) and not variant:  # placements: measured only
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
    mark_noisy(ax, noisy["prompt_tokens"].tolist(), noisy["tokens_per_s"].tolist())


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
            alpha=0.8,
            label=f"paper: {system_name(system)} {precision}",
        )


def _log_axes(ax: Axes, lengths: list[float], ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(lengths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(int(v)) for v in lengths], rotation=45, fontsize=LEGEND_FONT_SIZE)
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _measured_title(
    paper_model: str, rows: pd.DataFrame, measured: pd.DataFrame, skipped: pd.DataFrame
) -> str:
    title = ["measured:", *run_model_titles(rows, paper_model)]
    if len(title) == 1:
        title.append(f"nothing for {model_title(paper_model)}")
    if not measured.empty:
        many = measured["model"].nunique() > 1
        lines = speedup_range_lines(prefill_speedups(measured), "prompt length(s)", many)
        title.append("engine speedup, min–max over prompt lengths:")
        title.extend(lines or ["n/a (needs engine and a baseline at matched points)"])
    if not skipped.empty:
        title.append(f"{len(skipped)} point(s) not run/failed (see report)")
    return "\n".join(title)


def _panels(
    axes: tuple[Axes, Axes],
    paper_model: str,
    rows: pd.DataFrame,
    points: pd.DataFrame,
    paper: pd.DataFrame,
    unmeasured: pd.DataFrame,
) -> None:
    """The measured panel (top) and the paper's panel (bottom) of one paper model."""
    mine, theirs = axes
    measured = points[points["paper_model"] == paper_model]
    paper = paper[paper["paper_model"] == paper_model]
    skipped = unmeasured[unmeasured["paper_model"] == paper_model]
    lengths = sorted(set(measured["prompt_tokens"].dropna()) | set(paper["prompt_tokens"].dropna()))
    mine.set_title(
        _measured_title(paper_model, rows, measured, skipped), fontsize=LEGEND_FONT_SIZE + 1
    )
    if measured.empty:
        mark_empty(mine, "no measured prefill points for this model")
    else:
        _plot_measured(mine, measured)
        _log_axes(mine, lengths, "measured prefill (tokens/s, log)")
    theirs.set_title(
        f"paper: {model_title(paper_model)}, full model on the paper's testbed",
        fontsize=LEGEND_FONT_SIZE + 1,
    )
    if paper.empty:
        mark_empty(theirs, "no paper numbers for this model")
    else:
        _plot_paper(theirs, paper)
        _log_axes(theirs, lengths, "paper prefill (tokens/s, log)")


def _legend_entries(points: pd.DataFrame, paper: pd.DataFrame, models: list[str]) -> int:
    """The largest number of legend entries any column will have."""
    most = 0
    for paper_model in models:
        measured = points[points["paper_model"] == paper_model]
        series = measured.drop_duplicates(SERIES_KEYS)
        slices = sum(
            is_slice(r, t)
            for r, t in zip(series["layers_run"], series["layers_total"], strict=True)
        )
        noisy = int(measured["noisy"].astype(bool).any())
        mine = paper[paper["paper_model"] == paper_model].drop_duplicates(["system", "precision"])
        most = max(most, len(series) + slices + noisy + len(mine))
    return most


def _column_legend(axes: tuple[Axes, Axes], target: Axes) -> None:
    """Both panels' legend entries in the column's legend strip (the noisy ring once)."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if NOISY_LABEL in labels:  # the ring explains the others' markers: list it last
        index = labels.index(NOISY_LABEL)
        handles.append(handles.pop(index))
        labels.append(labels.pop(index))
    if handles:
        target.legend(handles, labels, loc="upper center", fontsize=LEGEND_FONT_SIZE, frameon=False)


def render_figure11(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any]
) -> Figure:
    """Build Figure 11 from result rows, reference rows and provenance (no file I/O)."""
    rows = results[results["experiment"] == "prefill"]
    points = point_means(results, "prefill")
    unmeasured = unmeasured_points(rows)
    paper = references[references["experiment"] == "prefill"]
    models = panel_models(rows["paper_model"], paper["paper_model"])
    caption = (
        "Top row: measured in this run (the model actually run is named in each title), mean "
        "of ok trials with +-1 sd error bars (NOT RUN / failed points omitted);\n"
        f"ringed: {NOISY_LABEL}. Bottom row: paper (KTransformers SOSP'25, Fig. 11, dual "
        "Xeon 8452Y + A100 / RTX 4080), on its own axes.\n"
        "Dotted: projection of a layer slice to the full model = measured tokens/s x "
        "layers_run / layers_total (assumes time per layer is constant; an estimate, not a "
        "measurement).\nSpeedup: engine/baseline ratio at the same prompt length and "
        "precision class (full = bf16/fp16, quantized = int8/int4), min–max over the prompt "
        "lengths measured.\n"
        f"Measured on: {short_hardware(provenance)}."
    )
    columns = max(len(models), 1)
    fig = new_figure(5.2 * columns, 9.0)
    entries = _legend_entries(points, paper, models)
    panels, legends = panel_grid(fig, columns, 2, 3.6, legend_rows_height(entries), caption)
    if not models:
        mark_empty(panels[0][0], "no prefill data (neither measured nor in the paper)")
        mark_empty(panels[1][0], "no prefill data (neither measured nor in the paper)")
    for column, paper_model in enumerate(models):
        axes = (panels[0][column], panels[1][column])
        _panels(axes, paper_model, rows, points, paper, unmeasured)
        _column_legend(axes, legends[column])
    fig.suptitle(
        "Figure 11 - prefill throughput vs prompt length", fontsize=FONT_SIZE + 2, fontweight="bold"
    )
    return fig


def plot_figure11(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Write figure11_prefill.png and .pdf into ``out_dir``; return their paths."""
    return save_figure(render_figure11(results, references, provenance), out_dir, STEM)

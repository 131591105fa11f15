"""Figure 13: the performance breakdown (ablation variants), measured and paper, per stage.

Rows: prefill measured, prefill paper, decode measured, decode paper; columns: paper models
(measured and paper on separate axes; the measured model is named in the title). Variants
are in the paper's order; each measured bar is the mean of ok trials with a +-1 sd error
bar (noisy ones ringed), labelled with tokens/s and its ratio to ``base``; variants not
run or failed are hatched slots saying so, never values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from experiments.statistics import is_noisy
from plots.bars import BarEntry, bar_panel, legend_row, legend_rows, not_run_patch
from plots.breakdown_settings import STAGE_VARIANTS, BreakdownSetting, breakdown_settings
from plots.describe import run_model_label, run_model_titles, short_hardware
from plots.figure_io import save_figure
from plots.references import reference_points
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
)

STEM = "figure13_breakdown"
STAGES = ("prefill", "decode")
LEGEND_ENTRIES = 4  # base, engine variants, not run, noisy


def _setting_label(setting: BreakdownSetting) -> str:
    key = setting.key
    label = run_model_label(
        setting.model, bool(key["synthetic"]), key["layers_run"], key["layers_total"]
    )
    workload = (
        f"prompt {int(key['prompt_tokens'])}"
        if setting.stage == "prefill"
        else f"decode {int(key['decode_tokens'])}"
        if pd.notna(key["decode_tokens"])
        else "decode"
    )
    return f"{label}, {key['precision']}, {workload}"


def _entries(settings: list[BreakdownSetting], with_model: bool) -> list[BarEntry]:
    entries = []
    for setting in settings:
        base = setting.values.get("base")
        for variant in STAGE_VARIANTS[setting.stage]:
            value = setting.values.get(variant)
            note = f"{value / base:.2f}x" if value is not None and base else ""
            status = setting.missing.get(variant, ("not run", ""))[0]
            system = "fiddler" if variant == "base" else "engine"
            label = f"{setting.model}: {variant}" if with_model else variant
            cv = setting.cv.get(variant, float("nan"))
            entries.append(
                BarEntry(
                    label,
                    value,
                    system_color(system),
                    status,
                    note=note,
                    sd=setting.sd.get(variant, float("nan")),
                    cv=cv,
                    noisy=value is not None and is_noisy(cv),
                )
            )
    return entries


def _panel_title(head: str, settings: list[BreakdownSetting]) -> str:
    lines = [head] + [_setting_label(s) for s in settings]
    return "\n".join(lines)


def render_figure13(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any]
) -> Figure:
    """Build Figure 13 from result rows, reference rows and provenance (no file I/O)."""
    paper_rows = reference_points(references[references["experiment"] == "breakdown"])
    measured = {stage: breakdown_settings(results, stage) for stage in STAGES}
    paper = {stage: breakdown_settings(paper_rows, stage) for stage in STAGES}
    breakdown_rows = results[results["experiment"] == "breakdown"]
    models = panel_models(breakdown_rows["paper_model"], paper_rows["paper_model"])
    columns = max(len(models), 1)
    caption = (
        "Measured rows: mean of ok trials in this run with +-1 sd error bars; ringed: "
        f"{NOISY_LABEL}; hatched slots were not run or failed (no value).\nPaper rows: "
        "KTransformers SOSP'25, Fig. 13 (prefill at 8192 prompt tokens, decode after a "
        "32-token prompt), on their own axes.\n"
        "base = Fiddler; +v AVX-512 kernel, +m AMX kernel, +d dynamic scheduling, +n NUMA-aware "
        "tensor parallelism, +c CUDA Graph. Bar labels: tokens/s and ratio to base.\n"
        f"Measured on: {short_hardware(provenance)}."
    )
    fig = new_figure(5.0 * columns, 14.0)
    legend_height = legend_rows_height(legend_rows(LEGEND_ENTRIES, columns))
    panels, legends = panel_grid(fig, columns, 4, 3.0, legend_height, caption, shared_legend=True)
    for column, paper_model in enumerate(models):
        for index, stage in enumerate(STAGES):
            mine = [s for s in measured[stage] if s.paper_model == paper_model]
            theirs = [s for s in paper[stage] if s.paper_model == paper_model]
            ax_mine, ax_paper = panels[2 * index][column], panels[2 * index + 1][column]
            names = run_model_titles(breakdown_rows[breakdown_rows["stage"] == stage], paper_model)
            names = names or [f"nothing for {model_title(paper_model)}"]
            head = "\n".join([f"{stage}, measured:", *names])
            ax_mine.set_title(_panel_title(head, mine), fontsize=LEGEND_FONT_SIZE + 1)
            bar_panel(
                ax_mine,
                _entries(mine, len(mine) > 1),
                f"measured {stage} (tokens/s)",
                f"no measured {stage} breakdown for this model",
            )
            ax_paper.set_title(
                f"{stage}, paper: {model_title(paper_model)}, full model",
                fontsize=LEGEND_FONT_SIZE + 1,
            )
            bar_panel(
                ax_paper,
                _entries(theirs, False),
                f"paper {stage} (tokens/s)",
                f"no paper {stage} breakdown for this model",
            )
    if not models:
        for row in panels:
            bar_panel(
                row[0],
                [],
                "throughput (tokens/s)",
                "no breakdown data (neither measured nor paper)",
            )
    handles = [
        Patch(color=system_color("fiddler"), label="base (Fiddler)"),
        Patch(color=system_color("engine"), label="engine variants"),
        not_run_patch(),
        noisy_handle(),
    ]
    legend_row(legends[0], handles, columns)
    fig.suptitle(
        "Figure 13 - performance breakdown (ablation)", fontsize=FONT_SIZE + 2, fontweight="bold"
    )
    return fig


def plot_figure13(
    results: pd.DataFrame, references: pd.DataFrame, provenance: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Write figure13_breakdown.png and .pdf into ``out_dir``; return their paths."""
    return save_figure(render_figure13(results, references, provenance), out_dir, STEM)

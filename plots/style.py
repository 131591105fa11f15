"""The figures' shared look: colours per system, markers per precision, line styles, labels.

Measured data is solid with +-1 sd error bars, the paper's numbers dashed, projections of a
layer slice dotted; points whose trials vary more than the CV threshold wear a black ring;
a system keeps one colour in every figure.
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from experiments.schema import PAPER_MODELS  # noqa: E402
from experiments.statistics import DEFAULT_CV_THRESHOLD  # noqa: E402

SYSTEM_COLORS = {
    "engine": "#d62728",
    "fiddler": "#1f77b4",
    "llamacpp": "#2ca02c",
    "llamacpp_best": "#98df8a",
}
OTHER_COLOR = "#7f7f7f"
# The engine's prefill placements other than its own setting (experiments.prefill): one
# colour each, so its series stay apart from the baselines' and from each other.
PLACEMENT_COLORS = {
    "cpu": "#e377c2",
    "gpu_stream": "#ff7f0e",
    "split": "#9467bd",
    "auto": "#8c564b",
}
SHORT_SYSTEM_NAMES = {
    "engine": "engine",
    "fiddler": "Fiddler",
    "llamacpp": "llama.cpp (artifact flags)",
    "llamacpp_best": "llama.cpp (best settings)",
}
PRECISION_MARKERS = {"bf16": "o", "fp16": "D", "int8": "s", "int4": "^"}
MEASURED_STYLE = "-"
PAPER_STYLE = "--"
PROJECTION_STYLE = ":"
NOT_RUN_HATCH = "//"
NOT_RUN_EDGE = "#9a9a9a"
FONT_SIZE = 9
LEGEND_FONT_SIZE = 7
DPI = 120
PAPER_LABEL = "paper"
PAPER_TESTBED = "paper testbed: 2x Xeon 8452Y + A100 (full) / RTX 4080 (quantized)"
ERROR_CAPSIZE = 2.5
NOISY_LABEL = f"noisy: CV > {DEFAULT_CV_THRESHOLD:.0%} across trials (see report)"
NOISY_MARKER = {
    "marker": "o",
    "markersize": 10,
    "markerfacecolor": "none",
    "markeredgecolor": "black",
    "markeredgewidth": 1.2,
    "linestyle": "none",
}


def system_color(system: str) -> str:
    """The colour of a system's lines and bars."""
    return SYSTEM_COLORS.get(system, OTHER_COLOR)


def series_color(system: str, variant: str) -> str:
    """The colour of a system's series: its own, or its prefill placement's."""
    if variant and variant in PLACEMENT_COLORS:
        return PLACEMENT_COLORS[variant]
    return system_color(system)


def series_name(system: str, variant: str) -> str:
    """A system's display name with its variant, e.g. ``engine gpu_stream``."""
    name = system_name(system)
    return f"{name} {variant}" if variant else name


def system_name(system: str) -> str:
    """A short display name (engine, Fiddler, llama.cpp)."""
    return SHORT_SYSTEM_NAMES.get(system, system)


def precision_marker(precision: str) -> str:
    """The marker of a precision's line points."""
    return PRECISION_MARKERS.get(precision, "x")


def mark_noisy(ax: Axes, xs: list[float], ys: list[float], label: str = NOISY_LABEL) -> None:
    """Ring the points (xs, ys) whose CV is above the threshold (one legend entry)."""
    if xs:
        ax.plot(xs, ys, label=label, zorder=5, **NOISY_MARKER)


def noisy_handle() -> Line2D:
    """Legend entry for the ring that marks noisy points."""
    return Line2D([], [], label=NOISY_LABEL, **NOISY_MARKER)


def model_title(paper_model: str) -> str:
    """Panel title for a paper model key, e.g. 'Qwen2-57B-A14B (qw2)'."""
    name = PAPER_MODELS.get(paper_model)
    return f"{name} ({paper_model})" if name else paper_model


def new_figure(width: float, height: float) -> Figure:
    """A blank Agg-backed figure (no pyplot global state)."""
    matplotlib.rcParams.update({"font.size": FONT_SIZE})
    return Figure(figsize=(width, height), dpi=DPI)


def mark_empty(ax: Axes, text: str) -> None:
    """Say in an axis that it has no data, instead of leaving it blank."""
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=FONT_SIZE,
        color="#555555",
        wrap=True,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def mark_not_run(ax: Axes, x: float, width: float, text: str) -> None:
    """Hatch a bar slot over the whole axis height and label it (not a value)."""
    ax.axvspan(
        x - width / 2,
        x + width / 2,
        fill=False,
        hatch=NOT_RUN_HATCH,
        edgecolor=NOT_RUN_EDGE,
        linewidth=0.5,
    )
    ax.text(
        x,
        0.5,
        text,
        rotation=90,
        ha="center",
        va="center",
        fontsize=LEGEND_FONT_SIZE,
        color="#555555",
        transform=ax.get_xaxis_transform(),
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )


def legend_rows_height(entries: int) -> float:
    """Inches a legend of ``entries`` one-line entries needs."""
    return 0.17 * entries + 0.2


def caption_height(caption: str) -> float:
    """Inches a caption of this many lines needs."""
    return 0.16 * (caption.count("\n") + 1) + 0.15


def panel_grid(
    fig: Figure,
    columns: int,
    panel_rows: int,
    panel_height: float,
    legend_height: float,
    caption: str,
    shared_legend: bool = False,
) -> tuple[list[list[Axes]], list[Axes]]:
    """Lay out ``panel_rows`` x ``columns`` plot axes, a legend strip per column, a caption.

    Returns (panel axes by row, legend axes by column, or one spanning all columns when
    ``shared_legend``). The figure height is set to fit;
    legend and caption areas are axes with their frame hidden, so nothing covers data.
    """
    legend_height = max(legend_height, 0.01)
    cap = caption_height(caption)
    ratios = [panel_height] * panel_rows + [legend_height, cap]
    fig.set_figheight(sum(ratios) + 0.8)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(panel_rows + 2, columns, height_ratios=ratios)
    panels = [[fig.add_subplot(grid[r, c]) for c in range(columns)] for r in range(panel_rows)]
    if shared_legend:
        legends = [fig.add_subplot(grid[panel_rows, :])]
    else:
        legends = [fig.add_subplot(grid[panel_rows, c]) for c in range(columns)]
    for ax in legends:
        ax.set_axis_off()
    caption_ax = fig.add_subplot(grid[panel_rows + 1, :])
    caption_ax.set_axis_off()
    caption_ax.text(
        0.0,
        1.0,
        caption,
        ha="left",
        va="top",
        fontsize=LEGEND_FONT_SIZE,
        color="#333333",
        transform=caption_ax.transAxes,
    )
    return panels, legends


def panel_models(*key_sets: Iterable[object]) -> list[str]:
    """Paper model keys present in any of the given iterables: qw2, ds2, ds3 first."""
    present = {k for keys in key_sets for k in keys if isinstance(k, str) and k}
    known = [k for k in PAPER_MODELS if k in present]
    return known + sorted(present - set(known))

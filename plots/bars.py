"""Draw one bar panel: measured values as bars, points without a value as hatched slots.

Used by Figures 12 and 13. A bar with a known sd carries a +-1 sd error bar; a noisy one
(CV above the threshold) a black ring at its top and its CV in the label. A bar without a
value is never drawn as a value: its slot is hatched over the whole axis height and
labelled with why (not run / failed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from plots.style import (
    ERROR_CAPSIZE,
    LEGEND_FONT_SIZE,
    NOT_RUN_EDGE,
    NOT_RUN_HATCH,
    mark_empty,
    mark_noisy,
    mark_not_run,
)

BAR_WIDTH = 0.7


@dataclass(frozen=True)
class BarEntry:
    """One bar slot: its tick label, value (None = no value), colour and missing-text;
    ``sd``/``cv`` of its trials (NaN = unknown) and whether it is ``noisy``."""

    label: str
    value: float | None
    color: str
    missing_text: str = "not run"
    hatch: str = ""
    note: str = ""
    sd: float = math.nan
    cv: float = math.nan
    noisy: bool = False


def _value_text(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def bar_panel(ax: Axes, entries: list[BarEntry], ylabel: str, empty_text: str) -> None:
    """Draw ``entries`` left to right; say ``empty_text`` in the panel when there are none."""
    if not entries:
        mark_empty(ax, empty_text)
        return
    positions = list(range(len(entries)))
    tops = [e.value + _sd(e) for e in entries if e.value is not None]
    top = max(tops) if tops else 1.0
    noisy_x, noisy_y = [], []
    label_lines = 1
    for x, entry in zip(positions, entries, strict=True):
        if entry.value is None:
            mark_not_run(ax, x, BAR_WIDTH, entry.missing_text)
            continue
        sd = _sd(entry)
        ax.bar(
            x,
            entry.value,
            width=BAR_WIDTH,
            color=entry.color,
            hatch=entry.hatch,
            edgecolor="black",
            linewidth=0.4,
            yerr=sd if sd > 0 else None,
            capsize=ERROR_CAPSIZE,
            error_kw={"elinewidth": 0.8},
        )
        lines = [_value_text(entry.value)]
        if entry.note:
            lines.append(entry.note)
        if entry.noisy:
            lines.append(f"CV {entry.cv:.0%}")
            noisy_x.append(x)
            noisy_y.append(entry.value)
        label_lines = max(label_lines, len(lines))
        ax.text(
            x,
            entry.value + sd + top * 0.01,
            "\n".join(lines),
            ha="center",
            va="bottom",
            fontsize=LEGEND_FONT_SIZE,
        )
    mark_noisy(ax, noisy_x, noisy_y)
    ax.set_xticks(positions)
    ax.set_xticklabels(
        [e.label for e in entries], rotation=45, ha="right", fontsize=LEGEND_FONT_SIZE
    )
    ax.set_xlim(-0.6, len(entries) - 0.4)
    ax.set_ylim(0, top * (1.1 + 0.1 * label_lines))  # room for the value labels
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)


def _sd(entry: BarEntry) -> float:
    return 0.0 if math.isnan(entry.sd) else entry.sd


def not_run_patch() -> Patch:
    """Legend entry for the hatched slots of points that were not run or failed."""
    return Patch(
        facecolor="white",
        edgecolor=NOT_RUN_EDGE,
        hatch=NOT_RUN_HATCH,
        label="not run / failed (no value)",
    )


ENTRIES_PER_PANEL_COLUMN = 3  # legend entries side by side per figure column


def legend_rows(entries: int, columns: int) -> int:
    """Rows a legend of ``entries`` needs in a figure ``columns`` panels wide."""
    return math.ceil(entries / max(1, min(entries, ENTRIES_PER_PANEL_COLUMN * columns)))


def legend_row(ax: Axes, handles: list[Artist], columns: int = 1) -> None:
    """Centred rows of legend entries in the (axis-less) legend strip ``ax`` of a figure
    ``columns`` panels wide (3 entries side by side per panel column)."""
    ax.legend(
        handles=handles,
        loc="upper center",
        ncol=max(1, min(len(handles), ENTRIES_PER_PANEL_COLUMN * columns)),
        fontsize=LEGEND_FONT_SIZE,
        frameon=False,
    )

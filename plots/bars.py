"""Draw one bar panel: measured values as bars, points without a value as hatched slots.

Used by Figures 12 and 13. A bar without a value is never drawn as a value: its slot is
hatched over the whole axis height and labelled with why (not run / failed).
"""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.patches import Patch

from plots.style import (
    LEGEND_FONT_SIZE,
    NOT_RUN_EDGE,
    NOT_RUN_HATCH,
    mark_empty,
    mark_not_run,
)

BAR_WIDTH = 0.7


@dataclass(frozen=True)
class BarEntry:
    """One bar slot: its tick label, value (None = no value), colour and missing-text."""

    label: str
    value: float | None
    color: str
    missing_text: str = "not run"
    hatch: str = ""
    note: str = ""


def _value_text(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def bar_panel(ax: Axes, entries: list[BarEntry], ylabel: str, empty_text: str) -> None:
    """Draw ``entries`` left to right; say ``empty_text`` in the panel when there are none."""
    if not entries:
        mark_empty(ax, empty_text)
        return
    positions = list(range(len(entries)))
    values = [e.value for e in entries if e.value is not None]
    top = max(values) if values else 1.0
    for x, entry in zip(positions, entries, strict=True):
        if entry.value is None:
            mark_not_run(ax, x, BAR_WIDTH, entry.missing_text)
            continue
        ax.bar(
            x,
            entry.value,
            width=BAR_WIDTH,
            color=entry.color,
            hatch=entry.hatch,
            edgecolor="black",
            linewidth=0.4,
        )
        text = _value_text(entry.value) + (f"\n{entry.note}" if entry.note else "")
        ax.text(
            x, entry.value + top * 0.01, text, ha="center", va="bottom", fontsize=LEGEND_FONT_SIZE
        )
    ax.set_xticks(positions)
    ax.set_xticklabels(
        [e.label for e in entries], rotation=45, ha="right", fontsize=LEGEND_FONT_SIZE
    )
    ax.set_xlim(-0.6, len(entries) - 0.4)
    ax.set_ylim(0, top * 1.2)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)


def not_run_patch() -> Patch:
    """Legend entry for the hatched slots of points that were not run or failed."""
    return Patch(
        facecolor="white",
        edgecolor=NOT_RUN_EDGE,
        hatch=NOT_RUN_HATCH,
        label="not run / failed (no value)",
    )


def legend_row(ax: Axes, handles: list[Patch]) -> None:
    """One centred row of legend entries in the (axis-less) legend strip ``ax``."""
    ax.legend(
        handles=handles,
        loc="upper center",
        ncol=len(handles),
        fontsize=LEGEND_FONT_SIZE,
        frameon=False,
    )

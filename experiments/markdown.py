"""Render small Markdown tables and numbers for the report and Table 2."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

DASH = "—"


def cell(value: object) -> str:
    """Text of one table cell: '|' escaped, newlines flattened, None/NaN as a dash."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return DASH
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; '_(none)_' when there are no rows."""
    if not rows:
        return "_(none)_\n"
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def number(value: float | None, digits: int = 2) -> str:
    """A float with ``digits`` decimals, or a dash when missing."""
    if value is None or pd.isna(value):
        return DASH
    return f"{value:.{digits}f}"


def percent(fraction: float | None) -> str:
    """A 0..1 score as a percentage with two decimals ('83.05'), or a dash."""
    if fraction is None or pd.isna(fraction):
        return DASH
    return f"{fraction * 100:.2f}"

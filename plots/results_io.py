"""Read a results directory (results.csv + provenance.json) for the figures and the report.

:func:`load_results` is the one place that reads measured rows: it reads them through
``experiments.results_store.load_results`` (which drops superseded rows), turns every
problem into :class:`ResultsInputError` (a ValueError) and normalises the frame to typed
:data:`RESULT_COLUMNS`, so the plotting code never sees raw CSV text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.errors import HmoeError
from experiments.results_store import load_results as store_load_results
from experiments.schema import NUMERIC_COLUMNS, RESULT_COLUMNS

RESULTS_CSV = "results.csv"
PROVENANCE_JSON = "provenance.json"

BOOL_COLUMNS = ("synthetic",)
_TRUE_TEXT = {"true", "1", "yes", "y", "t"}


class ResultsInputError(HmoeError, ValueError):
    """The results directory is missing, empty, or its results.csv cannot be read.

    A ValueError for callers, and an HmoeError so the CLI prints it as one line.
    """


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_TEXT
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return False
    return bool(value)


def normalize_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with every RESULT_COLUMN present and typed (float / bool / str)."""
    out = frame.copy()
    for column in RESULT_COLUMNS:
        if column not in out.columns:
            out[column] = pd.NA
    out = out[list(RESULT_COLUMNS)]
    for column in RESULT_COLUMNS:
        if column in NUMERIC_COLUMNS:
            out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
        elif column in BOOL_COLUMNS:
            out[column] = out[column].map(_to_bool).astype(bool)
        else:
            text = out[column].astype(object).where(out[column].notna(), "")
            out[column] = text.map(str).astype(object)
    return out.reset_index(drop=True)


def load_results(results_dir: Path) -> pd.DataFrame:
    """All current rows of ``results_dir`` as a normalised DataFrame.

    Reads through the harness's results store (superseded rows dropped); raises
    ResultsInputError when the directory or its results.csv is missing, unreadable or empty.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsInputError(f"results directory {results_dir} does not exist")
    if not (results_dir / RESULTS_CSV).is_file():
        raise ResultsInputError(f"{results_dir}: no {RESULTS_CSV} (has the run written results?)")
    try:
        frame = store_load_results(results_dir)
    except (HmoeError, OSError, ValueError) as exc:
        raise ResultsInputError(f"{results_dir}: cannot read results: {exc}") from exc
    if frame.empty:
        raise ResultsInputError(f"{results_dir}: results are empty (no rows)")
    return normalize_results(frame)


def load_provenance(results_dir: Path) -> dict[str, Any]:
    """provenance.json as a dict; {} when it is missing or not valid JSON."""
    path = Path(results_dir) / PROVENANCE_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

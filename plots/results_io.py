"""Read a results directory's rows for the figures and the report.

:func:`report_results` reads them through ``experiments.results_store.load_results`` (the
one reader of results tables, which drops superseded rows), turns every
problem into :class:`ResultsInputError` (a ValueError) and normalises the frame to typed
:data:`RESULT_COLUMNS`, so the plotting code never sees raw CSV text. It takes one results
directory (with its shards) or a set of them, read as one table (experiments/shards.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import shards
from experiments.errors import HmoeError
from experiments.results_store import load_result_set
from experiments.schema import NUMERIC_COLUMNS, RESULT_COLUMNS

RESULTS_CSV = "results.csv"

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


def result_paths(results_dirs: str | PathLike | Sequence[str | PathLike]) -> list[Path]:
    """One path or several, as a list of Paths."""
    if isinstance(results_dirs, str | PathLike):
        return [Path(results_dirs)]
    return [Path(p) for p in results_dirs]


def report_results(results_dirs: str | PathLike | Sequence[str | PathLike]) -> pd.DataFrame:
    """All current rows of a results directory (its own table and its shards), or of a set
    of them read as one table, as a normalised DataFrame, for the report.

    Reads through the harness's results store (superseded rows dropped); raises
    ResultsInputError when a directory or its results.csv is missing, unreadable or empty,
    or when the shards mix configurations.
    """
    paths = result_paths(results_dirs)
    for path in paths:
        if not path.is_dir():
            raise ResultsInputError(f"results directory {path} does not exist")
        try:
            shards.expand([path])
        except HmoeError:
            raise ResultsInputError(
                f"{path}: no {RESULTS_CSV} (has the run written results?)"
            ) from None
    where = str(paths[0]) if len(paths) == 1 else ", ".join(str(p) for p in paths)
    try:
        frame = load_result_set(paths)
    except shards.MixedShardsError as exc:
        raise ResultsInputError(str(exc)) from exc
    except (HmoeError, OSError, ValueError) as exc:
        raise ResultsInputError(f"{where}: cannot read results: {exc}") from exc
    if frame.empty:
        raise ResultsInputError(f"{where}: results are empty (no rows)")
    return normalize_results(frame)

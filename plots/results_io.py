"""Read a results directory (results.csv + provenance.json) for the figures and the report.

:func:`load_results` is the one place that reads measured rows. It uses the lead's
``experiments.results_store.load_results`` when that module exists and otherwise reads
``results.csv`` with pandas; either way the frame is normalised to typed
:data:`RESULT_COLUMNS`, so the plotting code never sees raw CSV text.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.schema import RESULT_COLUMNS

RESULTS_CSV = "results.csv"
PROVENANCE_JSON = "provenance.json"

NUMERIC_COLUMNS = (
    "layers_run",
    "layers_total",
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "trial",
    "seconds",
    "tokens_per_s",
    "score",
    "cpu_util_pct",
    "peak_rss_mb",
    "gpu_util_pct",
    "gpu_mem_mb",
)
BOOL_COLUMNS = ("synthetic",)
_TRUE_TEXT = {"true", "1", "yes", "y", "t"}


class ResultsInputError(ValueError):
    """The results directory is missing, empty, or its results.csv cannot be read."""


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


def _store_loader() -> Any | None:
    """The lead's results_store.load_results, or None while it does not exist yet."""
    try:
        module = importlib.import_module("experiments.results_store")
    except ModuleNotFoundError as exc:
        if exc.name in ("experiments.results_store", "experiments"):
            return None
        raise
    return getattr(module, "load_results", None)


def _read_csv(results_dir: Path) -> pd.DataFrame:
    path = results_dir / RESULTS_CSV
    if not path.is_file():
        raise ResultsInputError(f"{results_dir}: no {RESULTS_CSV} (has the run written results?)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as exc:
        raise ResultsInputError(f"{path}: empty file") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise ResultsInputError(f"{path}: cannot be read as CSV: {exc}") from exc


def load_results(results_dir: Path) -> pd.DataFrame:
    """All rows of ``results_dir`` as a normalised DataFrame; raise ResultsInputError if none."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsInputError(f"results directory {results_dir} does not exist")
    loader = _store_loader()
    if loader is None:
        frame = _read_csv(results_dir)
    else:
        try:
            frame = loader(results_dir)
        except ResultsInputError:
            raise
        except (OSError, ValueError) as exc:
            raise ResultsInputError(f"{results_dir}: cannot load results: {exc}") from exc
    if "status" not in frame.columns:
        raise ResultsInputError(f"{results_dir}: results have no 'status' column")
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

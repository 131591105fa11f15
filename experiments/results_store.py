"""The results table of one run: append-and-flush per point, crash-safe, deduplicated on read.

``results/<run>/results.csv`` only ever grows by whole points: the rows of one point are
written in one ``write`` followed by ``flush`` + ``fsync``, so Ctrl-C or a crash loses at
most the point in flight. A torn last line (the process died inside ``write``) is cut off
before the next append. A point that is measured again (``rerun=true``, or after a failure)
supersedes its earlier rows; :meth:`ResultsStore.compact` rewrites the file without the
superseded rows through an atomic replace.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.atomic_write import atomic_write
from experiments.errors import HmoeError
from experiments.schema import NUMERIC_COLUMNS, RESULT_COLUMNS, STATUS_OK

RESULTS_FILE = "results.csv"
PARQUET_FILE = "results.parquet"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _repair_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a process killed in the middle of a write."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        # Find the last newline and truncate after it.
        pos = size - 1
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                fh.truncate(start + idx + 1)
                return
            pos = start
        fh.truncate(0)


class ResultsStore:
    """Append-only CSV of result rows for one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RESULTS_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write_probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise HmoeError(
                f"results directory {self.run_dir} is not writable: {exc.strerror or exc}"
            ) from exc
        if self.path.exists():
            _repair_torn_tail(self.path)
        self._done: set[str] | None = None

    # -- reading -----------------------------------------------------------------------------
    def completed_points(self) -> set[str]:
        """point_ids with at least one ``ok`` row (these are skipped on a rerun)."""
        if self._done is None:
            df = self.read()
            self._done = set(df.loc[df["status"] == STATUS_OK, "point_id"]) if len(df) else set()
        return self._done

    def read(self) -> pd.DataFrame:
        """All current rows (superseded rows removed)."""
        return load_results(self.run_dir) if self.path.exists() else _empty_frame()

    # -- writing -----------------------------------------------------------------------------
    def append_point(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append all rows of one point in one write, flushed and fsynced.

        All rows of one call must carry the same ``timestamp`` (the runner stamps them).
        """
        rows = list(rows)
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        if new_file:
            writer.writerow(RESULT_COLUMNS)
        for row in rows:
            unknown = set(row) - set(RESULT_COLUMNS)
            if unknown:
                raise KeyError(f"unknown result columns: {sorted(unknown)}")
            writer.writerow([_cell(row.get(col)) for col in RESULT_COLUMNS])
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        if self._done is not None:
            for row in rows:
                if row.get("status") == STATUS_OK:
                    self._done.add(str(row["point_id"]))

    def compact(self) -> None:
        """Rewrite the CSV without superseded rows (atomic replace); also write Parquet."""
        if not self.path.exists():
            return
        df = load_results(self.run_dir)
        columns = list(RESULT_COLUMNS)
        atomic_write(self.path, lambda fh: df.to_csv(fh, index=False, columns=columns), newline="")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return  # pyarrow not installed: the CSV is the canonical table
        atomic_write(
            self.run_dir / PARQUET_FILE, lambda fh: df.to_parquet(fh, index=False), binary=True
        )


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype="object") for col in RESULT_COLUMNS})


def load_results(results_dir: Path) -> pd.DataFrame:
    """Read ``results_dir/results.csv``, typed, with superseded rows dropped.

    A point's rows are superseded when the same ``point_id`` was written again later: only
    the rows of its latest write are kept (all rows of one write share one ``timestamp``).
    """
    path = Path(results_dir) / RESULTS_FILE
    if not path.exists():
        raise HmoeError(f"no results table at {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise HmoeError(f"cannot read {path}: {exc}") from exc
    except pd.errors.EmptyDataError:
        return _empty_frame()
    missing = [c for c in ("point_id", "status") if c not in df.columns]
    if missing:
        raise HmoeError(f"{path} is not a results table (missing columns {missing})")
    for col in RESULT_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    df = df[list(RESULT_COLUMNS)]
    # Keep, for every point, only the rows of its last write (ISO timestamps sort as text).
    latest = df.groupby("point_id")["timestamp"].transform("max")
    df = df[df["timestamp"] == latest].reset_index(drop=True)
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["synthetic"] = df["synthetic"].str.lower().isin(["true", "1"])
    return df

"""The results table of one run: append-and-flush per point, crash-safe, deduplicated on read.

``results/<run>/results.csv`` only ever grows by whole points: the rows of one point are
written in one ``write`` followed by ``flush`` + ``fsync``, so Ctrl-C or a crash loses at
most the point in flight. A torn last line (the process died inside ``write``) is cut off
before the next append. A point that is measured again (``rerun=true``, or after a failure)
supersedes its earlier rows; :meth:`ResultsStore.compact` rewrites the file without the
superseded rows through an atomic replace.

A job running on a cluster (``hydra/launcher=slurm|local``) writes its own shard
``results/<run>/shards/<host>-<job id>/`` instead (experiments/shards.py), and reading a
results directory merges its own table with its shards': a point measured on one host is
skipped on another, and :func:`load_result_set` reads several directories as one table,
refusing shards of different configurations.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments import shards
from experiments.atomic_write import atomic_write
from experiments.errors import HmoeError
from experiments.schema import NUMERIC_COLUMNS, RESULT_COLUMNS, STATUS_FAILED, STATUS_OK

RESULTS_FILE = shards.RESULTS_FILE
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
    """Append-only CSV of result rows for one run directory.

    Rows go to ``run_dir/results.csv``, or to this job's shard under ``run_dir/shards/``
    when it runs on a cluster (``write_dir``); reads cover the directory and all its shards.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.write_dir = shards.write_dir(self.run_dir)
        self.path = self.write_dir / RESULTS_FILE
        # a shard's folder is made with its first rows (a job with nothing to do leaves none)
        where = self.run_dir if self.write_dir == self.run_dir else self.write_dir.parent
        try:
            where.mkdir(parents=True, exist_ok=True)
            probe = where / ".write_probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise HmoeError(
                f"results directory {where} is not writable: {exc.strerror or exc}"
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
        """All current rows of the directory and its shards (superseded rows removed)."""
        if not any((leaf / RESULTS_FILE).is_file() for leaf in shards.tables(self.run_dir)):
            return _empty_frame()
        return load_results(self.run_dir)

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
        self.write_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        if self._done is not None:
            for row in rows:
                if row.get("status") == STATUS_OK:
                    self._done.add(str(row["point_id"]))

    def compact(self) -> None:
        """Rewrite this writer's CSV without its superseded rows (atomic replace); also
        write Parquet. Other shards are never rewritten (each has one writer)."""
        if not self.path.exists():
            return
        df = _typed(_supersede(_read_table(self.path)))
        columns = list(RESULT_COLUMNS)
        atomic_write(self.path, lambda fh: df.to_csv(fh, index=False, columns=columns), newline="")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            return  # pyarrow not installed: the CSV is the canonical table
        atomic_write(
            self.write_dir / PARQUET_FILE, lambda fh: df.to_parquet(fh, index=False), binary=True
        )


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype="object") for col in RESULT_COLUMNS})


def _read_table(path: Path) -> pd.DataFrame:
    """One results.csv as text columns (RESULT_COLUMNS, in order), superseded rows kept. A
    last line without its newline (a writer in the middle of an append) is left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HmoeError(f"cannot read {path}: {exc}") from exc
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, on_bad_lines="skip")
    except pd.errors.ParserError as exc:
        raise HmoeError(f"cannot read {path}: {exc}") from exc
    except pd.errors.EmptyDataError:
        return _empty_frame()
    missing = [c for c in ("point_id", "status") if c not in df.columns]
    if missing:
        raise HmoeError(f"{path} is not a results table (missing columns {missing})")
    for col in RESULT_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    return df[list(RESULT_COLUMNS)]


def _supersede(df: pd.DataFrame) -> pd.DataFrame:
    """Keep, for every point, only the rows of its last write (ISO timestamps sort as text)."""
    if df.empty:
        return df.reset_index(drop=True)
    latest = df.groupby("point_id")["timestamp"].transform("max")
    return df[df["timestamp"] == latest].reset_index(drop=True)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["synthetic"] = df["synthetic"].astype(str).str.lower().isin(["true", "1"])
    return df


def _row_identity(df: pd.DataFrame) -> dict[str, str] | None:
    """A shard's profile as its rows say, for shards whose provenance does not."""
    profiles = {p for p in df["profile"].unique() if p}
    return {"profile": profiles.pop()} if len(profiles) == 1 else None


def _merge(leaves: Sequence[Path]) -> pd.DataFrame:
    """The rows of shards read as one table; HmoeError when they mix configurations."""
    frames, identities = [], []
    for leaf in leaves:
        path = leaf / RESULTS_FILE
        frame = _read_table(path) if path.is_file() else _empty_frame()
        identity = shards.shard_provenance(leaf).get("identity") or _row_identity(frame)
        identities.append((shards.label(leaf), identity))
        frames.append(frame)
    if len(leaves) > 1:
        shards.merge_identities(identities)
    df = pd.concat(frames, ignore_index=True) if frames else _empty_frame()
    if len(frames) > 1:
        df = df.drop_duplicates()  # the same shard reached twice (e.g. a copy of a copy)
    return _typed(_supersede(df))


def load_results(results_dir: Path) -> pd.DataFrame:
    """Read ``results_dir/results.csv`` and its shards' (``shards/*/results.csv``) as one
    table, typed, with superseded rows dropped.

    A point's rows are superseded when the same ``point_id`` was written again later (in
    any shard): only the rows of its latest write are kept (all rows of one write share one
    ``timestamp``). HmoeError when there is no table, or the shards mix configurations.
    """
    results_dir = Path(results_dir)
    leaves = shards.tables(results_dir)
    if not any((leaf / RESULTS_FILE).is_file() for leaf in leaves):
        raise HmoeError(f"no results table at {results_dir / RESULTS_FILE}")
    return _merge(leaves)


def load_result_set(paths: Sequence[Path]) -> pd.DataFrame:
    """Several results directories, or parent folders of them (shards brought back from
    several hosts), read as one table: as :func:`load_results`, over all their shards."""
    return _merge(shards.expand(paths))


def point_statuses(results_dir: Path, run_id: str, experiment: str | None = None) -> dict[str, int]:
    """How the points that invocation ``run_id`` measured in ``results_dir`` ended: {status:
    number of points}, over the current rows (a cluster job's outcome, read back)."""
    try:
        df = load_results(results_dir)
    except HmoeError:
        return {}
    rows = df[df["run_id"] == run_id]
    if experiment is not None:
        rows = rows[rows["experiment"] == experiment]
    counts: dict[str, int] = {}
    for statuses in rows.groupby("point_id")["status"].agg(set):
        # a point with ok trials is measured, even when some of its trials failed
        status = next((s for s in (STATUS_OK, STATUS_FAILED) if s in statuses), min(statuses))
        counts[status] = counts.get(status, 0) + 1
    return counts

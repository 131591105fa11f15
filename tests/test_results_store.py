"""The results table: append per point, torn-line repair, supersession, compaction."""

from __future__ import annotations

import os
import stat

import pytest

from experiments.errors import HmoeError
from experiments.results_store import ResultsStore, load_results
from experiments.schema import RESULT_COLUMNS


def _rows(pid: str, stamp: str, n: int = 3, status: str = "ok") -> list[dict]:
    return [
        {
            "point_id": pid,
            "experiment": "prefill",
            "system": "fiddler",
            "trial": i,
            "tokens_per_s": 100.0 + i,
            "status": status,
            "timestamp": stamp,
            "synthetic": True,
        }
        for i in range(n)
    ]


def test_append_and_read_back(tmp_path):
    store = ResultsStore(tmp_path / "run")
    store.append_point(_rows("a", "2026-01-01T00:00:00.000001"))
    store.append_point(_rows("b", "2026-01-01T00:00:00.000002", status="failed", n=1))
    df = load_results(tmp_path / "run")
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert len(df) == 4
    assert df["tokens_per_s"].dtype.kind == "f"
    assert bool(df["synthetic"].all())
    assert store.completed_points() == {"a"}


def test_rerun_supersedes_earlier_rows_even_when_adjacent(tmp_path):
    store = ResultsStore(tmp_path)
    store.append_point(_rows("a", "2026-01-01T00:00:00.000001"))
    newer = _rows("a", "2026-01-01T00:00:01.000000")
    for r in newer:
        r["tokens_per_s"] = 5.0
    store.append_point(newer)
    df = load_results(tmp_path)
    assert len(df) == 3
    assert set(df["tokens_per_s"]) == {5.0}
    store.compact()
    with open(tmp_path / "results.csv") as fh:
        assert sum(1 for _ in fh) == 4  # header + 3 rows after compaction


def test_torn_last_line_is_cut_before_next_append(tmp_path):
    store = ResultsStore(tmp_path)
    store.append_point(_rows("a", "2026-01-01T00:00:00.000001"))
    with open(tmp_path / "results.csv", "a") as fh:
        fh.write("run,deadbeef,prefill,half a li")  # a crash in the middle of a write
    store2 = ResultsStore(tmp_path)
    store2.append_point(_rows("b", "2026-01-01T00:00:00.000002"))
    df = load_results(tmp_path)
    assert sorted(set(df["point_id"])) == ["a", "b"]
    assert len(df) == 6


def test_unknown_column_is_refused(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(KeyError, match="nonsense"):
        store.append_point([{"point_id": "x", "nonsense": 1}])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_is_one_clear_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.raises(HmoeError, match="not writable"):
        ResultsStore(locked / "run")


def test_results_dir_under_a_file_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HmoeError, match="not writable"):
        ResultsStore(blocker / "run")


def test_missing_or_foreign_table(tmp_path):
    with pytest.raises(HmoeError, match="no results table"):
        load_results(tmp_path)
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(HmoeError, match="not a results table"):
        load_results(tmp_path)

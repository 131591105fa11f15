"""Results shards: each cluster job writes its own, a results directory (or a set of them,
brought back from several hosts) reads as one table, and shards of different configurations
are refused (exit 2), as one results directory refuses a job that would mix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments import shards
from experiments.compare import main as compare_main
from experiments.errors import HmoeError
from experiments.provenance import read_provenance, record_job_end, record_job_start
from experiments.results_store import ResultsStore, load_result_set, load_results
from experiments.run_identity import check_identity
from plots.report import build_report
from plots.report import main as report_main

SYNTHETIC = {"synthetic": "tiny", "layers": "auto", "seed": 0, "routing_skew": 0.0}
CLUSTER_ENV = ("HMOE_SHARD", "SUBMITIT_EXECUTOR", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch):
    for key in (*CLUSTER_ENV, "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        monkeypatch.delenv(key, raising=False)


def _row(pid: str, stamp: str, run_id: str, tps: float, system: str = "engine", **kw) -> dict:
    row = {
        "run": "full",
        "run_id": run_id,
        "point_id": pid,
        "experiment": "prefill",
        "stage": "prefill",
        "model": "tiny_qwen2_moe",
        "paper_model": "qw2",
        "synthetic": True,
        "system": system,
        "precision": "bf16",
        "prompt_tokens": 128,
        "profile": "cpu",
        "trial": 0,
        "status": "ok",
        "error": "",
        "seconds": 128 / tps,
        "tokens_per_s": tps,
        "timestamp": stamp,
    }
    row.update(kw)
    return row


def write_job(
    results_dir: Path,
    points: dict[str, list[dict]],
    *,
    run_id: str = "r1",
    profile: str = "cpu",
    source: dict | None = None,
    job: str = "prefill/tiny_qwen2_moe/engine",
) -> None:
    """What one job of the runner does, in the current environment: check the directory's
    identity, record the job, append each point's rows, compact, record the end."""
    store = ResultsStore(results_dir)
    identity = check_identity(
        read_provenance(results_dir).get("identity"),
        results_dir,
        profile,
        "tiny_qwen2_moe",
        source or SYNTHETIC,
    )
    record_job_start(
        results_dir,
        run="full",
        run_id=run_id,
        mode="full",
        profile=profile,
        job=job,
        config={},
        identity=identity,
    )
    for rows in points.values():
        store.append_point(rows)
    store.compact()
    record_job_end(results_dir, job, run_id)


def test_cluster_jobs_write_shards_and_the_directory_reads_as_one_table(tmp_path, monkeypatch):
    run = tmp_path / "full"
    # a Slurm array task (through the submitit launcher) writes <host>-<array job>_<task>
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    first = ResultsStore(run)
    assert first.path == run / "shards" / f"{shards.host_name()}-77_0" / "results.csv"
    write_job(run, {"p1": [_row("p1", "2025-01-01T00:00:01", "r1", 100.0)]})
    # another job, on another host, later: p1 measured again (rerun=true) and p2 added
    monkeypatch.setenv("HMOE_SHARD", "gpu-node-2")
    write_job(
        run,
        {
            "p1": [
                _row("p1", "2025-01-02T00:00:00", "r2", t, trial=i) for i, t in enumerate((90, 91))
            ],
            "p2": [_row("p2", "2025-01-02T00:00:01", "r2", 50.0, system="fiddler")],
        },
        run_id="r2",
        job="prefill/tiny_qwen2_moe/fiddler",
    )
    assert not (run / "results.csv").exists()  # no job wrote the directory's own table
    assert sorted(p.name for p in (run / "shards").iterdir()) == sorted(
        [f"{shards.host_name()}-77_0", "gpu-node-2"]
    )
    df = load_results(run)
    # p1's latest write (the other shard) supersedes its first one, as in one table
    assert sorted(df.loc[df["point_id"] == "p1", "tokens_per_s"]) == [90.0, 91.0]
    assert set(df.loc[df["point_id"] == "p1", "run_id"]) == {"r2"}
    assert len(df) == 3
    # a rerun anywhere skips what any shard measured
    monkeypatch.setenv("HMOE_SHARD", "third-host")
    assert ResultsStore(run).completed_points() == {"p1", "p2"}
    assert not (run / "shards" / "third-host").exists()  # nothing written, no empty shard
    prov = read_provenance(run)
    assert set(prov["runs"]) == {"r1", "r2"}
    assert prov["runs"]["r2"]["jobs"] == ["prefill/tiny_qwen2_moe/fiddler"]
    assert prov["identity"] == {"profile": "cpu", "models": {"tiny_qwen2_moe": SYNTHETIC}}
    assert len(prov["shards"]) == 2


def test_a_shard_in_the_middle_of_an_append_is_read_without_its_torn_line(tmp_path, monkeypatch):
    run = tmp_path / "full"
    monkeypatch.setenv("HMOE_SHARD", "a")
    write_job(run, {"p1": [_row("p1", "2025-01-01T00:00:01", "r1", 100.0)]})
    with open(run / "shards" / "a" / "results.csv", "a") as fh:
        fh.write("full,r1,p9,prefill,prefill,tiny_qwen2_moe,qw2,x,")  # no newline yet
    assert list(load_results(run)["point_id"]) == ["p1"]


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, None),
        ({"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "4711"}, "HOST-4711"),
        ({"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "12"}, "HOST-12"),
        (
            {"SUBMITIT_EXECUTOR": "slurm", "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "3"},
            "HOST-9_3",
        ),
        ({"HMOE_SHARD": "auto", "SLURM_JOB_ID": "5"}, "HOST-5"),
        ({"HMOE_SHARD": "node7.run2"}, "node7.run2"),
        ({"HMOE_SHARD": "off", "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "5"}, None),
    ],
)
def test_which_shard_a_job_writes(env, name):
    expected = name.replace("HOST", shards.host_name()) if name else None
    assert shards.job_shard_name(env) == expected


def test_a_bad_shard_name_is_refused():
    with pytest.raises(HmoeError, match="not a usable shard name"):
        shards.job_shard_name({"HMOE_SHARD": "../elsewhere"})


def _host_dir(path: Path, pid_tps: dict[str, float], profile: str = "cpu", **kw) -> Path:
    """A results directory as one host writes it without a launcher."""
    points = {
        pid: [_row(pid, "2025-01-01T00:00:0" + pid[-1], f"run-{path.name}", t, profile=profile)]
        for pid, t in pid_tps.items()
    }
    write_job(path, points, run_id=f"run-{path.name}", profile=profile, **kw)
    return path


def test_directories_from_several_hosts_read_report_and_compare_as_one_table(tmp_path, capsys):
    back = tmp_path / "brought-back"
    a = _host_dir(back / "full@a", {"p1": 100.0})
    b = _host_dir(back / "full@b", {"p2": 50.0})
    shutil.copytree(a, tmp_path / "copy-of-a")  # the same shard reached twice counts once
    df = load_result_set([back, tmp_path / "copy-of-a"])
    assert sorted(df["point_id"]) == ["p1", "p2"]
    assert sorted(load_result_set([a, b])["point_id"]) == ["p1", "p2"]

    report = build_report(back)  # a parent folder: the report goes there
    text = report.read_text()
    assert report == back / "report.md"
    assert "Merged from 2 shards" in text
    assert "`run-full@a`" in text and "`run-full@b`" in text
    assert report_main([str(a), str(b)]) == 2  # several directories: --out is needed
    assert "--out" in capsys.readouterr().err
    assert report_main([str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()

    assert compare_main([f"{a},{b}", str(back)]) == 0
    assert "PASS" in capsys.readouterr().out


def test_shards_of_different_configurations_are_refused(tmp_path, capsys):
    back = tmp_path / "back"
    a = _host_dir(back / "a", {"p1": 100.0})
    b = _host_dir(back / "b", {"p2": 50.0}, profile="gpu")
    with pytest.raises(shards.MixedShardsError, match="profile=cpu.*profile=gpu"):
        load_result_set([back])
    assert report_main([str(back)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "cannot be read as one table" in err and "\n" not in err
    assert compare_main([str(a), f"{a},{b}"]) == 2
    assert "one configuration" in capsys.readouterr().err
    assert not (back / "report.md").exists()

    # the same model from another checkpoint
    c = _host_dir(tmp_path / "c", {"p3": 10.0}, source={"checkpoint": "/m/q", "fingerprint": "f1"})
    with pytest.raises(shards.MixedShardsError, match="model tiny_qwen2_moe comes from"):
        load_result_set([a, c])

    # shards without provenance: their rows' profile decides
    for shard in (a, b):
        (shard / "provenance.json").unlink()
    with pytest.raises(shards.MixedShardsError, match="profile"):
        load_result_set([a, b])


def test_a_job_that_would_mix_is_refused_across_shards(tmp_path, monkeypatch):
    run = tmp_path / "full"
    monkeypatch.setenv("HMOE_SHARD", "node1")
    write_job(run, {"p1": [_row("p1", "2025-01-01T00:00:01", "r1", 100.0)]})
    monkeypatch.setenv("HMOE_SHARD", "node2")
    with pytest.raises(HmoeError, match="profile=cpu; this job uses profile=gpu"):
        write_job(run, {"p2": [_row("p2", "2025-01-01T00:00:02", "r2", 1.0)]}, profile="gpu")
    assert not (run / "shards" / "node2").exists()  # refused before anything was written

    # shards that already disagree (written by hand) stop any further job in the directory
    bad = run / "shards" / "node3"
    bad.mkdir()
    (bad / "provenance.json").write_text(json.dumps({"identity": {"profile": "paper"}}))
    with pytest.raises(shards.MixedShardsError):
        read_provenance(run)

"""run_all fast end to end on the tiny models, and resuming after a killed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

# Small sweep so the whole pipeline runs in about a minute on 2 cores.
SMALL = [
    "profile=cpu",
    "profile.prefill_lengths=[16,64]",
    "profile.decode_tokens=4",
    "profile.trials=2",
    "profile.breakdown_prefill_tokens=64",
    "profile.accuracy_limit=2",
    "experiment.max_new_tokens=24",
]


def _data_dir() -> str | None:
    """The accuracy datasets (HMOE_DATA_DIR, else ../shared/datasets beside the repo)."""
    for candidate in (os.environ.get("HMOE_DATA_DIR"), REPO.parent / "shared" / "datasets"):
        if candidate and (Path(candidate) / "mbpp" / "test.jsonl").is_file():
            return str(candidate)
    return None


@pytest.mark.slow
def test_run_all_fast_writes_results_provenance_figures_and_report(hmoe, tmp_path):
    data_dir = _data_dir()
    env = {"HMOE_DATA_DIR": data_dir} if data_dir else {}
    proc = hmoe("all", "fast", *SMALL, f"results_root={tmp_path}", timeout=1200, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "synthetic tiny models" in out
    run_dir = tmp_path / "fast"
    df = pd.read_csv(run_dir / "results.csv")
    ok = df[df["status"] == "ok"]
    # Fiddler really ran prefill and decode on the tiny Qwen2-MoE stand-in.
    fid = ok[(ok["system"] == "fiddler") & (ok["model"] == "tiny_qwen2_moe")]
    assert set(fid["experiment"]) >= {"prefill", "decode", "breakdown"}
    assert (fid["tokens_per_s"] > 0).all()
    assert len(fid[fid["experiment"] == "prefill"]) == 2 * 2  # 2 lengths x 2 trials
    assert fid["synthetic"].all()
    assert (fid["layers_run"] == fid["layers_total"]).all()
    # What cannot run here is recorded NOT RUN with a reason, never faked.
    not_run = df[df["status"] == "not_run"]
    assert (not_run["error"].str.len() > 0).all()
    acc = df[df["experiment"] == "accuracy"]
    assert set(acc["task"]) == {"mbpp"}
    assert set(zip(acc["immediate_experts"], acc["deferred_experts"], strict=True)) == {
        (8, 0),
        (4, 4),
    }
    if data_dir:  # MBPP on a 2-problem subset, with and without deferral
        assert set(acc["status"]) == {"ok"}, acc[["status", "error"]]
        assert acc["score"].between(0, 1).all()
        assert len(list((run_dir / "generations").glob("*.jsonl"))) == 2
    else:
        assert set(acc["status"]) == {"not_run"}
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["mode"] == "fast" and prov["profile"] == "cpu"
    assert "cpu_flags" in prov["hardware"] and "torch" in prov["packages"]
    assert prov["git"]["commit"]
    figures = {p.name for p in (run_dir / "figures").iterdir()}
    for stem in ("figure11_prefill", "figure12_decode", "figure13_breakdown"):
        assert f"{stem}.png" in figures and f"{stem}.pdf" in figures
    report = (run_dir / "report.md").read_text()
    assert "NOT RUN" in report and "synthetic" in report.lower()
    if data_dir:
        assert "NOT MEANINGFUL" in report  # accuracy of synthetic weights

    # Rerunning the same command measures nothing again: no new ok rows.
    again = hmoe("all", "fast", *SMALL, f"results_root={tmp_path}", timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    df2 = pd.read_csv(run_dir / "results.csv")
    ok2 = df2[df2["status"] == "ok"]
    assert len(ok2) == len(ok)
    assert set(ok2["timestamp"]) == set(ok["timestamp"])


def test_killed_run_resumes_without_duplicate_or_lost_rows(hmoe, tmp_path, model_cache):
    lengths = [64, 128, 256, 512, 1024, 2048]
    args = [
        "run",
        "experiment=prefill",
        "system=fiddler",
        "model=tiny_qwen2_moe",
        "profile=cpu",
        f"experiment.prompt_lengths=[{','.join(map(str, lengths))}]",
        "experiment.trials=3",
        f"results_root={tmp_path}",
        "run=r",
        "progress=false",
    ]
    # Generate the model first so the kill lands inside the measurements.
    assert (
        hmoe(
            *args[:4],
            "profile=cpu",
            "experiment.prompt_lengths=[8]",
            f"results_root={tmp_path}",
            "run=warm",
        ).returncode
        == 0
    )
    results = tmp_path / "r" / "results.csv"
    env = {**os.environ, "HMOE_CACHE_DIR": str(model_cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 1 + 3:  # one point done
            break
        time.sleep(0.01)
    assert proc.poll() is None, "run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = pd.read_csv(results)
    assert 0 < partial["point_id"].nunique() < len(lengths)

    resumed = hmoe(*args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "already measured" in resumed.stdout
    df = pd.read_csv(results)
    assert sorted(df["prompt_tokens"].unique()) == lengths
    assert not df.duplicated(["point_id", "trial"]).any()
    assert (df.groupby("point_id").size() == 3).all()
    # Points measured before the kill were kept, not measured again.
    before = partial.groupby("point_id")["timestamp"].first()
    after = df.groupby("point_id")["timestamp"].first()
    assert (after[before.index] == before).all()

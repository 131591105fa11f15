"""Sweeps through Hydra's submitit launcher (conf/hydra/launcher/): the Slurm launcher's
submission parameters come from the profile, the local launcher runs a sweep's jobs as
separate processes that write results shards, and the merged results resume and report as
one table. No cluster is needed: the Slurm test puts a stand-in sbatch/srun on PATH that runs
the submitted script here, so everything up to Slurm itself is the real path."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher")

from experiments import shards  # noqa: E402
from experiments.config_schema import gres  # noqa: E402
from experiments.errors import HmoeError  # noqa: E402
from experiments.provenance import read_provenance  # noqa: E402
from experiments.results_store import load_results  # noqa: E402
from experiments.run_all import (  # noqa: E402
    choose_profile,
    launched_failures,
    launcher_parameters,
    validate_overrides,
)

REPO = Path(__file__).resolve().parents[1]
# one tiny point per job: the tests check the path, not the numbers
TINY = [
    "profile=cpu",
    "profile.trials=1",
    "profile.warmup=0",
    "system.precisions=[bf16]",
    "progress=false",
]
CLUSTER_ENV = ("HMOE_SHARD", "SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID")


def _env(model_cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    return {**env, "HMOE_CACHE_DIR": str(model_cache), **extra}


def _hmoe(args: list[str], env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_slurm_launcher_takes_its_resources_from_the_profile():
    params = launcher_parameters(
        [
            "hydra/launcher=slurm",
            "profile=paper",
            "profile.resources.gpu_type=h100",
            "hydra.launcher.partition=gpu",
            "experiment=decode",
        ]
    )
    assert params["_target_"].endswith("SlurmLauncher")
    assert params["timeout_min"] == 2880 and params["cpus_per_task"] == 72
    assert params["mem_gb"] == 960 and params["gres"] == "gpu:h100:1"
    assert params["partition"] == "gpu" and params["name"] == "hmoe-decode"
    assert params["additional_parameters"] == {"exclusive": True}
    assert params["max_num_timeout"] == 3  # a timed-out job is requeued and resumes
    cpu = launcher_parameters(["hydra/launcher=slurm", "profile=cpu"])
    assert cpu["gres"] is None and cpu["timeout_min"] == 240
    local = launcher_parameters(["hydra/launcher=local", "profile=gpu"])
    assert local["_target_"].endswith("LocalLauncher")
    assert local["gpus_per_node"] == 1 and local["timeout_min"] == 1440
    assert (gres(2, None), gres(0, "a100"), gres(1, "a100")) == ("gpu:2", None, "gpu:a100:1")


def test_launcher_mistakes_fail_before_anything_is_submitted(tmp_path):
    with pytest.raises(HmoeError, match="say which profile"):
        choose_profile(["hydra/launcher=slurm", "experiment=prefill"])
    assert any(o.startswith("profile=") for o in choose_profile(["hydra/launcher=local"])[0])
    with pytest.raises(HmoeError, match="available: .*local.*slurm"):
        launcher_parameters(["hydra/launcher=slurmm"])
    with pytest.raises(HmoeError, match="bogus"):
        launcher_parameters(["hydra/launcher=slurm", "hydra.launcher.bogus=1"])
    # a job that would mix configurations in its results directory is refused here, not
    # in a log on a cluster node
    run = tmp_path / "fast"
    run.mkdir()
    (run / "provenance.json").write_text(json.dumps({"identity": {"profile": "gpu"}}))
    sweep = ["experiment=prefill", "model=tiny_qwen2_moe", f"results_root={tmp_path}"]
    with pytest.raises(HmoeError, match="profile=gpu; this job uses profile=cpu"):
        validate_overrides([*sweep, "profile=cpu", "hydra/launcher=local"])
    validate_overrides([*sweep, "profile=cpu"])  # without a launcher the runner checks later


@pytest.mark.slow
def test_local_launcher_sweep_writes_shards_that_resume_and_read_as_one_table(
    model_cache, tmp_path
):
    sweep = [
        "experiment=prefill",
        "model=tiny_qwen2_moe",
        "profile.prefill_lengths=[8,16]",
        f"results_root={tmp_path}",
        *TINY,
    ]
    run = tmp_path / "fast"
    # another host measured one of the points already (its own shard)
    first = _hmoe(
        ["run", *sweep, "system=fiddler", "profile.prefill_lengths=[8]"],
        _env(model_cache, HMOE_SHARD="other-host"),
    )
    assert first.returncode == 0, first.stdout + first.stderr
    # two jobs (fiddler, engine), each its own process through submitit's local executor
    proc = _hmoe(
        ["run", "-m", *sweep, "system=fiddler,engine", "hydra/launcher=local"], _env(model_cache)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (run / "results.csv").exists()
    names = sorted(p.name for p in (run / "shards").iterdir())
    assert len(names) == 3 and "other-host" in names
    assert all(n.startswith(f"{shards.host_name()}-") for n in names if n != "other-host")
    df = load_results(run)
    ok = df[df["status"] == "ok"]
    assert sorted(zip(ok["system"], ok["prompt_tokens"], strict=True)) == [
        ("engine", 8), ("engine", 16), ("fiddler", 8), ("fiddler", 16)
    ]  # fmt: skip
    # the point measured on the other host was skipped, not measured twice
    first_id = load_results(run / "shards" / "other-host")["run_id"].iloc[0]
    fid8 = ok[(ok["system"] == "fiddler") & (ok["prompt_tokens"] == 8)]
    assert list(fid8["run_id"]) == [first_id]
    (sweep_id,) = set(ok["run_id"]) - {first_id}
    prov = read_provenance(run)
    assert sorted(prov["runs"][sweep_id]["jobs"]) == [
        "prefill/tiny_qwen2_moe/engine",
        "prefill/tiny_qwen2_moe/fiddler",
    ]
    # jobs log to the sweep's .submitit folder, one per job
    logs = list((run / "hydra").glob("prefill-*/.submitit/*/*_log.out"))
    assert len(logs) == 2 and any("1 already measured" in p.read_text() for p in logs)
    # what hmoe run's exit status reads back (the jobs' processes report nothing to it)
    assert launched_failures([f"results_root={tmp_path}", f"run_id={sweep_id}"]) == 0


FAKE_SBATCH = """#!{python}
# Stand-in for Slurm's sbatch: keep the script, run each (array) task here in the background
# with the environment Slurm gives it, print what sbatch prints.
import os, pathlib, re, socket, subprocess, sys
script = pathlib.Path(sys.argv[-1])
log = pathlib.Path(os.environ["FAKE_SLURM_DIR"])
n = len(list(log.glob("sbatch-*.sh")))
job = 4242 + 100 * n
text = script.read_text()
(log / f"sbatch-{{n}}.sh").write_text(text)
array = re.search(r"^#SBATCH --array=0-(\\d+)", text, re.M)
for task in range(int(array.group(1)) + 1) if array else [None]:
    env = dict(os.environ, SLURM_JOB_ID=str(job if task is None else job + 1 + task),
               SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
               SLURM_JOB_NUM_NODES="1", SLURM_JOB_NODELIST=socket.gethostname())
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(task))
    subprocess.Popen(["bash", str(script)], env=env, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"Submitted batch job {{job}}")
"""
FAKE_SRUN = """#!/usr/bin/env bash
# Stand-in for srun inside the job: drop its options, run the command, log like Slurm.
out=/dev/null
while [ $# -gt 0 ]; do
  case "$1" in
    --unbuffered) shift ;;
    --output) out="$2"; shift 2 ;;
    --error) shift 2 ;;
    *) break ;;
  esac
done
out="${out//%A/${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}"; out="${out//%a/${SLURM_ARRAY_TASK_ID:-0}}"
out="${out//%j/$SLURM_JOB_ID}"; out="${out//%t/0}"
mkdir -p "$(dirname "$out")"
exec "$@" >>"$out" 2>&1
"""


def _fake_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    scripts = {
        "sbatch": FAKE_SBATCH.format(python=sys.executable),
        "srun": FAKE_SRUN,
        "sacct": "#!/bin/sh\nexit 0\n",  # no accounting: submitit waits for the results
        "scancel": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)


@pytest.mark.slow
def test_run_all_through_the_slurm_launcher_submits_resources_and_merges_shards(
    model_cache, tmp_path
):
    _fake_slurm(tmp_path / "bin")
    (tmp_path / "slurm").mkdir()
    env = _env(
        model_cache,
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        FAKE_SLURM_DIR=str(tmp_path / "slurm"),
    )
    proc = _hmoe(
        [
            "all",
            "fast",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=debug",
            "profile.resources.gpus=1",
            "profile.resources.gpu_type=h100",
            "mode.experiments=[prefill]",
            "model=tiny_qwen2_moe,tiny_deepseek_v2",
            "system=engine",
            # the engine's KV cache holds 12 tokens: the 16-token point fails, 8 is measured
            "system.options.max_seq=12",
            "profile.prefill_lengths=[8,16]",
            f"results_root={tmp_path / 'results'}",
            *TINY,
        ],
        env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # a failed point, read back from the jobs' shards
    assert "prefill: 4 point(s) measured by this run: 2 ok, 0 not run, 2 failed" in out
    # one array job, two tasks, resources from the profile and the command line
    (script,) = (tmp_path / "slurm").glob("sbatch-*.sh")
    text = script.read_text()
    for line in (
        "#SBATCH --array=0-1%2",
        "#SBATCH --gres=gpu:h100:1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        "#SBATCH --time=240",
        "#SBATCH --partition=debug",
        "#SBATCH --exclusive",
        "#SBATCH --job-name=hmoe-prefill",
    ):
        assert line in text.splitlines(), (line, text)
    run = tmp_path / "results" / "fast"
    names = sorted(p.name for p in (run / "shards").iterdir())
    assert names == [f"{shards.host_name()}-4242_0", f"{shards.host_name()}-4242_1"]
    df = load_results(run)
    ok = df[df["status"] == "ok"]
    assert sorted(ok["model"]) == ["tiny_deepseek_v2", "tiny_qwen2_moe"]
    assert set(ok["prompt_tokens"]) == {8}
    failed = df[df["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("max_seq 12").all()
    text = (run / "report.md").read_text()  # run_all's report step read the shards
    assert "Merged from 2 shards" in text
    (run_id,) = set(df["run_id"])
    assert launched_failures([f"results_root={tmp_path / 'results'}", f"run_id={run_id}"]) == 2

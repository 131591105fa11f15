"""Results a user can trust: exit status, one configuration per results directory, a
re-measured point replaces its rows, every row carries its run id, noisy points flagged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import experiments.cli as cli

TINY = (
    "experiment=prefill",
    "model=tiny_qwen2_moe",
    "system=engine",
    "experiment.prompt_lengths=[16]",
    "experiment.trials=2",
    "experiment.warmup=0",
    "system.options.threads=1",
    "model.precisions=[bf16]",
)


def _rows(root, run="r") -> pd.DataFrame:
    return pd.read_csv(root / run / "results.csv")


def test_exit_0_when_all_points_ok_and_1_when_one_failed(hmoe, tmp_path):
    ok = hmoe("run", *TINY, f"results_root={tmp_path}", "run=r")
    assert ok.returncode == 0, ok.stderr
    assert "tokens/s (n=2, CV" in ok.stdout
    failed = hmoe("run", *TINY, "system.options.max_seq=8", f"results_root={tmp_path}", "run=f")
    assert failed.returncode == 1
    assert "failed" in failed.stdout and "max_seq" in failed.stdout


def test_interrupt_exits_130_and_bad_input_2(monkeypatch, capsys):
    class Commands(dict):
        def load(self, name):
            return self[name]

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "COMMANDS", Commands(run=interrupted))
    assert cli.main(["run"]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2


def test_rows_carry_the_run_id_and_a_remeasured_point_replaces_its_rows(hmoe, tmp_path):
    first = hmoe("run", *TINY, f"results_root={tmp_path}", "run=r", "run_id=first")
    assert first.returncode == 0, first.stderr
    assert set(_rows(tmp_path)["run_id"]) == {"first"}
    again = hmoe("run", *TINY, f"results_root={tmp_path}", "run=r", "run_id=second", "rerun=true")
    assert again.returncode == 0, again.stderr
    rows = _rows(tmp_path)
    assert set(rows["run_id"]) == {"second"} and len(rows) == 2  # replaced, not joined
    prov = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert {"first", "second"} <= set(prov["runs"]) and prov["identity"]["profile"] == "cpu"
    report = hmoe("report", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r" / "report.md").read_text()
    assert "`second`: 2 rows" in text and "`first`" not in text


def test_a_run_that_would_mix_configurations_is_refused(hmoe, tmp_path):
    assert hmoe("run", *TINY, f"results_root={tmp_path}", "run=r").returncode == 0
    before = _rows(tmp_path)
    other_seed = hmoe(
        "run", *TINY, "model.synthetic.seed=7", "rerun=true", f"results_root={tmp_path}", "run=r"
    )
    assert other_seed.returncode == 2
    assert "seed=0" in other_seed.stderr and "seed=7" in other_seed.stderr
    assert "run=NAME" in other_seed.stderr and "Traceback" not in other_seed.stderr
    other_profile = hmoe(
        "run", *TINY, "profile=gpu", "system.options.device=cpu", "rerun=true",
        f"results_root={tmp_path}", "run=r",
    )  # fmt: skip
    assert other_profile.returncode == 2
    assert "profile=cpu" in other_profile.stderr and "profile=gpu" in other_profile.stderr
    pd.testing.assert_frame_equal(_rows(tmp_path), before)  # nothing was written
    elsewhere = hmoe(
        "run", *TINY, "model.synthetic.seed=7", f"results_root={tmp_path}", "run=seed7"
    )
    assert elsewhere.returncode == 0, elsewhere.stderr


@pytest.mark.parametrize("cap", [2, 5])
def test_adaptive_repetition_adds_trials_only_while_noisy(cap, monkeypatch, tmp_path):
    """Trials beyond ``trials`` are added (up to max_trials) only while the CV is high."""
    from experiments import stages
    from experiments.points import Point
    from experiments.system_api import PrefillTiming

    times = iter([1.0, 3.0, 1.0, 1.05, 1.0, 1.0, 1.0, 1.0])

    class System:
        def prefill(self, ids):
            return PrefillTiming(tokens=len(ids), seconds=next(times))

    class Prompts:
        def window(self, length, trial, purpose=""):
            return [0] * length

    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"experiment": {"trials": 2, "warmup": 0, "max_trials": cap, "cv_threshold": 0.1}}
    )
    ctx = stages.MeasureContext(cfg, Prompts(), tmp_path, "pid")
    rows = stages.measure(System(), Point("prefill", "prefill", "bf16", prompt_tokens=4), ctx)
    # 1 and 3 s are noisy: trials are added until the CV of tokens/s drops below 10 %
    assert len(rows) == (2 if cap == 2 else 5)

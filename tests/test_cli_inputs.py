"""Bad inputs give one clear message and no traceback; the CLI's exit codes."""

from __future__ import annotations

import pandas as pd


def _assert_clean(proc, needle: str) -> None:
    out = proc.stdout + proc.stderr
    assert needle in out, out
    assert "Traceback" not in out, out


def test_unknown_model_key(hmoe, tmp_path):
    proc = hmoe("run", "model=qw9", f"results_root={tmp_path}")
    assert proc.returncode == 2
    _assert_clean(proc, "model/qw9")


def test_key_typo(hmoe, tmp_path):
    proc = hmoe("run", "experiment.prompt_lenghts=[32]", f"results_root={tmp_path}")
    assert proc.returncode == 2
    _assert_clean(proc, "prompt_lenghts")


def test_prompt_length_not_a_positive_integer(hmoe, tmp_path):
    for bad in ("[0]", "[-32]", "[abc]", "[1.5]"):
        proc = hmoe("run", f"experiment.prompt_lengths={bad}", f"results_root={tmp_path}")
        assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr


def test_unwritable_results_directory(hmoe, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = hmoe("run", f"results_root={blocker}/sub")
    assert proc.returncode == 2
    _assert_clean(proc, "not writable")


def test_checkpoint_path_that_does_not_exist_is_recorded_and_reported(hmoe, tmp_path):
    missing = tmp_path / "no-such-model"
    proc = hmoe(
        "run",
        "model=qw2",
        "system=fiddler",
        "experiment.prompt_lengths=[16]",
        f"results_root={tmp_path}",
        "run=r",
        env={"QW2_SAFETENSORS": str(missing)},
    )
    assert proc.returncode == 1
    _assert_clean(proc, "checkpoint path does not exist")
    df = pd.read_csv(tmp_path / "r" / "results.csv")
    assert set(df["status"]) == {"failed"}
    assert df["error"].str.contains("QW2_SAFETENSORS").all()


def test_config_json_that_is_not_json(hmoe, tmp_path):
    model = tmp_path / "broken"
    model.mkdir()
    (model / "config.json").write_text("{ this is not json")
    proc = hmoe(
        "run",
        "model=qw2",
        f"model.path={model}",
        "experiment.prompt_lengths=[16]",
        f"results_root={tmp_path}",
        "run=r",
    )
    assert proc.returncode == 1
    _assert_clean(proc, "is not valid JSON")


def test_bad_subcommand_and_report_usage(hmoe, tmp_path):
    assert hmoe("frobnicate").returncode == 2
    proc = hmoe("report", str(tmp_path / "nothing-here"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr

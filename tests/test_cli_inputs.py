"""Bad inputs give one clear message and no traceback; the CLI's exit codes."""

from __future__ import annotations

import pytest


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


def test_checkpoint_path_that_does_not_exist_fails_before_any_point(hmoe, tmp_path):
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
    assert proc.returncode == 2
    _assert_clean(proc, "checkpoint path does not exist")
    assert "QW2_SAFETENSORS" in proc.stderr
    assert not (tmp_path / "r" / "results.csv").exists()


def _bad_checkpoint(tmp_path, config: str, weights: bool = True):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(config)
    if weights:
        (model / "model.safetensors").write_bytes(b"")
    return model


@pytest.mark.parametrize(
    "config,weights,needle",
    [
        ("{ this is not json", True, "is not valid JSON"),
        ('{"model_type": "deepseek_v3"}', True, "holds a deepseek_v3 model"),
        ('{"model_type": "llama"}', True, "unsupported architecture"),
        ('{"model_type": "qwen2_moe"}', False, "no *.safetensors"),
    ],
)
def test_bad_checkpoint_directory_fails_before_any_point(hmoe, tmp_path, config, weights, needle):
    model = _bad_checkpoint(tmp_path, config, weights)
    proc = hmoe(
        "run",
        "model=qw2",
        f"model.path={model}",
        "experiment.prompt_lengths=[16]",
        f"results_root={tmp_path}",
        "run=r",
    )
    assert proc.returncode == 2
    _assert_clean(proc, needle)
    assert not (tmp_path / "r" / "results.csv").exists()


def test_bad_subcommand_and_report_usage(hmoe, tmp_path):
    assert hmoe("frobnicate").returncode == 2
    proc = hmoe("report", str(tmp_path / "nothing-here"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr


def test_misspelt_breakdown_variant_fails_at_config_time(hmoe, tmp_path):
    for bad, needle in (("+x", "+x"), ("+v+m", "exactly one kernel"), ("+d+m", "as '+m+d'")):
        proc = hmoe(
            "run",
            "experiment=breakdown",
            f"experiment.prefill_variants=[base,'{bad}']",
            f"results_root={tmp_path}",
        )
        assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)
        _assert_clean(proc, needle)
    assert not (tmp_path / "fast" / "results.csv").exists()  # nothing was measured


def test_unknown_system_option_fails_at_config_time(hmoe, tmp_path):
    proc = hmoe(
        "run", "system=engine", "+system.options.cpu_kernal=amx", f"results_root={tmp_path}"
    )
    assert proc.returncode == 2
    _assert_clean(proc, "cpu_kernal")
    proc = hmoe(
        "run", "system=engine", "system.options.cpu_kernel=avx9", f"results_root={tmp_path}"
    )
    assert proc.returncode == 2
    _assert_clean(proc, "avx9")

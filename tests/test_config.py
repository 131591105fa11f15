"""The Hydra config tree: every combination run_all.sh uses composes; typos fail clearly."""

from __future__ import annotations

import itertools

import pytest

from experiments import accuracy, breakdown, decode, prefill
from experiments.errors import HmoeError
from experiments.points import parse_expert_config, point_id
from experiments.run_all import choose_profile, compose_config, validate_overrides

MODELS = ["qw2", "ds2", "ds3", "tiny_qwen2_moe", "tiny_deepseek_v2", "tiny_deepseek_v3"]
SYSTEMS = ["engine", "fiddler", "llamacpp"]
EXPERIMENTS = ["prefill", "decode", "breakdown", "accuracy"]
PLANNERS = {"prefill": prefill, "decode": decode, "breakdown": breakdown, "accuracy": accuracy}


@pytest.mark.parametrize(
    "mode,profile", list(itertools.product(["fast", "full"], ["cpu", "gpu", "paper"]))
)
def test_every_run_all_combination_composes(mode, profile):
    base = compose_config([f"mode={mode}", f"profile={profile}"])
    models = [base.profile.stand_ins.get(m, m) for m in base.mode.models]
    for exp in base.mode.experiments:
        for model, system in itertools.product(models, base.mode.systems[exp]):
            cfg = compose_config(
                [
                    f"mode={mode}",
                    f"profile={profile}",
                    f"experiment={exp}",
                    f"model={model}",
                    f"system={system}",
                ]
            )
            points = PLANNERS[exp].plan(cfg)
            if exp in ("prefill", "decode"):
                assert points, (exp, model, system)
            for p in points:
                assert p.precision in cfg.system.precisions


def test_all_groups_compose_with_all_options():
    for exp, model, system in itertools.product(EXPERIMENTS, MODELS, SYSTEMS):
        cfg = compose_config([f"experiment={exp}", f"model={model}", f"system={system}"])
        assert cfg.model.key == model


def test_checkpoint_paths_come_from_the_artifacts_env_names(monkeypatch, tmp_path):
    monkeypatch.setenv("QW2_SAFETENSORS", str(tmp_path / "qw"))
    monkeypatch.setenv("DS3_GGUF_Q4_0", str(tmp_path / "ds3.gguf"))
    assert compose_config(["model=qw2"], check=False).model.path == str(tmp_path / "qw")
    assert compose_config(["model=ds3"], check=False).model.gguf.int4 == str(tmp_path / "ds3.gguf")
    monkeypatch.delenv("QW2_SAFETENSORS")
    assert compose_config(["model=qw2"]).model.path is None


@pytest.mark.parametrize(
    "override,needle",
    [
        (["experiment.promt_lengths=[32]"], "promt_lengths"),
        (["model=qw3"], "model/qw3"),
        (["sytem=engine"], "sytem"),
        (["profile.trails=2"], "trails"),
        (["experiment.prompt_lengths=[32,abc]"], "abc"),
    ],
)
def test_typos_are_one_clear_error_naming_the_key(override, needle):
    with pytest.raises(HmoeError) as info:
        compose_config(override)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_sweep_values_are_each_validated():
    validate_overrides(["model=qw2,tiny_qwen2_moe", "system=engine,fiddler"])
    with pytest.raises(HmoeError, match="model/nope"):
        validate_overrides(["model=qw2,nope"])


@pytest.mark.parametrize("bad", [[0], [-8], [32, 0]])
def test_non_positive_prompt_length_is_refused(bad):
    cfg = compose_config([f"experiment.prompt_lengths=[{','.join(map(str, bad))}]"])
    with pytest.raises(HmoeError, match="positive integer"):
        prefill.plan(cfg)


def test_expert_config_parsing():
    assert parse_expert_config("int8:4+4", 8) == ("int8", 4, 4)
    for bad in ["int8:4+3", "int8-4+4", "bf16:0+8", "bf16:a+b"]:
        with pytest.raises(HmoeError):
            parse_expert_config(bad, 8)


def test_profile_detection_keeps_overrides_contiguous():
    args, line = choose_profile(["-m", "experiment=prefill", "model=qw2"])
    assert args[0] == "-m" and args[1].startswith("profile=")
    assert "auto" in line
    args, line = choose_profile(["profile=gpu"])
    assert args == ["profile=gpu"] and "command line" in line


def test_point_id_changes_with_what_shapes_the_number():
    cfg = compose_config(["experiment=prefill"])
    p1, p2 = prefill.plan(cfg)[:2]
    ident = {"model": {"key": "m"}, "trials": 3}
    assert point_id(p1, ident) == point_id(p1, dict(ident))
    assert point_id(p1, ident) != point_id(p2, ident)
    assert point_id(p1, ident) != point_id(p1, {**ident, "trials": 5})


def test_baselines_plan_no_deferral_points_but_engine_does():
    fid = decode.plan(compose_config(["experiment=decode", "system=fiddler", "model=qw2"]))
    eng = decode.plan(compose_config(["experiment=decode", "system=engine", "model=qw2"]))
    assert {p.deferred_experts for p in fid} == {0}
    assert {(p.precision, p.immediate_experts, p.deferred_experts) for p in eng} == {
        ("bf16", 8, 0),
        ("bf16", 6, 2),
        ("int8", 8, 0),
        ("int8", 4, 4),
    }


def test_breakdown_splits_variants_by_system():
    fid = breakdown.plan(compose_config(["experiment=breakdown", "system=fiddler"]))
    eng = breakdown.plan(compose_config(["experiment=breakdown", "system=engine"]))
    assert {(p.stage, p.variant) for p in fid} == {("prefill", "base"), ("decode", "base")}
    assert len(eng) == 10
    assert all(p.system_options for p in eng)


def test_engine_prefill_measures_each_placement_as_its_own_series():
    cfg = compose_config(["experiment=prefill", "system=engine", "profile=gpu", "model=qw2"])
    points = prefill.plan(cfg)
    series = {(p.variant, tuple(sorted(p.system_options.items()))) for p in points}
    assert series == {
        ("", ()),  # the system's own setting (cpu): the series the claims compare
        ("gpu_stream", (("prefill_placement", "gpu_stream"),)),
        ("split", (("prefill_placement", "split"),)),
        ("auto", (("prefill_placement", "auto"),)),
    }
    lengths = {p.prompt_tokens for p in points}
    assert len(points) == 4 * len(lengths) * len({p.precision for p in points})
    own = compose_config(
        ["experiment=prefill", "system=engine", "system.options.prefill_placement=auto"]
    )
    assert {p.variant for p in prefill.plan(own)} == {"", "cpu"}  # own (auto) + the profile's
    for system in ("fiddler", "llamacpp"):  # no placement option: one unlabelled series
        other = compose_config(["experiment=prefill", f"system={system}", "profile=gpu"])
        assert {p.variant for p in prefill.plan(other)} == {""}


def test_unknown_prefill_placement_is_one_clear_error():
    with pytest.raises(HmoeError, match="unknown placement.*'gpu'"):
        compose_config(["experiment=prefill", "system=engine", "experiment.placements=[cpu,gpu]"])

"""System ``llamacpp_best`` (llama.cpp at its best settings beside the paper's flags) and the
cross-check of the harness's llama.cpp prefill against llama-bench.

Option, registry and llama-bench-flag tests run everywhere (a stand-in llama-bench); the
cross-check's plumbing runs where llama-cpp-python is installed (CPU); the timing
cross-check runs on a GPU host with a GPU build of llama-cpp-python and a llama-bench
executable (``HMOE_LLAMA_BENCH`` or ``llama-bench`` on PATH; ``HMOE_CROSSCHECK_GGUF`` picks
the model, e.g. the 4-layer Qwen2-57B slice's F16 export; default: the tiny model).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from test_llamacpp import _fake_bench, _hide_llama_cpp

from baselines.llamacpp.best import BEST_SETTINGS, LlamaCppBestSystem, best_options
from baselines.llamacpp.crosscheck import crosscheck_prefill, gguf_facts
from baselines.llamacpp.gguf_export import export_gguf_cached, llamacpp_importable
from baselines.llamacpp.placement import plan_placement
from experiments.schema import SYSTEM_LABELS
from experiments.system_api import SYSTEMS, ModelSpec, SystemUnavailable, system_class

REPO = Path(__file__).resolve().parents[1]
needs_llama_cpp = pytest.mark.skipif(
    not llamacpp_importable(), reason="llama-cpp-python is not installed"
)


def test_registered_labelled_and_in_both_modes():
    assert system_class("llamacpp_best") is LlamaCppBestSystem and "llamacpp" in SYSTEMS
    assert SYSTEM_LABELS["llamacpp_best"] != SYSTEM_LABELS["llamacpp"]
    for mode in ("fast", "full"):
        systems = yaml.safe_load((REPO / "conf" / "mode" / f"{mode}.yaml").read_text())["systems"]
        for stage in ("prefill", "decode"):
            assert systems[stage].index("llamacpp") < systems[stage].index("llamacpp_best")


def test_yaml_holds_the_best_settings_and_valid_options():
    conf = yaml.safe_load((REPO / "conf" / "system" / "llamacpp_best.yaml").read_text())
    assert conf["name"] == "llamacpp_best"
    options = {**conf["options"], "device": "cuda"}
    for key, value in BEST_SETTINGS.items():
        assert options[key] == value, key
    LlamaCppBestSystem.check_options(options)
    paper = yaml.safe_load((REPO / "conf" / "system" / "llamacpp.yaml").read_text())["options"]
    assert paper["kv_on_cpu"] is True  # the paper's -nkvo 1 stays with system llamacpp


def test_best_settings_are_defaults_an_explicit_option_overrides():
    assert best_options(None) == BEST_SETTINGS
    assert best_options({"kv_on_cpu": True, "threads": 4})["kv_on_cpu"] is True
    with pytest.raises(ValueError, match="unknown llamacpp option"):
        LlamaCppBestSystem.check_options({"n_ubatchh": 4})


def test_not_run_without_gpu_offload(monkeypatch, tmp_path):
    _hide_llama_cpp(monkeypatch)
    exe = _fake_bench(tmp_path, [1_000_000])
    with pytest.raises(SystemUnavailable, match="best settings on a GPU"):
        LlamaCppBestSystem({"device": "cpu", "bench_binary": str(exe)})


def test_llama_bench_runs_with_the_best_flags_beside_the_papers(monkeypatch, tmp_path):
    """Same GGUF, two configurations: best = -nkvo 0 and one micro-batch per prompt;
    paper = -nkvo 1 and llama-bench's default micro-batch."""
    _hide_llama_cpp(monkeypatch)
    from baselines.llamacpp.system import LlamaCppSystem

    exe = _fake_bench(tmp_path, [400_000_000, 200_000_000, 100_000_000])
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not read by the stand-in llama-bench")
    spec = ModelSpec("m", "qw2", "m", "qwen2_moe", tmp_path, "x", False, 1, 1, {"bf16": gguf})
    for cls, cfg in (
        (LlamaCppBestSystem, {}),
        (LlamaCppSystem, {"kv_on_cpu": True}),
    ):
        system = cls({"device": "cuda", "bench_binary": str(exe), **cfg})
        system.load(spec, "bf16")
        assert system.prefill(list(range(2048))).seconds == pytest.approx(0.4)
        system.decode(list(range(32)), 64)
        facts = system.describe()
        system.close()
        assert facts["system"] == cls.name
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    best_prefill, best_decode, paper_prefill, _ = argv
    assert "-nkvo 0" in best_prefill and "-ub 2048 -b 2048" in best_prefill
    assert "-mmp 0" in best_prefill and "-nopo" not in best_prefill
    assert "-ot exps=CPU" in best_prefill and "-ub" not in best_decode
    assert "-nkvo 1" in paper_prefill and "-ub" not in paper_prefill


# -- the cross-check ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gguf(model_cache: Path) -> Path:
    from engine.synthetic import SyntheticRequest, ensure_synthetic_model

    path = ensure_synthetic_model(SyntheticRequest("qwen2_moe", "tiny"), model_cache, False)
    return export_gguf_cached(Path(path), "f16", model_cache / "gguf", progress=False)


@needs_llama_cpp
def test_crosscheck_times_both_sides_on_the_same_file(tiny_gguf, tmp_path):
    exe = _fake_bench(tmp_path, [4_000_000, 2_000_000])
    check = crosscheck_prefill(
        str(exe), tiny_gguf, plan_placement("cpu", False, threads=2), 64, repetitions=2
    )
    assert len(check.harness_seconds) == 2 and min(check.harness_seconds) > 0
    assert check.bench_seconds == (0.004, 0.002)
    assert "-p 64 -n 0" in check.bench_command and "-ub 64 -b 64" in check.bench_command
    assert check.harness_context["n_ubatch"] == 64  # the same micro-batch on both sides
    assert check.layers == gguf_facts(tiny_gguf)[0] and check.layers
    assert check.ratio == pytest.approx(check.harness_tokens_per_s / check.bench_tokens_per_s)
    if check.layers > 1:
        scaled = check.bench_tokens_per_s * (check.layers - 1) / check.layers
        assert check.all_layers_estimate_tokens_per_s == pytest.approx(scaled)
    assert check.as_dict()["bench_command"] == check.bench_command


def _llama_bench() -> str | None:
    return os.environ.get("HMOE_LLAMA_BENCH") or shutil.which("llama-bench")


def _gpu_llama_cpp() -> bool:
    if not llamacpp_importable():
        return False
    from baselines.llamacpp.remote import LlamaCppWorker

    worker = LlamaCppWorker()  # llama.cpp must not load in this (numpy) process
    try:
        return bool(worker.probe()["gpu_offload"])
    except Exception:  # noqa: BLE001 - a broken build is simply not a GPU build here
        return False
    finally:
        worker.close()


@pytest.mark.gpu
@pytest.mark.skipif(_llama_bench() is None, reason="no llama-bench (set HMOE_LLAMA_BENCH)")
@pytest.mark.parametrize("settings", ["best", "paper"])
def test_harness_prefill_agrees_with_llama_bench_on_a_gpu(settings, tiny_gguf):
    if not _gpu_llama_cpp():
        pytest.skip("needs a GPU build of llama-cpp-python")
    gguf = Path(os.environ.get("HMOE_CROSSCHECK_GGUF") or tiny_gguf)
    n_prompt = int(os.environ.get("HMOE_CROSSCHECK_TOKENS", "2048"))
    placement = plan_placement("cuda", True, kv_on_cpu=settings == "paper")
    check = crosscheck_prefill(
        str(_llama_bench()),
        gguf,
        placement,
        n_prompt,
        n_ubatch=512 if settings == "paper" else None,
        repetitions=3,
    )
    print(f"\ncross-check {settings}: {check.as_dict()}")
    assert check.agrees(tolerance=0.3), check.as_dict()

"""The ``llamacpp`` system: options, placement, llama-bench runner, and the System protocol on a
tiny model through the real llama.cpp (llama-cpp-python).

Tests of the missing-package path, of the option checks, of the placement plan and of the
llama-bench runner (with a stand-in executable) run everywhere; the rest skip when
llama-cpp-python is not installed.
"""

from __future__ import annotations

import builtins
import importlib.util
import json
import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.llamacpp.bench import LlamaBench, bench_command, parse_jsonl
from baselines.llamacpp.child_process import child_env
from baselines.llamacpp.placement import INSTALL_HINT, plan_placement, resolve_extra_buffers
from baselines.llamacpp.runtime import LlamaCppError
from experiments.system_api import ModelSpec, Sampling, SystemUnavailable, encode_pair

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA_CPP = True
except ImportError:
    HAVE_LLAMA_CPP = False
needs_llama_cpp = pytest.mark.skipif(
    not HAVE_LLAMA_CPP, reason="llama-cpp-python is not installed (pip install -e .[llamacpp])"
)


# -- runs everywhere ---------------------------------------------------------------------------
def _hide_llama_cpp(monkeypatch) -> None:
    """Make llama_cpp look uninstalled: not found by find_spec, and not importable."""
    real_import, real_find_spec = builtins.__import__, importlib.util.find_spec

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ModuleNotFoundError("No module named 'llama_cpp'", name="llama_cpp")
        return real_import(name, *args, **kwargs)

    def find_no_llama_cpp(name, *args, **kwargs):
        return None if name == "llama_cpp" else real_find_spec(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    monkeypatch.setattr(importlib.util, "find_spec", find_no_llama_cpp)


def test_missing_package_is_system_unavailable_with_install_commands(monkeypatch):
    _hide_llama_cpp(monkeypatch)
    from baselines.llamacpp.system import LlamaCppSystem

    with pytest.raises(SystemUnavailable) as info:
        LlamaCppSystem({"device": "cpu"})
    message = str(info.value)
    assert message.startswith("llama-cpp-python is not installed")
    assert "pip install -e .[llamacpp]" in message
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install -e .[llamacpp]' in message
    assert INSTALL_HINT in message


def test_missing_package_points_are_not_run_and_the_run_goes_on(hmoe, tmp_path):
    """A ``llama_cpp`` that fails to import (first on the path) makes the points NOT RUN."""
    fake = tmp_path / "fake" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    results = tmp_path / "results"
    done = hmoe(
        "run",
        "experiment=prefill",
        "model=tiny_qwen2_moe",
        "system=llamacpp",
        "profile=cpu",
        "experiment.prompt_lengths=[32]",
        f"results_root={results}",
        "run=t",
        "progress=false",
        env={"PYTHONPATH": f"{tmp_path / 'fake'}"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(results / "t" / "results.csv")
    assert set(rows["status"]) == {"not_run"}
    assert rows["error"].str.contains("pip install -e .\\[llamacpp\\]").all()


def test_options_are_checked():
    from baselines.llamacpp.system import LlamaCppConfig

    assert LlamaCppConfig.from_mapping({"impl": "x", "name": "llamacpp"}) == LlamaCppConfig()
    with pytest.raises(ValueError, match="unknown llamacpp option"):
        LlamaCppConfig.from_mapping({"thread": 4})
    for bad in (
        {"full_precision": "q8_0"},
        {"quantizer": "numpy"},
        {"n_ubatch": 0},
        {"kv_type": "q4_k"},
        {"bench_repetitions": 0},
        {"extra_buffers": "yes"},
    ):
        with pytest.raises(ValueError):
            LlamaCppConfig.from_mapping(bad)
    conf = LlamaCppConfig.from_mapping({"cpu_tensors": ["exps", "shexp"]})
    assert conf.cpu_tensors == ("exps", "shexp")
    assert (
        LlamaCppConfig().op_offload
        and not LlamaCppConfig.from_mapping({"op_offload": False}).op_offload
    )


def test_placement_plan():
    gpu = plan_placement("cuda", True, threads=16)
    assert (gpu.device, gpu.n_gpu_layers, gpu.cpu_tensor_patterns) == ("gpu", 1000, ("exps",))
    assert gpu.kv_on_cpu and gpu.as_dict()["kv_cache"] == "cpu" and not gpu.use_mmap
    kv_gpu = plan_placement("auto", True, kv_on_cpu=False)
    assert kv_gpu.as_dict()["kv_cache"] == "gpu" and kv_gpu.threads >= 1
    cpu = plan_placement("auto", False)
    assert (cpu.device, cpu.n_gpu_layers, cpu.cpu_tensor_patterns) == ("cpu", 0, ())
    assert plan_placement("cpu", True).n_gpu_layers == 0
    with pytest.raises(SystemUnavailable, match="GGML_CUDA=on"):
        plan_placement("cuda", False)
    with pytest.raises(ValueError):
        plan_placement("tpu", True)
    with pytest.raises(Exception, match="unterminated|missing"):
        plan_placement("cuda", True, cpu_tensors=["exps("])


def test_extra_buffers_auto_is_off_only_cpu_only_on_amx():
    """Weight repacking stays llama.cpp's default (on) except on a CPU-only placement on an
    AMX CPU, where llama.cpp's AMX matmul crashes; a configured value is used as given."""
    amx = "CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
    avx2 = "CPU : AVX2 = 1 | AMX_INT8 = 0 | REPACK = 1 |"
    cpu, gpu = plan_placement("cpu", False), plan_placement("cuda", True)
    assert cpu.extra_buffers is None and cpu.as_dict()["extra_buffers"] is None
    used, why = resolve_extra_buffers(cpu, amx)
    assert used is False and "20824" in why
    assert resolve_extra_buffers(cpu, avx2) == (True, "llama.cpp's default")
    assert resolve_extra_buffers(gpu, amx) == (True, "llama.cpp's default")
    forced = plan_placement("cpu", False, extra_buffers=True)
    assert resolve_extra_buffers(forced, amx) == (True, "as configured")
    off = plan_placement("cuda", True, extra_buffers=False)
    assert resolve_extra_buffers(off, avx2) == (False, "as configured")


def test_bench_command_uses_the_papers_flags():
    placement = plan_placement("cuda", True, threads=16)
    cmd = " ".join(
        bench_command(
            "llama-bench",
            Path("m.gguf"),
            placement,
            n_prompt=512,
            n_gen=0,
            repetitions=3,
            n_ubatch=None,
        )
    )
    for flags in ("-ngl 1000", "-nkvo 1", "-ot exps=CPU", "--numa distribute", "-mmp 0"):
        assert flags in cmd
    assert "-r 3" in cmd and "-p 512 -n 0" in cmd and "-o jsonl" in cmd and "-ub" not in cmd
    decode = bench_command(
        "llama-bench",
        Path("m.gguf"),
        placement,
        n_prompt=0,
        n_gen=128,
        repetitions=3,
        n_ubatch=2048,
    )
    assert "-p 0 -n 128" in " ".join(decode) and "-ub 2048" in " ".join(decode)
    cpu = " ".join(
        bench_command(
            "llama-bench",
            Path("m.gguf"),
            plan_placement("cpu", False),
            n_prompt=8,
            n_gen=0,
            repetitions=1,
            n_ubatch=None,
        )
    )
    assert "-ngl 0" in cpu and "-ot" not in cpu and "-nkvo" not in cpu
    assert "-nopo" not in cmd  # llama.cpp's default (op offload on) passes no flag
    no_op_offload = plan_placement("cuda", True, op_offload=False)
    assert no_op_offload.as_dict()["op_offload"] is False
    cmd = bench_command(
        "llama-bench",
        Path("m.gguf"),
        no_op_offload,
        n_prompt=8,
        n_gen=0,
        repetitions=1,
        n_ubatch=None,
    )
    assert "-nopo 1" in " ".join(cmd) and "-nr" not in cmd
    no_repack = plan_placement("cpu", False, extra_buffers=False)
    cmd = bench_command(
        "llama-bench", Path("m.gguf"), no_repack, n_prompt=8, n_gen=0, repetitions=1, n_ubatch=None
    )
    assert "-nr 1" in " ".join(cmd)


def test_llama_cpp_must_load_before_numpy():
    """A llama.cpp process that already has numpy (and not llama_cpp) refuses to go on."""
    code = (
        "import numpy\n"
        "from baselines.llamacpp.load_order import load_llama_cpp_first\n"
        "try:\n"
        "    load_llama_cpp_first()\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True
    )
    assert "refused: numpy was imported before llama_cpp" in done.stdout


def _fake_bench(tmp_path: Path, samples: list[int], rc: int = 0) -> Path:
    """An executable printing one llama-bench JSONL record (and its argv to a file)."""
    record = {
        "build_commit": "abc1234",
        "cpu_info": "Fake CPU",
        "gpu_info": "Fake GPU",
        "backends": "CUDA",
        "n_gpu_layers": 1000,
        "n_prompt": 512,
        "n_gen": 0,
        "avg_ns": sum(samples) // len(samples),
        "samples_ns": samples,
    }
    script = tmp_path / "llama-bench"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path / "argv.txt"}\n'
        "echo 'llama-bench: some progress line' >&2\n"
        f"echo '{json.dumps(record)}'\n"
        f"exit {rc}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_llama_bench_samples_become_trials(tmp_path):
    exe = _fake_bench(tmp_path, [2_000_000_000, 1_000_000_000, 500_000_000])
    bench = LlamaBench(str(exe), tmp_path / "m.gguf", plan_placement("cuda", True), repetitions=3)
    assert [bench.seconds(512, 0) for _ in range(4)] == [2.0, 1.0, 0.5, 2.0]
    assert len((tmp_path / "argv.txt").read_text().splitlines()) == 2  # ran again when empty
    assert bench.facts["build_commit"] == "abc1234" and bench.facts["gpu_info"] == "Fake GPU"
    assert parse_jsonl("noise\n" + json.dumps({"samples_ns": [1]}))[0]["samples_ns"] == [1]


def test_llama_bench_failure_surfaces_its_stderr(tmp_path):
    exe = _fake_bench(tmp_path, [1], rc=1)
    bench = LlamaBench(str(exe), tmp_path / "m.gguf", plan_placement("cpu", False))
    with pytest.raises(LlamaCppError, match="exited 1: llama-bench: some progress line"):
        bench.seconds(8, 0)
    with pytest.raises(LlamaCppError, match="not an executable"):
        LlamaBench(str(tmp_path / "nope"), tmp_path / "m.gguf", plan_placement("cpu", False))


def test_bench_binary_needs_no_llama_cpp_python(monkeypatch, tmp_path):
    """A user's own llama-bench runs the points; generate needs llama-cpp-python."""
    _hide_llama_cpp(monkeypatch)
    from baselines.llamacpp.system import LlamaCppSystem

    exe = _fake_bench(tmp_path, [400_000_000, 200_000_000, 100_000_000])
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not read by the stand-in llama-bench")
    spec = ModelSpec("m", "qw2", "m", "qwen2_moe", tmp_path, "x", False, 1, 1, {"bf16": gguf})
    system = LlamaCppSystem({"device": "cuda", "bench_binary": str(exe)})
    system.load(spec, "bf16")
    assert system.prefill(list(range(512))).seconds == pytest.approx(0.4)
    decode = system.decode(list(range(32)), 128)
    assert decode.decode_tokens == 128 and decode.decode_seconds == pytest.approx(0.4)
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert "-p 512 -n 0" in argv[0] and "-p 0 -n 128" in argv[1] and "-ot exps=CPU" in argv[0]
    facts = system.describe()
    assert facts["runner"] == "llama-bench" and facts["llama_bench"]["build_commit"] == "abc1234"
    assert facts["llama_cpp_python"] == "not installed" and system.worker is None
    with pytest.raises(SystemUnavailable, match="bench_binary"):
        system.generate("hi", Sampling(max_new_tokens=2))
    system.close()


# -- the real llama.cpp ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_qwen(model_cache: Path) -> ModelSpec:
    from engine.synthetic import SyntheticRequest, ensure_synthetic_model

    path = ensure_synthetic_model(SyntheticRequest("qwen2_moe", "tiny"), model_cache, False)
    return ModelSpec(
        key="tiny_qwen2_moe",
        paper_model="qw2",
        name="tiny",
        architecture="qwen2_moe",
        path=path,
        source="synthetic-tiny",
        synthetic=True,
        layers_run=4,
        layers_total=4,
    )


@pytest.fixture(scope="module")
def system_int8(tiny_qwen):
    from baselines.llamacpp.system import LlamaCppSystem

    system = LlamaCppSystem({"device": "cpu", "threads": 2})
    system.load(tiny_qwen, "int8")
    yield system
    system.close()


@needs_llama_cpp
def test_prefill_and_decode_points(system_int8):
    prompt = list(range(300, 364))
    pre = system_int8.prefill(prompt)
    assert pre.tokens == 64 and pre.seconds > 0
    dec = system_int8.decode(prompt[:32], 12)
    assert dec.prompt_tokens == 32 and dec.decode_tokens == 12 and len(dec.token_ids) == 12
    assert dec.prefill_seconds > 0 and dec.decode_seconds > 0
    assert system_int8.decode(prompt[:32], 12).token_ids == dec.token_ids  # cache cleared
    assert system_int8.model.actual["n_ubatch"] >= 32  # one micro-batch per prompt
    with pytest.raises(SystemUnavailable, match="deferral"):
        system_int8.decode(prompt[:32], 4, 6, 2)
    with pytest.raises(SystemUnavailable, match="top-8"):
        system_int8.decode(prompt[:32], 4, 4, 0)
    assert system_int8.decode(prompt[:32], 2, 8, 0).decode_tokens == 2


@needs_llama_cpp
def test_slice_prefill_runs_every_layer_in_full(tiny_qwen, system_int8, tmp_path):
    """On a layer slice the prefill outputs every token (so llama.cpp's last layer runs its
    MoE for the whole prompt) on the vocab-limited timing copy; decode swaps back to the
    full export and gives the tokens the full model gives."""
    from dataclasses import replace

    from baselines.llamacpp.system import LlamaCppSystem

    sliced = replace(tiny_qwen, layers_run=4, layers_total=24)
    system = LlamaCppSystem({"device": "cpu", "threads": 2, "cache_dir": str(tmp_path)})
    try:
        system.load(sliced, "int8")
        prompt = list(range(300, 364))
        assert system.prefill(prompt).tokens == 64
        assert system.model.actual["n_outputs"] == 64  # every token's logits
        facts = system.describe()
        assert facts["loaded_file"] == "slice_prefill"
        assert "-q8_0-v512-" in facts["slice_prefill"]["gguf"]
        dec = system.decode(prompt[:32], 12)
        assert system.describe()["loaded_file"] == "full"
        assert dec.token_ids == system_int8.decode(prompt[:32], 12).token_ids
        assert system.model.actual["n_outputs"] == 1
    finally:
        system.close()
    plain = LlamaCppSystem({"device": "cpu", "threads": 2, "slice_prefill_vocab": None})
    try:
        plain.load(sliced, "int8")
        plain.prefill(list(range(300, 364)))
        assert plain.model.actual["n_outputs"] == 1
        assert plain.describe()["slice_prefill"].startswith("off")
    finally:
        plain.close()
    with pytest.raises(ValueError, match="slice_prefill_vocab"):
        LlamaCppSystem({"device": "cpu", "slice_prefill_vocab": 100})


@needs_llama_cpp
def test_describe_reports_the_placement_used(system_int8):
    facts = system_int8.describe()
    assert facts["gguf_type"] == "q8_0" and facts["gguf_origin"].startswith("exported from")
    assert facts["placement"]["device"] == "cpu" and facts["placement"]["threads"] == 2
    assert facts["placement"]["kv_cache"] == "cpu" and facts["gpu_offload_supported"] is False
    assert facts["buffers_mib"]["model"]["CPU"] > 0
    assert "CPU" in facts["system_info"] and facts["cpu_features"]
    assert facts["devices"][0]["type"] == "cpu"
    repacked = facts["extra_buffers"]
    assert repacked["used"] is ("AMX_INT8" not in facts["cpu_features"]), repacked
    json.dumps(facts)  # provenance stores it as JSON


@needs_llama_cpp
def test_generate_greedy_sampled_and_stop(system_int8):
    greedy = Sampling(max_new_tokens=12)
    first = system_int8.generate("def main():", greedy)
    assert first and first == system_int8.generate("def main():", greedy)
    sampled = Sampling(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=5)
    assert system_int8.generate("def main():", sampled) == system_int8.generate(
        "def main():", sampled
    )
    stop = first[2:4]
    cut = system_int8.generate("def main():", Sampling(max_new_tokens=12, stop=(stop,)))
    assert cut == first[: first.find(stop)]


@needs_llama_cpp
def test_loglikelihood_matches_the_engines_logits(tiny_qwen):
    """F32 file, F32 KV cache, no flash attention: llama.cpp's scores equal the engine's."""
    from baselines.llamacpp.system import LlamaCppSystem
    from engine.experts import make_expert_backend
    from engine.loaders import open_weights
    from engine.models import load_model

    system = LlamaCppSystem({"device": "cpu", "kv_type": "f32", "flash_attn": False})
    system.load(tiny_qwen, "fp32")
    source = open_weights(tiny_qwen.path)
    engine = load_model(
        source, expert_backend=make_expert_backend("reference", "fp32"), dtype=torch.float32
    )
    source.close()
    context, conts = "The module defines", [" a class", " functions for", "x"]
    try:
        got = system.loglikelihood(context, conts)
        for cont, (logprob, greedy) in zip(conts, got, strict=True):
            ctx_ids, cont_ids = encode_pair(system.model.tokenize, context, cont)
            ids = torch.tensor(ctx_ids + cont_ids)
            logits = engine.forward(ids, engine.new_cache(len(ids) + 1), all_logits=True)
            rows = torch.log_softmax(logits.double(), -1)[len(ctx_ids) - 1 : -1]
            want = float(rows[torch.arange(len(cont_ids)), torch.tensor(cont_ids)].sum())
            want_greedy = bool((rows.argmax(-1) == torch.tensor(cont_ids)).all())
            assert logprob == pytest.approx(want, abs=1e-3)
            assert greedy == want_greedy and math.isfinite(logprob)
    finally:
        system.close()
        engine.close()


@needs_llama_cpp
def test_precisions_map_to_gguf_types(tiny_qwen, tmp_path):
    from baselines.llamacpp.system import LlamaCppSystem

    system = LlamaCppSystem({"device": "cpu", "full_precision": "bf16"})
    assert [system.gguf_type_for(p) for p in ("bf16", "fp16", "int8", "int4")] == [
        "bf16",
        "f16",
        "q8_0",
        "q4_0",
    ]
    with pytest.raises(SystemUnavailable, match="fp8"):
        system.gguf_type_for("fp8")
    # a configured GGUF is used as is, and its refusal carries llama.cpp's reason
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    spec = ModelSpec(**{**tiny_qwen.__dict__, "gguf": {"bf16": bad}})
    with pytest.raises(LlamaCppError, match="broken.gguf: .*gguf_init"):
        system.load(spec, "bf16")
    assert system.gguf_origin == "configured"


@needs_llama_cpp
def test_harness_runs_llamacpp_points(hmoe, tmp_path):
    results = tmp_path / "results"
    done = hmoe(
        "run",
        "experiment=prefill",
        "model=tiny_deepseek_v3",
        "system=llamacpp",
        "profile=cpu",
        "experiment.prompt_lengths=[16,64]",
        "experiment.trials=2",
        f"results_root={results}",
        "run=t",
        "progress=false",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(results / "t" / "results.csv")
    assert set(rows["status"]) == {"ok"} and len(rows) == 2 * 2 * 2  # precisions x L x trials
    assert "fp16" in set(rows["precision"])  # the paper's label for GGUF F16 (bf16 here)
    assert set(rows["precision"]) <= {"fp16", "int8", "int4"}
    assert (rows["tokens_per_s"] > 0).all() and np.isfinite(rows["seconds"]).all()
    facts = json.loads((results / "t" / "provenance.json").read_text())["systems"]
    # one entry per loaded precision, each with what that load used
    assert set(facts) == {f"prefill/tiny_deepseek_v3/llamacpp/{p}" for p in rows["precision"]}
    assert len({f["gguf_type"] for f in facts.values()}) == len(facts) == 2
    placement = next(iter(facts.values()))["placement"]
    assert placement["device"] == "cpu"
    # progress lines carry the label the rows carry (fp16, not the harness's bf16)
    assert "prefill fp16 p16" in done.stdout and "prefill bf16" not in done.stdout


@needs_llama_cpp
def test_llama_cpp_runs_in_a_torch_free_worker(system_int8):
    """torch is loaded here, never in the process that loads llama.cpp's libraries, where
    llama.cpp's libraries load before numpy (the other order crashes its CUDA build)."""
    assert "torch" in sys.modules  # this (parent) process has torch
    modules = system_int8.model.modules()
    assert "llama_cpp" in modules and "baselines.llamacpp.runtime" in modules
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]
    assert modules.index("llama_cpp.llama_cpp") < modules.index("numpy")
    assert system_int8.model.pid != os.getpid()


@needs_llama_cpp
def test_a_killed_worker_fails_the_call_and_the_next_load_starts_a_new_one(tiny_qwen):
    from baselines.llamacpp.remote import LlamaCppWorkerDied
    from baselines.llamacpp.system import LlamaCppSystem

    system = LlamaCppSystem({"device": "cpu", "threads": 1})
    try:
        system.load(tiny_qwen, "int8")
        prompt = list(range(300, 332))
        assert system.prefill(prompt).seconds > 0
        first = system.model.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(
            RuntimeError, match=r"llama.cpp worker .*exited with signal 9 \(SIGKILL\)"
        ):
            system.prefill(prompt)
        with pytest.raises(LlamaCppWorkerDied, match="load the model again"):
            system.decode(prompt, 2)
        assert "unavailable" in system.describe()["model_facts"]
        system.load(tiny_qwen, "int8")
        assert system.model.pid != first and system.prefill(prompt).seconds > 0
        assert len(system.decode(prompt, 2).token_ids) == 2
    finally:
        system.close()
    assert system.worker is None


@needs_llama_cpp
def test_close_ends_the_worker(tiny_qwen):
    from baselines.llamacpp.system import LlamaCppSystem

    system = LlamaCppSystem({"device": "cpu", "threads": 1})
    worker = system.worker
    assert worker is not None and worker.alive  # the probe's worker serves the load
    system.load(tiny_qwen, "int8")
    assert system.model is worker
    system.close()
    assert not worker.alive and worker.process.returncode == 0
    system.close()  # idempotent


@needs_llama_cpp
def test_quantizer_refusal_carries_its_reason(tmp_path):
    from baselines.llamacpp.gguf_export import quantize_with_llamacpp
    from engine.errors import WeightsError

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(WeightsError, match="could not quantize bad.gguf to q8_0: .*gguf"):
        quantize_with_llamacpp(bad, tmp_path / "out.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == [bad]  # no partial output left behind

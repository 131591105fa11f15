"""Tests for engine.synthetic: real-format synthetic models that transformers loads and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.errors import EngineError
from engine.synthetic import (
    SyntheticRequest,
    choose_slice_layers,
    ensure_synthetic_model,
    read_synthetic_metadata,
    slice_bytes,
)
from engine.synthetic import cli as synth_cli
from engine.synthetic.generator import is_complete
from engine.synthetic.layout import TensorSpec
from engine.synthetic.presets import REAL_LAYERS
from engine.synthetic.weights import WeightRecipe, zipf_log_popularity
from engine.text_corpus import load_corpus

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("qwen2_moe", "deepseek_v2", "deepseek_v3")
CLASS_NAMES = {
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
GiB = 1 << 30


@pytest.fixture(scope="module")
def cache(model_cache) -> Path:
    """The session's synthetic-model cache (conftest), shared with other tests."""
    return model_cache


@pytest.fixture(scope="module")
def prompt_text() -> str:
    return load_corpus("python_docs").text[20_000:40_000]


def _tiny(cache: Path, arch: str, **kw) -> Path:
    return ensure_synthetic_model(SyntheticRequest(arch, "tiny", **kw), cache, progress=False)


def _load(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16, output_loading_info=True
    )


def _tensor_names(model_dir: Path) -> dict[str, str]:
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    return index["weight_map"]


def _file_tensor(model_dir: Path, name: str) -> torch.Tensor:
    shard = _tensor_names(model_dir)[name]
    with safe_open(str(model_dir / shard), framework="pt") as f:
        return f.get_tensor(name)


# --- transformers compatibility -------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_loads_and_runs_in_transformers(cache, prompt_text, arch) -> None:
    from transformers import AutoTokenizer

    model_dir = _tiny(cache, arch)
    model, info = _load(model_dir)
    assert type(model).__name__ == CLASS_NAMES[arch]
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(kind), f"{kind}: {info.get(kind)}"
    # The weights really came from the files (not from transformers' random init).
    torch.testing.assert_close(model.lm_head.weight, _file_tensor(model_dir, "lm_head.weight"))
    gate = next(n for n in _tensor_names(model_dir) if n.endswith("mlp.gate.weight"))
    # transformers >= 5.2x keeps DeepSeek-V2's router in float32 (an exact upcast of the file)
    router = model.get_parameter(gate)
    assert router.dtype in (torch.bfloat16, torch.float32)
    torch.testing.assert_close(router.float(), _file_tensor(model_dir, gate).float())

    tok = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert len(tok) == config["vocab_size"] == model.config.vocab_size
    assert tok.eos_token_id == config["eos_token_id"]
    assert tok.pad_token_id is not None
    ids = tok(prompt_text, return_tensors="pt").input_ids[:, :64]
    assert ids.shape == (1, 64)
    sample = "The quick brown fox (v3.12) jumps -- over 1024 lazy dogs!\n\tdef f(x): return x"
    assert tok.decode(tok.encode(sample)) == sample

    with torch.no_grad():
        logits = model(ids).logits.float()
    assert logits.shape == (1, 64, config["vocab_size"])
    assert torch.isfinite(logits).all()
    assert 0.1 < logits.std().item() < 10.0
    assert logits.abs().max().item() < 100.0


def test_deepseek_without_q_lora_uses_q_proj(cache) -> None:
    model_dir = _tiny(cache, "deepseek_v2", dims={"q_lora_rank": None})
    names = _tensor_names(model_dir)
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert not any("q_a_proj" in n or "q_b_proj" in n for n in names)
    _, info = _load(model_dir)
    assert not info["missing_keys"] and not info["unexpected_keys"]


# --- directory contents ---------------------------------------------------------------------


def test_directory_has_real_names_config_and_metadata(cache) -> None:
    qw = _tiny(cache, "qwen2_moe")
    files = {p.name for p in qw.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        "hmoe_synthetic.json",
        "model-00001-of-00001.safetensors",
    } <= files
    config = json.loads((qw / "config.json").read_text())
    assert config["architectures"] == ["Qwen2MoeForCausalLM"]
    assert config["model_type"] == "qwen2_moe" and config["torch_dtype"] == "bfloat16"
    assert (config["num_experts"], config["num_experts_per_tok"]) == (64, 8)
    names = _tensor_names(qw)
    for name in (
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.0.mlp.experts.5.gate_proj.weight",
        "model.layers.3.mlp.shared_expert.up_proj.weight",
        "model.layers.0.mlp.shared_expert_gate.weight",
        "model.layers.0.mlp.gate.weight",
        "model.layers.0.self_attn.q_proj.bias",
    ):
        assert name in names

    ds3 = _tiny(cache, "deepseek_v3")
    names = _tensor_names(ds3)
    assert "model.layers.0.mlp.gate_proj.weight" in names  # first_k_dense_replace = 1
    assert "model.layers.0.mlp.gate.weight" not in names
    for name in (
        "model.layers.1.mlp.experts.255.down_proj.weight",
        "model.layers.1.mlp.shared_experts.gate_proj.weight",
        "model.layers.1.self_attn.kv_a_proj_with_mqa.weight",
        "model.layers.1.self_attn.kv_a_layernorm.weight",
        "model.layers.1.self_attn.q_a_layernorm.weight",
    ):
        assert name in names
    bias = _file_tensor(ds3, "model.layers.1.mlp.gate.e_score_correction_bias")
    assert bias.dtype == torch.float32 and bias.shape == (256,) and not bias.any()
    ds2_names = _tensor_names(_tiny(cache, "deepseek_v2"))
    assert not any("e_score_correction_bias" in n for n in ds2_names)

    meta = read_synthetic_metadata(ds3)
    assert meta is not None
    assert {
        k: meta[k]
        for k in (
            "synthetic",
            "architecture",
            "kind",
            "seed",
            "routing_skew",
            "layers_run",
            "layers_total",
            "stands_for",
        )
    } == {
        "synthetic": True,
        "architecture": "deepseek_v3",
        "kind": "tiny",
        "seed": 0,
        "routing_skew": 0.0,
        "layers_run": 4,
        "layers_total": 4,
        "stands_for": "ds3",
    }
    assert isinstance(meta["generator_version"], int)
    assert read_synthetic_metadata(cache) is None


def test_same_request_is_byte_identical_and_seed_changes_it(tmp_path) -> None:
    a = _tiny(tmp_path / "a", "deepseek_v2", seed=3)
    b = _tiny(tmp_path / "b", "deepseek_v2", seed=3)
    c = _tiny(tmp_path / "a", "deepseek_v2", seed=4)
    assert a.name == b.name and a.name != c.name
    for name in ("model-00001-of-00001.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model-00001-of-00001.safetensors").read_bytes() != (
        c / "model-00001-of-00001.safetensors"
    ).read_bytes()


def test_tensor_values_do_not_depend_on_generation_order() -> None:
    spec_a = TensorSpec("model.layers.0.mlp.experts.0.up_proj.weight", (300, 40), "normal", 0.1)
    spec_b = TensorSpec("model.layers.0.mlp.experts.1.up_proj.weight", (300, 40), "normal", 0.1)
    first = WeightRecipe(seed=7, hidden_size=40)
    alone = b"".join(bytes(c) for c in first.chunks(spec_b))
    second = WeightRecipe(seed=7, hidden_size=40)
    for _ in second.chunks(spec_a):
        pass
    assert b"".join(bytes(c) for c in second.chunks(spec_b)) == alone
    assert b"".join(bytes(c) for c in first.chunks(spec_a)) != alone


# --- streaming write, cache, interruption ---------------------------------------------------

_SLICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import psutil
    from engine.synthetic import SyntheticRequest, ensure_synthetic_model
    from engine.synthetic.tokenizer import trained_tokenizer_json
    from engine.text_corpus import load_corpus

    cache = Path(sys.argv[1])
    dims = json.loads(sys.argv[2])
    corpus = load_corpus("python_docs")
    trained_tokenizer_json(corpus, dims["vocab_size"], cache)  # train outside the measurement
    baseline = psutil.Process().memory_info().rss
    req = SyntheticRequest("qwen2_moe", "slice", layers=2, seed=1, dims=dims)
    path = ensure_synthetic_model(req, cache, progress=False, max_shard_bytes=96 << 20,
                                  corpus=corpus)
    # VmHWM: this process's peak RSS (ru_maxrss would include pytest's, inherited via fork).
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmHWM:"))
    print(json.dumps({"path": str(path), "baseline": baseline, "peak": peak}))
    """
)
_SLICE_DIMS = {
    "hidden_size": 1024,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 1024,
    "intermediate_size": 2048,
    "vocab_size": 4096,
}


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_slice_is_streamed_with_small_peak_memory(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _SLICE_SCRIPT, str(tmp_path), json.dumps(_SLICE_DIMS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    model_dir = Path(result["path"])
    shards = sorted(model_dir.glob("model-*.safetensors"))
    written = sum(p.stat().st_size for p in shards)
    assert written > 300e6
    extra = result["peak"] - result["baseline"]
    # Well under the bytes written, and under one shard: nothing buffers a shard or the model.
    assert extra < 0.4 * written
    assert extra < 80 * 2**20

    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    assert len(shards) >= 4 and all(p.stat().st_size <= 96 * 2**20 + 2**20 for p in shards)
    assert {model_dir / n for n in index["weight_map"].values()} == set(shards)
    seen = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open objects are not iterable
                assert index["weight_map"][name] == shard.name
                seen += f.get_slice(name).get_shape()[0] > 0
    assert seen == len(index["weight_map"])
    with safe_open(str(model_dir / index["weight_map"]["lm_head.weight"]), framework="pt") as f:
        assert tuple(f.get_tensor("lm_head.weight").shape) == (4096, 1024)

    meta = read_synthetic_metadata(model_dir)
    assert meta["kind"] == "slice" and meta["layers_run"] == 2
    assert meta["layers_total"] == REAL_LAYERS["qwen2_moe"] == 28
    assert model_dir.name.startswith("qwen2_moe-slice-L2-s1-")


def test_second_call_reuses_the_cache_without_rewriting(cache) -> None:
    first = _tiny(cache, "qwen2_moe", seed=11)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    second = _tiny(cache, "qwen2_moe", seed=11)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in second.iterdir()} == stamps


def test_interrupted_write_leaves_no_complete_looking_entry(tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    original = WeightRecipe.chunks

    def failing_chunks(self, spec):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, spec)

    monkeypatch.setattr(WeightRecipe, "chunks", failing_chunks)
    with pytest.raises(KeyboardInterrupt):
        _tiny(tmp_path, "deepseek_v3", seed=5)
    entries = [p for p in tmp_path.iterdir() if p.name != "tokenizers"]
    assert not any(is_complete(p) for p in entries)
    assert not any(p.name.startswith("deepseek_v3-") for p in entries)

    monkeypatch.setattr(WeightRecipe, "chunks", original)
    model_dir = _tiny(tmp_path, "deepseek_v3", seed=5)
    assert is_complete(model_dir)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


# --- routing skew -----------------------------------------------------------------------------


def _expert_counts(model_dir: Path, text: str) -> list[torch.Tensor]:
    from transformers import AutoTokenizer

    model, _ = _load(model_dir)
    ids = AutoTokenizer.from_pretrained(model_dir)(text, return_tensors="pt").input_ids[:, :256]
    counts: list[torch.Tensor] = []

    def hook(module, _inputs, output) -> None:
        counts.append(torch.bincount(output[2].reshape(-1), minlength=module.weight.shape[0]))

    for name, module in model.named_modules():
        if name.endswith("mlp.gate") and hasattr(module, "top_k"):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(ids)
    return [c.float() for c in counts]


@pytest.mark.parametrize("arch", ["qwen2_moe", "deepseek_v3"])
def test_routing_skew_makes_expert_load_imbalanced(cache, prompt_text, arch) -> None:
    def cv(counts: list[torch.Tensor]) -> float:
        return sum((c.std() / c.mean()).item() for c in counts) / len(counts)

    plain = _expert_counts(_tiny(cache, arch), prompt_text)
    skewed = _expert_counts(_tiny(cache, arch, routing_skew=1.2), prompt_text)
    assert plain and len(plain) == len(skewed)
    # Without skew, real text already spreads over most experts ...
    assert all((c > 0).float().mean() > 0.8 for c in plain)
    # ... with skew, a few popular experts take far more of the tokens.
    assert cv(skewed) > 2.5 * cv(plain)
    assert min(c.max() / c.mean() for c in skewed) > max(c.max() / c.mean() for c in plain)


def test_zipf_popularity_is_a_seeded_permutation() -> None:
    logp = zipf_log_popularity(64, 1.2, seed=0, layer=3)
    assert abs(logp.mean().item()) < 1e-5
    ranks = torch.argsort(logp, descending=True)
    assert not torch.equal(ranks, torch.arange(64))  # popularity is not by expert index
    assert torch.equal(logp, zipf_log_popularity(64, 1.2, seed=0, layer=3))
    assert not torch.equal(logp, zipf_log_popularity(64, 1.2, seed=0, layer=4))


# --- slice sizing -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_choose_slice_layers_is_monotone_and_bounded(arch) -> None:
    previous = 0
    for mem_gib in (8, 16, 24, 48, 64, 128, 256, 512, 1024, 4096):
        try:
            n = choose_slice_layers(arch, mem_gib * GiB, 10_000 * GiB)
        except EngineError:
            n = 0
        assert n >= previous
        assert n <= REAL_LAYERS[arch]
        if n:
            assert slice_bytes(arch, n) <= 0.45 * mem_gib * GiB
        previous = n
    assert previous >= 1
    huge = 1 << 60
    assert choose_slice_layers(arch, huge, huge, cap=1000) == REAL_LAYERS[arch]
    assert choose_slice_layers(arch, 128 * GiB, 10 * GiB * 1024, cap=2) <= 2
    with pytest.raises(EngineError, match="no .* slice fits"):
        choose_slice_layers(arch, 1 * GiB, huge)
    with pytest.raises(EngineError, match="no .* slice fits"):
        choose_slice_layers(arch, huge, 1 * GiB)


def test_slice_bytes_grow_with_layers_and_match_real_sizes() -> None:
    sizes = [slice_bytes("qwen2_moe", n) for n in range(1, 6)]
    assert sizes == sorted(sizes) and len(set(sizes)) == 5
    h, e, inter, vocab = 3584, 64, 2560, 151936
    one_layer_experts = e * 3 * h * inter * 2
    assert sizes[1] - sizes[0] > one_layer_experts  # a layer adds at least its routed experts
    assert sizes[0] > one_layer_experts + 2 * vocab * h * 2


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (SyntheticRequest("llama", "tiny"), "unknown architecture"),
        (SyntheticRequest("qwen2_moe", "huge"), "unknown kind"),
        (SyntheticRequest("qwen2_moe", "tiny", layers=0), "positive integer"),
        (SyntheticRequest("deepseek_v2", "slice", layers=61), "at most 60 layers"),
        (SyntheticRequest("qwen2_moe", "tiny", dims={"hiden_size": 64}), "unknown config field"),
        (SyntheticRequest("qwen2_moe", "tiny", dims={"num_attention_heads": 3}), "multiple of"),
        (SyntheticRequest("deepseek_v3", "tiny", dims={"n_group": 7}), "divisible by n_group"),
        (SyntheticRequest("qwen2_moe", "tiny", routing_skew=-1.0), "routing_skew"),
    ],
)
def test_bad_requests_raise_engine_errors(tmp_path, req, message) -> None:
    with pytest.raises(EngineError, match=message):
        ensure_synthetic_model(req, tmp_path, progress=False)
    assert not any(p.name.startswith(("qwen2", "deepseek", "llama")) for p in tmp_path.iterdir())


def test_cli_prints_the_path_and_rejects_bad_arguments(tmp_path, capsys) -> None:
    rc = synth_cli.main(
        [
            "--arch",
            "deepseek_v2",
            "--kind",
            "tiny",
            "--layers",
            "2",
            "--cache-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out.strip()
    assert rc == 0 and Path(out).is_dir() and read_synthetic_metadata(Path(out))["layers_run"] == 2
    for argv, message in (
        (["--arch", "gpt2", "--kind", "tiny"], "invalid choice"),
        (["--arch", "qwen2_moe", "--kind", "tiny", "--layers", "0"], "--layers must be >= 1"),
        (["--arch", "qwen2_moe", "--kind", "tiny", "--routing-skew", "-2"], "routing-skew"),
        (
            [
                "--arch",
                "qwen2_moe",
                "--kind",
                "slice",
                "--layers",
                "29",
                "--cache-dir",
                str(tmp_path),
            ],
            "at most 28 layers",
        ),
    ):
        assert synth_cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1

"""Our GGUF exports checked by the real llama.cpp (llama-cpp-python): they load, and they compute.

Tiny synthetic models of the three architectures are exported and run by llama.cpp; its
logits over 64 real-text positions are compared with the engine's and with transformers'
on the same safetensors (top-1 agreement and relative L2 error of the logits).

llama.cpp runs these comparisons with an F32 KV cache and flash attention off. With its
defaults (F16 KV cache, flash attention on the CPU computing in F16) activations move by
~1e-4, which flips near-tied routing decisions of the tiny random routers (DeepSeek-V3's
sigmoid scores are often 1e-5 apart) and moves the logits by 1-8% at a few positions:
that is llama.cpp's arithmetic, not the export, which these settings isolate (F32 files
then agree to ~1e-6). DeepSeek-V2 is compared with ``topk_method: greedy``: for V2.5's
``group_limited_greedy`` llama.cpp ranks expert groups by the sum of their two best
scores (V3's rule) where Hugging Face ranks them by the best score, a real difference in
llama.cpp's semantics (~1.4% logit error on this tiny model), not in our file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

try:
    import llama_cpp  # noqa: F401
except ImportError as exc:  # missing, or installed without a loadable library
    pytest.skip(
        f"llama-cpp-python is not usable here ({exc}); pip install -e .[llamacpp]",
        allow_module_level=True,
    )
transformers = pytest.importorskip("transformers")

from gguf import GGUFReader  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from baselines.llamacpp.gguf_export import export_gguf, export_gguf_cached  # noqa: E402
from baselines.llamacpp.placement import (  # noqa: E402
    Placement,
    buffers_from_log,
    overridden_tensors,
    plan_placement,
)
from baselines.llamacpp.runtime import LlamaCppError, LlamaCppModel  # noqa: E402
from engine.errors import UnsupportedModelError  # noqa: E402
from engine.experts import make_expert_backend  # noqa: E402
from engine.loaders import open_weights  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.synthetic import SyntheticRequest, ensure_synthetic_model  # noqa: E402
from engine.text_corpus import load_corpus  # noqa: E402

POSITIONS = 64
MIN_TOP1, MAX_REL = 0.98, 0.03  # the acceptance criterion
EXACT_REL = 1e-3  # an F32 file run in F32 by llama.cpp: the export adds no error
# (architecture, config overrides that make HF's and llama.cpp's routing semantics coincide)
ARCHES: dict[str, dict[str, Any] | None] = {
    "qwen2_moe": None,  # norm_topk_prob false, as Qwen2-57B: llama.cpp never normalizes
    "deepseek_v2": {"topk_method": "greedy"},
    "deepseek_v3": None,  # noaux_tc group routing: the same rule in both
}


@pytest.fixture(scope="module")
def tiny(model_cache: Path):
    made: dict[tuple[str, str], Path] = {}

    def get(arch: str, dims: dict[str, Any] | None = None) -> Path:
        key = (arch, json.dumps(dims, sort_keys=True))
        if key not in made:
            req = SyntheticRequest(arch, "tiny", dims=dims)
            made[key] = ensure_synthetic_model(req, model_cache, progress=False)
        return made[key]

    return get


def _ids(model_dir: Path) -> list[int]:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text = load_corpus("python_docs").text
    ids = tok.encode(text[5000:9000]).ids[:POSITIONS]
    assert len(ids) == POSITIONS
    return ids


def _llamacpp_logits(gguf: Path, ids: list[int], exact: bool = True) -> np.ndarray:
    kw: dict[str, Any] = {"kv_type": "f32", "flash_attn": False} if exact else {}
    model = LlamaCppModel(gguf, plan_placement("cpu", False), **kw)
    try:
        model.ensure_context(len(ids) + 1, len(ids), len(ids), len(ids))
        model.prepare(ids, 0, all_logits=True)
        model.run()
        return np.stack([model.logits(i).copy() for i in range(len(ids))])
    finally:
        model.close()


def _engine_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    source = open_weights(model_dir)
    try:
        model = load_model(
            source,
            expert_backend=make_expert_backend("reference", "fp32"),
            device="cpu",
            dtype=torch.float32,
        )
    finally:
        source.close()
    with torch.no_grad():
        out = model.forward(torch.tensor(ids), model.new_cache(len(ids) + 1), all_logits=True)
    model.close()
    return out.float().numpy()


def _hf_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float().numpy()


def _agreement(got: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    top1 = float((got.argmax(-1) == ref.argmax(-1)).mean())
    return rel, top1


@pytest.mark.parametrize(
    "arch,gguf_type",
    [(a, "f32") for a in ARCHES] + [("qwen2_moe", "f16")],
)
def test_llamacpp_logits_agree_with_engine_and_transformers(tiny, tmp_path, arch, gguf_type):
    model_dir = tiny(arch, ARCHES[arch])
    ids = _ids(model_dir)
    gguf = export_gguf(model_dir, tmp_path / f"{arch}.{gguf_type}.gguf", gguf_type, False)
    got = _llamacpp_logits(gguf, ids)
    for name, ref in (
        ("engine", _engine_logits(model_dir, ids)),
        ("hf", _hf_logits(model_dir, ids)),
    ):
        rel, top1 = _agreement(got, ref)
        print(f"{arch} {gguf_type} llama.cpp vs {name}: rel {rel:.2e}, top-1 {top1:.3f}")
        assert top1 >= MIN_TOP1, (name, top1)
        assert rel <= MAX_REL, (name, rel)
        if gguf_type == "f32":
            assert rel <= EXACT_REL, (name, rel)


def test_default_llamacpp_settings_stay_within_the_criterion(tiny, tmp_path):
    """Qwen2-MoE F16 with llama.cpp's own defaults (F16 KV cache, flash attention auto)."""
    model_dir = tiny("qwen2_moe")
    ids = _ids(model_dir)
    gguf = export_gguf(model_dir, tmp_path / "q.f16.gguf", "f16", False)
    rel, top1 = _agreement(_llamacpp_logits(gguf, ids, exact=False), _engine_logits(model_dir, ids))
    print(f"qwen2_moe f16, llama.cpp defaults vs engine: rel {rel:.2e}, top-1 {top1:.3f}")
    assert top1 >= MIN_TOP1 and rel <= MAX_REL


@pytest.mark.parametrize("arch", ["qwen2_moe", "deepseek_v3"])
def test_vocab_limited_timing_copy_computes_the_same_hidden_states(tiny, tmp_path, arch):
    """The prefill timing copy (first V head rows, stand-in vocabulary) is the same network:
    on ids below V its logits are the full export's first V columns, at every position."""
    model_dir = tiny(arch, ARCHES[arch])
    vocab = 300
    ids = [t % vocab for t in _ids(model_dir)]
    full = _llamacpp_logits(export_gguf(model_dir, tmp_path / "full.gguf", "f32", False), ids)
    cut_path = export_gguf(model_dir, tmp_path / "cut.gguf", "f32", False, vocab_limit=vocab)
    cut = _llamacpp_logits(cut_path, ids)
    assert cut.shape == (len(ids), vocab)
    np.testing.assert_allclose(cut, full[:, :vocab], rtol=1e-4, atol=1e-4 * np.abs(full).max())
    with pytest.raises(ValueError, match="vocab_limit"):
        export_gguf(model_dir, tmp_path / "bad.gguf", "f16", False, vocab_limit=100)


def test_group_limit_selecting_every_group_is_not_written(tiny, tmp_path):
    """topk_group == n_group used to be written as such: llama.cpp then aborted the process
    (GGML_ASSERT n_group_used < n_expert_groups). A limit that selects every group is no
    limit, so the keys are left out and the model matches the engine."""
    model_dir = tiny("deepseek_v3", {"n_group": 8, "topk_group": 8})
    gguf = export_gguf(model_dir, tmp_path / "g.f32.gguf", "f32", False)
    reader = GGUFReader(gguf)
    assert reader.get_field("deepseek2.expert_group_count") is None
    assert reader.get_field("deepseek2.expert_group_used_count") is None
    ids = _ids(model_dir)
    rel, top1 = _agreement(_llamacpp_logits(gguf, ids), _engine_logits(model_dir, ids))
    assert rel <= EXACT_REL and top1 >= MIN_TOP1


@pytest.mark.parametrize("arch", list(ARCHES))
@pytest.mark.parametrize("out_type,ftype,max_rel", [("q8_0", 7, 0.10), ("q4_0", 2, 0.40)])
def test_llamacpp_quantizer_exports_load_and_run(tiny, tmp_path, arch, out_type, ftype, max_rel):
    """q8_0/q4_0 quantized by llama.cpp itself from the cached F16 export, which is reused."""
    model_dir = tiny(arch, ARCHES[arch])
    cache = tmp_path / "cache"
    path = export_gguf_cached(model_dir, out_type, cache, quantizer="llama.cpp")
    f16 = export_gguf_cached(model_dir, "f16", cache, quantizer="llama.cpp")
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, f16.name])
    stamp = path.stat().st_mtime_ns
    assert export_gguf_cached(model_dir, out_type, cache, quantizer="llama.cpp") == path
    assert path.stat().st_mtime_ns == stamp
    reader = GGUFReader(path)
    assert int(reader.get_field("general.file_type").contents()) == ftype
    ids = _ids(model_dir)
    rel, top1 = _agreement(_llamacpp_logits(path, ids), _engine_logits(model_dir, ids))
    print(f"{arch} {out_type} (llama.cpp quantizer) vs engine: rel {rel:.3f}, top-1 {top1:.3f}")
    assert rel <= max_rel


def test_extra_buffers_off_reaches_llamacpp(tiny, tmp_path):
    """``extra_buffers: false`` (--no-repack) leaves every weight in the plain CPU buffer:
    no CPU_REPACK or AMX model buffer in llama.cpp's load log, and the model still runs."""
    model_dir = tiny("qwen2_moe")
    gguf = export_gguf_cached(model_dir, "q8_0", tmp_path, quantizer="llama.cpp")
    model = LlamaCppModel(gguf, plan_placement("cpu", False, threads=1, extra_buffers=False))
    try:
        assert set(buffers_from_log(model.load_log)["model"]) == {"CPU"}
        ids = _ids(model_dir)[:16]
        model.ensure_context(len(ids) + 1, len(ids))
        model.prepare(ids, 0)
        model.run()
        assert np.isfinite(model.logits()).all()
    finally:
        model.close()


def test_tensor_overrides_reach_llamacpp(tiny, tmp_path):
    """The ``-ot exps=CPU`` table built with ctypes is the one llama.cpp applies (on a CPU
    build the CPU is the only buffer type, but every routed-expert tensor is reported)."""
    model_dir = tiny("qwen2_moe")
    gguf = export_gguf_cached(model_dir, "f16", tmp_path)
    placement = Placement("gpu", 0, ("exps",), kv_on_cpu=True, threads=1, use_mmap=False)
    model = LlamaCppModel(gguf, placement)
    try:
        layers = json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]
        assert overridden_tensors(model.load_log) == {"CPU": 3 * layers}
        model.ensure_context(16, 16)
        assert model.actual["op_offload"] is True  # llama.cpp's default
    finally:
        model.close()
    placement = Placement("gpu", 0, ("exps",), True, threads=1, use_mmap=False, op_offload=False)
    model = LlamaCppModel(gguf, placement)
    try:
        model.ensure_context(16, 16)
        assert model.actual["op_offload"] is False  # --no-op-offload reached the context
    finally:
        model.close()


def test_unsupported_architecture_is_named(tmp_path):
    d = tmp_path / "mixtral"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"]})
    )
    with pytest.raises(UnsupportedModelError, match="MixtralForCausalLM"):
        export_gguf_cached(d, "q8_0", tmp_path / "cache")


@pytest.mark.parametrize(
    "damage,reason",
    [
        ("truncate", "not within the file bounds"),
        ("magic", "invalid magic"),
        ("arch", "unknown model architecture"),
    ],
)
def test_llamacpp_refusal_carries_its_reason(tiny, tmp_path, damage, reason):
    good = export_gguf_cached(tiny("qwen2_moe"), "q8_0", tmp_path / "c").read_bytes()
    if damage == "truncate":
        data = good[: len(good) // 2]
    elif damage == "magic":
        data = b"XXXX" + good[4:]
    else:
        data = good.replace(b"qwen2moe", b"qwen9moe")
    bad = tmp_path / f"{damage}.gguf"
    bad.write_bytes(data)
    with pytest.raises(LlamaCppError, match=reason) as info:
        LlamaCppModel(bad, plan_placement("cpu", False))
    assert bad.name in str(info.value)


def test_cli_export_gguf_is_cached(tiny, hmoe):
    model_dir = tiny("deepseek_v3")
    first = hmoe("export-gguf", str(model_dir), "--type", "q4_0", "--no-progress")
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == model_dir / ".gguf_cache"
    again = hmoe("export-gguf", str(model_dir), "--type", "q4_0", "--no-progress")
    assert again.stdout.strip().splitlines()[-1] == str(path)
    bad = hmoe("export-gguf", str(model_dir), "--type", "q5_k")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    cut = hmoe("export-gguf", str(model_dir), "--type", "q4_0", "--vocab-limit", "512")
    assert cut.returncode == 0, cut.stderr
    cut_path = Path(cut.stdout.strip().splitlines()[-1])
    assert cut_path != path and "-q4_0-v512-" in cut_path.name and cut_path.is_file()
    too_small = hmoe("export-gguf", str(model_dir), "--vocab-limit", "10")
    assert too_small.returncode != 0 and "vocab_limit must be" in too_small.stderr

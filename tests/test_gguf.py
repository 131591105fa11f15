"""GGUF export + GGUFSource round trips on tiny random Qwen2-MoE / DeepSeek-V2 / DeepSeek-V3 models.

Models come from transformers' own config classes, saved with save_pretrained together
with a small byte-level BPE tokenizer.json. Each is exported to GGUF and read back: names,
shapes, values (within each format's error), the rebuilt config and llama.cpp's metadata
keys are checked, the tensor names against gguf-py's own llama.cpp name table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from baselines.llamacpp.gguf_export import export_gguf, export_gguf_cached, pre_tokenizer_name
from engine.errors import UnsupportedModelError, WeightsError
from engine.loaders import gguf_names
from engine.loaders.fp8 import quantize_fp8_block
from engine.loaders.gguf_source import GGUFSource

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB = 320
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]
COMMON: dict[str, Any] = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    moe_intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_experts_per_tok=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
)
MLA: dict[str, Any] = dict(
    num_key_value_heads=4,
    n_routed_experts=4,
    n_shared_experts=1,
    first_k_dense_replace=1,
    kv_lora_rank=32,
    qk_nope_head_dim=32,
    qk_rope_head_dim=16,
    v_head_dim=32,
)
YARN = dict(
    rope_type="yarn",
    rope_theta=10000.0,
    factor=4.0,
    original_max_position_embeddings=64,
    beta_fast=32.0,
    beta_slow=1.0,
    mscale=0.707,
    mscale_all_dim=0.707,
)


def _config(kind: str) -> Any:
    if kind == "qwen2moe":
        return transformers.Qwen2MoeConfig(
            **COMMON,
            num_key_value_heads=2,
            num_experts=4,
            shared_expert_intermediate_size=64,
            norm_topk_prob=False,
            rope_theta=1e6,
        )
    if kind == "ds2":
        return transformers.DeepseekV2Config(
            **COMMON,
            **MLA,
            q_lora_rank=32,
            n_group=2,
            topk_group=1,
            topk_method="group_limited_greedy",
            routed_scaling_factor=2.0,
            rope_parameters=dict(YARN),
        )
    if kind == "ds2_noq":
        return transformers.DeepseekV2Config(  # kv_lora 24: rows that do not fit quant blocks
            **COMMON,
            **{**MLA, "kv_lora_rank": 24},
            q_lora_rank=None,
            topk_method="greedy",
            routed_scaling_factor=1.0,
        )
    return transformers.DeepseekV3Config(
        **COMMON,
        **MLA,
        q_lora_rank=32,
        n_group=2,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    )


KINDS = ("qwen2moe", "ds2", "ds2_noq", "ds3")


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = ["the quick brown fox jumps over the lazy dog", "mixture of experts on cpu and gpu"] * 50
    tok.train_from_iterator(text, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|bos|>", "eos_token": "<|eos|>", "add_bos_token": False})
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for i, kind in enumerate(KINDS):
        torch.manual_seed(i)
        model = transformers.AutoModelForCausalLM.from_config(_config(kind))
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.normal_()
        d = tmp_path_factory.mktemp(kind)
        model.save_pretrained(d)
        _tokenizer(d)
        out[kind] = d
    return out


@pytest.fixture(scope="module")
def exports(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("gguf")

    def get(kind: str, out_type: str) -> Path:
        if (kind, out_type) not in cache:
            cache[kind, out_type] = export_gguf(
                models[kind], root / f"{kind}-{out_type}.gguf", out_type, progress=False
            )
        return cache[kind, out_type]

    return get


def _hf_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not iterable


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


# -- values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("out_type", ["f32", "f16", "q8_0", "q4_0"])
def test_roundtrip_names_shapes_values(kind, out_type, models, exports):
    ref = _hf_tensors(models[kind])
    with GGUFSource(exports(kind, out_type)) as src:
        assert set(src.names()) == set(ref), set(src.names()) ^ set(ref)
        worst: dict[str, float] = {}
        for name, want in ref.items():
            assert src.shape(name) == tuple(want.shape), name
            got = src.load(name)
            assert got.dtype == torch.float32 and tuple(got.shape) == tuple(want.shape), name
            stored = src.gguf_type(name)
            if stored == "F32":
                assert torch.equal(got, want.float()), name
            elif stored == "F16":
                assert torch.equal(got, want.half().float()), name
            else:
                worst[stored] = max(worst.get(stored, 0.0), _rel_err(got, want))
    expected_quant = {"q8_0": "Q8_0", "q4_0": "Q4_0"}.get(out_type)
    if expected_quant:
        assert expected_quant in worst, "no tensor was quantized"
    assert worst.get("Q8_0", 0.0) < 0.01, worst
    assert worst.get("Q4_0", 0.0) < 0.10, worst


def test_bf16_export(models, exports):
    ref = _hf_tensors(models["ds3"])
    with GGUFSource(exports("ds3", "bf16")) as src:
        name = "model.layers.1.mlp.experts.3.down_proj.weight"
        assert src.gguf_type(name) == "BF16"
        assert torch.equal(src.load(name), ref[name].bfloat16().float())
        assert src.load(name, torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["qwen2moe", "ds3"])
def test_load_stacked_matches_per_expert(kind, exports):
    with GGUFSource(exports(kind, "q8_0")) as src:
        n_exp = 4
        for proj in ("gate", "up", "down"):
            stacked = src.load_stacked(1, proj)
            one = src.load(gguf_names.hf_expert_name(1, 0, proj))
            assert stacked.shape == (n_exp, *one.shape)
            for e in range(n_exp):
                assert torch.equal(stacked[e], src.load(gguf_names.hf_expert_name(1, e, proj)))
        assert torch.equal(src.load_stacked(1, "gate_proj"), src.load_stacked(1, "gate"))
        with pytest.raises(WeightsError, match="ffn_gate_exps"):
            src.load_stacked(7, "gate")


# -- llama.cpp layout and metadata ----------------------------------------------------------
def _reader_tensors(path: Path) -> dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _ne(t: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in t.shape)


def test_expert_and_mla_tensor_dims_match_llama_cpp(exports):
    """ggml ne of each tensor as llama.cpp's create_tensor calls ask for them."""
    n_embd, n_ff_exp, n_exp, heads = 64, 32, 4, 4
    q = _reader_tensors(exports("qwen2moe", "f16"))
    assert _ne(q["blk.1.ffn_gate_exps.weight"]) == (n_embd, n_ff_exp, n_exp)
    assert _ne(q["blk.1.ffn_up_exps.weight"]) == (n_embd, n_ff_exp, n_exp)
    assert _ne(q["blk.1.ffn_down_exps.weight"]) == (n_ff_exp, n_embd, n_exp)
    assert _ne(q["blk.1.ffn_gate_inp.weight"]) == (n_embd, n_exp)
    assert _ne(q["blk.1.ffn_gate_inp_shexp.weight"])[0] == n_embd
    assert _ne(q["blk.0.attn_k.weight"]) == (n_embd, 2 * 16)
    assert "output.weight" in q

    d = _reader_tensors(exports("ds3", "f16"))
    kv_lora, nope, rope, v = 32, 32, 16, 32
    assert _ne(d["blk.0.attn_k_b.weight"]) == (nope, kv_lora, heads)
    assert _ne(d["blk.0.attn_v_b.weight"]) == (kv_lora, v, heads)
    assert _ne(d["blk.0.attn_kv_a_mqa.weight"]) == (n_embd, kv_lora + rope)
    assert _ne(d["blk.0.attn_q_b.weight"]) == (32, heads * (nope + rope))
    assert _ne(d["blk.0.attn_output.weight"]) == (heads * v, n_embd)
    assert _ne(d["blk.0.ffn_gate.weight"]) == (n_embd, 96)
    assert _ne(d["blk.1.exp_probs_b.bias"]) == (n_exp,)
    assert _ne(d["blk.1.ffn_gate_shexp.weight"]) == (n_embd, n_ff_exp * 1)
    assert "blk.0.attn_kv_b.weight" not in d and "blk.0.ffn_gate_inp.weight" not in d

    nq = _reader_tensors(exports("ds2_noq", "f16"))
    assert _ne(nq["blk.0.attn_q.weight"]) == (n_embd, heads * (nope + rope))
    assert not any("attn_q_a" in n for n in nq)


def test_tensor_types_follow_converter(exports):
    types = {
        n: gguf.GGMLQuantizationType(t.tensor_type).name
        for n, t in _reader_tensors(exports("ds3", "q4_0")).items()
    }
    assert types["blk.1.ffn_gate_exps.weight"] == "Q4_0"
    assert types["token_embd.weight"] == "Q4_0"
    assert types["output.weight"] == "Q8_0"
    for name in (
        "blk.1.ffn_gate_inp.weight",
        "blk.1.exp_probs_b.bias",
        "blk.0.attn_norm.weight",
        "blk.0.attn_kv_a_norm.weight",
        "output_norm.weight",
    ):
        assert types[name] == "F32", name
    assert types["blk.0.attn_q_a.weight"] == "Q4_0"
    types = {
        n: gguf.GGMLQuantizationType(t.tensor_type).name
        for n, t in _reader_tensors(exports("ds2_noq", "q8_0")).items()
    }
    assert types["blk.0.attn_k_b.weight"] == "Q8_0"  # rows of qk_nope = 32
    assert types["blk.0.attn_v_b.weight"] == "F16"  # rows of kv_lora = 24: F16 like the converter
    assert types["blk.0.attn_q.weight"] == "Q8_0"


def test_names_agree_with_gguf_tensor_mapping(models):
    """Our HF->GGUF table agrees with gguf-py's (llama.cpp's) own name map wherever it has one."""
    for kind, arch in (
        ("qwen2moe", gguf.MODEL_ARCH.QWEN2MOE),
        ("ds3", gguf.MODEL_ARCH.DEEPSEEK2),
        ("ds2_noq", gguf.MODEL_ARCH.DEEPSEEK2),
    ):
        tmap = gguf.get_tensor_name_map(arch, 2)
        arch_name = gguf.MODEL_ARCH_NAMES[arch]
        checked = 0
        for hf in _hf_tensors(models[kind]):
            ours = gguf_names.hf_to_gguf(arch_name, hf)
            if ours is None:
                assert gguf_names.parse_hf_expert(hf) is not None, hf
                continue
            key = hf.replace("e_score_correction_bias", "e_score_correction.bias")
            theirs = tmap.get_name(key, try_suffixes=(".weight", ".bias"))
            assert theirs == ours, (hf, ours, theirs)
            assert gguf_names.gguf_to_hf(arch_name, ours) == hf
            checked += 1
        assert checked > 10
        for proj in gguf_names.EXPERT_PROJS:
            merged = f"model.layers.1.mlp.experts.{proj}_proj"
            assert tmap.get_name(merged) + ".weight" == gguf_names.gguf_experts_name(1, proj)


def _fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.mark.parametrize("kind", KINDS)
def test_llama_cpp_metadata(kind, models, exports):
    cfg = json.loads((models[kind] / "config.json").read_text())
    f = _fields(exports(kind, "f16"))
    arch = "qwen2moe" if kind == "qwen2moe" else "deepseek2"
    n_exp = cfg.get("num_experts", cfg.get("n_routed_experts"))
    assert f["general.architecture"] == arch
    assert f["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert f[f"{arch}.block_count"] == cfg["num_hidden_layers"]
    assert f[f"{arch}.expert_count"] == n_exp
    assert f[f"{arch}.expert_used_count"] == cfg["num_experts_per_tok"]
    assert f[f"{arch}.embedding_length"] == cfg["hidden_size"]
    assert f[f"{arch}.attention.head_count"] == cfg["num_attention_heads"]
    assert f[f"{arch}.expert_feed_forward_length"] == cfg["moe_intermediate_size"]
    assert f[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    tok = json.loads((models[kind] / "tokenizer.json").read_text())
    assert f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.pre"] == "gpt-2"
    tokens = f["tokenizer.ggml.tokens"]
    assert len(tokens) == VOCAB
    for t, i in tok["model"]["vocab"].items():
        assert tokens[i] == t
    assert f["tokenizer.ggml.merges"] == [
        m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]
    ]
    types = f["tokenizer.ggml.token_type"]
    assert types[0] == gguf.TokenType.CONTROL and types[VOCAB - 1] == gguf.TokenType.UNUSED
    assert types[100] == gguf.TokenType.NORMAL
    assert f["tokenizer.ggml.bos_token_id"] == 0 and f["tokenizer.ggml.eos_token_id"] == 1
    assert f["tokenizer.ggml.add_bos_token"] is False
    if arch == "deepseek2":
        assert f["deepseek2.leading_dense_block_count"] == 1
        kv_lora = cfg["kv_lora_rank"]
        assert f["deepseek2.attention.kv_lora_rank"] == kv_lora
        assert f["deepseek2.attention.q_lora_rank"] == (cfg["q_lora_rank"] or 0)
        assert f["deepseek2.attention.head_count_kv"] == 1
        assert f["deepseek2.attention.key_length"] == kv_lora + 16
        assert f["deepseek2.attention.value_length"] == kv_lora
        assert f["deepseek2.attention.key_length_mla"] == 32 + 16
        assert f["deepseek2.attention.value_length_mla"] == 32
        assert f["deepseek2.rope.dimension_count"] == 16
        assert f["deepseek2.expert_shared_count"] == 1
        assert f["deepseek2.expert_weights_scale"] == pytest.approx(cfg["routed_scaling_factor"])
        gating = (
            gguf.ExpertGatingFuncType.SIGMOID
            if kind == "ds3"
            else gguf.ExpertGatingFuncType.SOFTMAX
        )
        assert f["deepseek2.expert_gating_func"] == gating
        assert f.get("deepseek2.expert_weights_norm", False) is (kind == "ds3")
        assert f.get("deepseek2.expert_group_count") == (None if kind == "ds2_noq" else 2)
    else:
        assert f["qwen2moe.attention.head_count_kv"] == 2
        assert f["qwen2moe.expert_shared_feed_forward_length"] == 64
        assert f["qwen2moe.rope.freq_base"] == pytest.approx(1e6)
    if kind == "ds2":
        assert f["deepseek2.rope.scaling.type"] == "yarn"
        assert f["deepseek2.rope.scaling.factor"] == pytest.approx(4.0)
        assert f["deepseek2.rope.scaling.original_context_length"] == 64
        assert f["deepseek2.rope.scaling.yarn_log_multiplier"] == pytest.approx(0.0707)


# -- config round trip ----------------------------------------------------------------------
MODEL_FIELDS = (
    "architectures",
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "rms_norm_eps",
    "max_position_embeddings",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
)
QWEN_FIELDS = (
    "num_experts",
    "shared_expert_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
)
DS_FIELDS = (
    "n_routed_experts",
    "n_shared_experts",
    "first_k_dense_replace",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "routed_scaling_factor",
    "norm_topk_prob",
)


@pytest.mark.parametrize("kind", KINDS)
def test_config_roundtrip(kind, models, exports):
    want = json.loads((models[kind] / "config.json").read_text())
    with GGUFSource(exports(kind, "q8_0")) as src:
        got = src.config
    fields = MODEL_FIELDS + (QWEN_FIELDS if kind == "qwen2moe" else DS_FIELDS)
    for key in fields:
        assert got[key] == pytest.approx(want[key]), key
    assert got["rope_parameters"]["rope_theta"] == pytest.approx(
        want["rope_parameters"]["rope_theta"]
    )
    assert got["rope_theta"] == got["rope_parameters"]["rope_theta"]
    if kind == "ds2":
        for key in (
            "factor",
            "original_max_position_embeddings",
            "beta_fast",
            "beta_slow",
            "mscale",
            "mscale_all_dim",
        ):
            assert got["rope_scaling"][key] == pytest.approx(YARN[key]), key
        assert got["rope_parameters"]["rope_type"] == "yarn"
        assert (got["n_group"], got["topk_group"], got["topk_method"]) == (
            2,
            1,
            "group_limited_greedy",
        )
        assert got["scoring_func"] == "softmax"
    if kind == "ds2_noq":
        assert got["rope_scaling"] is None and got["topk_method"] == "greedy"
    if kind == "ds3":
        assert (got["scoring_func"], got["topk_method"]) == ("sigmoid", "noaux_tc")
        assert (got["n_group"], got["topk_group"]) == (2, 1)
    if kind == "qwen2moe":
        assert got["qkv_bias"] is True


def test_legacy_fused_kv_b(models, exports, tmp_path):
    path = export_gguf(
        models["ds2"], tmp_path / "legacy.gguf", "f32", progress=False, legacy_kv_b=True
    )
    f = _fields(path)
    assert f["deepseek2.attention.head_count_kv"] == 4
    assert (
        f["deepseek2.attention.key_length"] == 48 and "deepseek2.attention.key_length_mla" not in f
    )
    assert _ne(_reader_tensors(path)["blk.0.attn_kv_b.weight"]) == (32, 4 * (32 + 32))
    name = "model.layers.1.self_attn.kv_b_proj.weight"
    with GGUFSource(path) as legacy, GGUFSource(exports("ds2", "f32")) as split:
        assert torch.equal(legacy.load(name), split.load(name))
        assert legacy.config["qk_nope_head_dim"] == split.config["qk_nope_head_dim"] == 32
        assert legacy.config["v_head_dim"] == 32


# -- FP8 source checkpoints -----------------------------------------------------------------
def test_export_dequantizes_fp8_checkpoint(models, tmp_path):
    src_dir = tmp_path / "ds3_fp8"
    src_dir.mkdir()
    tensors = _hf_tensors(models["ds3"])
    block = (16, 16)
    fp8: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    out = {}
    for name, t in tensors.items():
        if t.dim() == 2 and "proj" in name:
            q, s = quantize_fp8_block(t, block)
            fp8[name] = (q, s)
            out[name], out[name + "_scale_inv"] = q, s
        else:
            out[name] = t
    save_file(out, str(src_dir / "model.safetensors"))
    cfg = json.loads((models["ds3"] / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "weight_block_size": list(block)}
    (src_dir / "config.json").write_text(json.dumps(cfg))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (src_dir / f).write_bytes((models["ds3"] / f).read_bytes())
    with GGUFSource(export_gguf(src_dir, tmp_path / "fp8.gguf", "f32", progress=False)) as src:
        assert not any(n.endswith("_scale_inv") for n in src.names())
        for name, (q, s) in fp8.items():
            want = (
                q.float()
                * s.repeat_interleave(16, 0)[: q.shape[0]].repeat_interleave(16, 1)[:, : q.shape[1]]
            )
            assert torch.equal(src.load(name), want), name
            assert _rel_err(src.load(name), tensors[name]) < 0.06, name


# -- caching --------------------------------------------------------------------------------
def test_export_cached_reuses_and_invalidates(models, tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    for f in models["qwen2moe"].iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    cache = tmp_path / "cache"
    first = export_gguf_cached(d, "q8_0", cache_dir=cache)
    stamp = first.stat().st_mtime_ns
    assert export_gguf_cached(d, "q8_0", cache_dir=cache) == first
    assert first.stat().st_mtime_ns == stamp
    other_type = export_gguf_cached(d, "f16", cache_dir=cache)
    assert other_type != first
    cfg = json.loads((d / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (d / "config.json").write_text(json.dumps(cfg))
    changed = export_gguf_cached(d, "q8_0", cache_dir=cache)
    assert changed != first and changed.is_file()
    with GGUFSource(changed) as src:
        assert src.config["rms_norm_eps"] == pytest.approx(1e-6)
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]
    default = export_gguf_cached(d, "q8_0")
    assert default.parent == d / ".gguf_cache"


# -- malformed inputs -----------------------------------------------------------------------
def test_truncated_gguf(exports, tmp_path):
    good = exports("ds3", "q8_0")
    data = good.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 40):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(WeightsError, match=str(bad.name)):
            GGUFSource(bad)


def test_not_a_gguf_and_missing_file(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(WeightsError, match="junk.gguf"):
        GGUFSource(junk)
    with pytest.raises(WeightsError, match="absent.gguf"):
        GGUFSource(tmp_path / "absent.gguf")


def test_wrong_arch_gguf(tmp_path):
    path = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match=r"llama\.gguf.*'llama'"):
        GGUFSource(path)


def test_missing_tensor(exports):
    with GGUFSource(exports("qwen2moe", "f16")) as src:
        with pytest.raises(WeightsError, match=r"model\.layers\.9\.self_attn\.q_proj\.weight"):
            src.load("model.layers.9.self_attn.q_proj.weight")
        with pytest.raises(WeightsError, match="experts.17"):
            src.shape("model.layers.1.mlp.experts.17.up_proj.weight")


def test_gguf_missing_required_tensor_pair(exports, tmp_path):
    """A split-MLA file with attn_v_b dropped names the missing tensor."""
    reader = gguf.GGUFReader(exports("ds3", "f32"))
    path = tmp_path / "nov.gguf"
    w = gguf.GGUFWriter(path, "deepseek2")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(key, field.contents())
        else:
            w.add_key_value(key, field.contents(), vtype)
    for t in reader.tensors:
        if t.name != "blk.0.attn_v_b.weight":
            w.add_tensor(
                t.name, np.array(t.data), raw_dtype=gguf.GGMLQuantizationType(t.tensor_type)
            )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(WeightsError, match=r"blk\.0\.attn_v_b\.weight"):
        GGUFSource(path)


def test_export_unsupported_arch(tmp_path):
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        export_gguf(tmp_path, tmp_path / "x.gguf", progress=False)
    assert not (tmp_path / "x.gguf").exists()


def test_export_missing_expert(models, tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    tensors = _hf_tensors(models["qwen2moe"])
    del tensors["model.layers.1.mlp.experts.2.up_proj.weight"]
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_bytes((models["qwen2moe"] / "config.json").read_bytes())
    with pytest.raises(WeightsError, match=r"model\.layers\.1\.mlp\.experts\.2\.up_proj\.weight"):
        export_gguf(d, tmp_path / "b.gguf", "f16", progress=False)
    assert not [p for p in os.listdir(tmp_path) if p.startswith("b.gguf")]


def test_export_that_cannot_fit_fails_before_writing(models, exports, tmp_path, monkeypatch):
    """A full disk fails at once, naming the sizes, not minutes later inside a writer; the
    planned size is the file's real size, and nothing is left behind."""
    from collections import namedtuple

    from baselines.llamacpp import disk_space
    from baselines.llamacpp.disk_space import DiskSpaceError
    from baselines.llamacpp.gguf_export import quantize_with_llamacpp

    real = exports("qwen2moe", "f16").stat().st_size
    usage = namedtuple("usage", "total used free")
    seen: list[int] = []

    def disk_usage(path):
        seen.append(1)
        return usage(1 << 40, 0, real)  # the tensors fit, the slack does not

    monkeypatch.setattr(disk_space.shutil, "disk_usage", disk_usage)
    out = tmp_path / "sub" / "x.gguf"
    with pytest.raises(DiskSpaceError, match=r"x\.gguf: it needs about .* GiB, only .* free"):
        export_gguf(models["qwen2moe"], out, "f16", progress=False)
    assert seen and not (tmp_path / "sub").exists()
    big = tmp_path / "big-f16.gguf"
    with big.open("wb") as f:
        f.truncate(8 << 30)  # sparse: 8 GiB of F16 make about 4.25 GiB of Q8_0
    monkeypatch.setattr(disk_space.shutil, "disk_usage", lambda p: usage(1 << 40, 0, 4 << 30))
    with pytest.raises(DiskSpaceError, match="q8_0 quantization"):
        quantize_with_llamacpp(big, tmp_path / "big-q8_0.gguf", "q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big-f16.gguf"]
    with pytest.raises(WeightsError, match="does not exist"):
        quantize_with_llamacpp(tmp_path / "missing.gguf", tmp_path / "m.gguf", "q8_0")


def test_export_bad_out_type(models, tmp_path):
    with pytest.raises(ValueError, match="q5_k"):
        export_gguf(models["qwen2moe"], tmp_path / "x.gguf", "q5_k", progress=False)


# -- tokenizer metadata helpers -------------------------------------------------------------
def test_pre_tokenizer_names():
    from baselines.llamacpp.gguf_export import QWEN2_PRE_REGEX

    qwen = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PRE_REGEX}, "behavior": "Isolated"},
                {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
            ],
        }
    }
    assert pre_tokenizer_name(qwen) == "qwen2"
    v3 = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r"\p{N}{1,3}"}},
                {"type": "Split", "pattern": {"Regex": "[一-龥\u3040-ゟ゠-ヿ]+"}},
                {"type": "ByteLevel", "use_regex": False},
            ],
        }
    }
    assert pre_tokenizer_name(v3) == "deepseek-v3"
    v2 = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": "[\r\n]"}},
                {"type": "Split", "pattern": {"Regex": r"\s?[A-Za-zµÀ-ÖØ-öø-ƺ]+"}},
                {"type": "Split", "pattern": {"Regex": "[一-龥ࠀ-一가-퟿]+"}},
                {"type": "ByteLevel", "use_regex": False},
            ],
        }
    }
    assert pre_tokenizer_name(v2) == "deepseek-llm"
    assert (
        pre_tokenizer_name({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    )
    assert pre_tokenizer_name({"pre_tokenizer": None}) == "default"

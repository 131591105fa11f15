"""Tests of the Fiddler baseline on tiny random Qwen2-MoE, DeepSeek-V2 and DeepSeek-V3 models.

Each tiny model is built with transformers' own config class, saved as a real checkpoint
directory (config.json + safetensors + a byte-level tokenizer) and loaded back through
FiddlerSystem; the reference is a plain transformers model on the same weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DeepseekV2Config,
    DeepseekV3Config,
    PreTrainedTokenizerFast,
    Qwen2MoeConfig,
)

from baselines.fiddler import FiddlerConfig, FiddlerSystem
from baselines.hf_placement import (
    LAYOUT_FUSED,
    LAYOUT_MODULE_LIST,
    _move,
    find_routed_experts,
)
from engine.errors import WeightsError
from experiments.system_api import ModelSpec, Sampling, SystemUnavailable

VOCAB = 512
EOS = 256
LAYERS = 3
DENSE_LAYERS = 1
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=96,
    moe_intermediate_size=32,
    num_hidden_layers=LAYERS,
    num_attention_heads=4,
    max_position_embeddings=256,
    bos_token_id=None,
    eos_token_id=EOS,
    pad_token_id=None,
)
MLA = dict(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16)
CONFIGS = {
    "qwen2_moe": lambda: Qwen2MoeConfig(
        **COMMON,
        num_key_value_heads=2,
        shared_expert_intermediate_size=48,
        num_experts=8,
        num_experts_per_tok=2,
        mlp_only_layers=list(range(DENSE_LAYERS)),
    ),
    "deepseek_v2": lambda: DeepseekV2Config(
        **COMMON,
        **MLA,
        num_key_value_heads=4,
        q_lora_rank=None,
        n_routed_experts=16,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=DENSE_LAYERS,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
    ),
    "deepseek_v3": lambda: DeepseekV3Config(
        **COMMON,
        **MLA,
        num_key_value_heads=4,
        q_lora_rank=24,
        n_routed_experts=16,
        num_experts_per_tok=4,
        n_shared_experts=1,
        first_k_dense_replace=DENSE_LAYERS,
        n_group=4,
        topk_group=2,
    ),
}
ARCHS = sorted(CONFIGS)
PROMPT = [5, 17, 99, 300, 42, 7, 256 - 1, 128, 64, 3, 511]


def _save_tokenizer(path: Path) -> None:
    """A byte-level tokenizer whose vocabulary covers the model's 512 ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<eos>"] = EOS
    vocab.update({f"<t{i}>": i for i in range(EOS + 1, VOCAB)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<eos>"])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(path)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fiddler_models")
    dirs = {}
    for arch, make_config in CONFIGS.items():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(make_config())
        with torch.no_grad():  # larger weights than the init so that routing is not uniform
            for p in model.parameters():
                p.normal_(0, 0.2)
        dirs[arch] = root / arch
        model.save_pretrained(dirs[arch])
        _save_tokenizer(dirs[arch])
    return dirs


def _spec(path: Path) -> ModelSpec:
    return ModelSpec(
        key="tiny",
        paper_model="qw2",
        name=path.name,
        architecture=path.name,
        path=path,
        source="synthetic-tiny",
        synthetic=True,
        layers_run=LAYERS,
        layers_total=LAYERS,
    )


def _plain(path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, experts_implementation="eager")
    return model.eval()


def _cpu_system(path: Path, precision: str = "fp32") -> FiddlerSystem:
    system = FiddlerSystem({"device": "cpu", "impl": "baselines.fiddler:FiddlerSystem"})
    system.load(_spec(path), precision)
    return system


@torch.inference_mode()
def _greedy_reference(model: nn.Module, prompt: list[int], n: int) -> list[int]:
    """Greedy continuation by full forwards without a KV cache."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_and_decode_match_plain_transformers(model_dirs, arch):
    system = _cpu_system(model_dirs[arch])
    plain = _plain(model_dirs[arch])
    with torch.inference_mode():
        expected = plain(torch.tensor([PROMPT])).logits[0]
    torch.testing.assert_close(system.forward_logits(PROMPT), expected, rtol=1e-5, atol=1e-5)
    timing = system.decode(PROMPT, 6)
    assert list(timing.token_ids) == _greedy_reference(plain, PROMPT, 6)
    assert (timing.prompt_tokens, timing.decode_tokens) == (len(PROMPT), 6)
    assert timing.prefill_seconds > 0 and timing.decode_seconds > 0
    system.close()


def test_prefill_timing_and_describe(model_dirs):
    system = _cpu_system(model_dirs["qwen2_moe"])
    timing = system.prefill(PROMPT)
    assert timing.tokens == len(PROMPT) and timing.seconds > 0
    facts = system.describe()
    experts = find_routed_experts(system._model)
    expert_params = sum(p.numel() for group in experts for p in group.parameters())
    assert facts["expert_params_by_device"] == {"cpu": expert_params}
    assert facts["moe_layers"] == LAYERS - DENSE_LAYERS
    assert facts["dtype"] == "float32" and facts["device"] == "cpu"
    assert facts["experts_implementation"] == "eager"
    assert facts["architecture"] == "Qwen2MoeForCausalLM"
    assert facts["torch_threads"] == torch.get_num_threads()
    assert facts["module_types_by_device"]["Qwen2MoeExperts"] == ["cpu"]
    system.close()
    assert system.describe()["loaded"] is False
    with pytest.raises(RuntimeError, match="load"):
        system.prefill(PROMPT)


def test_unsupported_requests_raise_system_unavailable(model_dirs):
    system = _cpu_system(model_dirs["deepseek_v3"])
    with pytest.raises(SystemUnavailable, match="deferral"):
        system.decode(PROMPT, 2, immediate_experts=3, deferred_experts=1)
    with pytest.raises(SystemUnavailable, match="top-4"):
        system.decode(PROMPT, 2, immediate_experts=2)
    assert system.decode(PROMPT, 2, immediate_experts=4).decode_tokens == 2
    with pytest.raises(SystemUnavailable, match="int8"):
        FiddlerSystem({"device": "cpu"}).load(_spec(model_dirs["deepseek_v3"]), "int8")
    system.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a CPU-only machine")
def test_cuda_device_without_gpu_is_unavailable(model_dirs):
    with pytest.raises(SystemUnavailable, match="CUDA"):
        FiddlerSystem({"device": "cuda"}).load(_spec(model_dirs["qwen2_moe"]), "bf16")


def test_bad_model_paths_raise_weights_error(tmp_path, model_dirs):
    missing = tmp_path / "nowhere"
    with pytest.raises(WeightsError, match=str(missing)) as info:
        FiddlerSystem({"device": "cpu"}).load(_spec(missing), "bf16")
    assert isinstance(info.value, ValueError)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="config.json"):
        FiddlerSystem({"device": "cpu"}).load(_spec(broken), "bf16")
    partial = tmp_path / "partial"
    shutil.copytree(model_dirs["qwen2_moe"], partial)
    tensors = load_file(partial / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="lm_head.weight"):
        FiddlerSystem({"device": "cpu"}).load(_spec(partial), "fp32")


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)


class _LegacyMoe(nn.Module):
    """The transformers 4.x layout: nn.ModuleList of per-expert MLPs plus a shared expert."""

    def __init__(self, n_experts: int) -> None:
        super().__init__()
        self.gate = nn.Linear(8, n_experts)
        self.experts = nn.ModuleList(_MLP() for _ in range(n_experts))
        self.shared_expert = _MLP()
        self.shared_experts = nn.ModuleList([_MLP()])  # a misleading name: never routed


class _Layer(nn.Module):
    def __init__(self, moe: bool) -> None:
        super().__init__()
        self.mlp = _LegacyMoe(6) if moe else _MLP()


def test_finder_on_transformers_5_fused_experts(model_dirs):
    for arch in ARCHS:
        model = _plain(model_dirs[arch])
        found = find_routed_experts(model)
        assert [g.name for g in found] == [
            f"model.layers.{i}.mlp.experts" for i in range(DENSE_LAYERS, LAYERS)
        ]
        assert all(g.layout == LAYOUT_FUSED and len(g.units) == 1 for g in found)
        assert all(type(g.units[0]).__name__.endswith("Experts") for g in found)


def test_finder_on_legacy_module_list_experts():
    model = nn.Module()
    model.layers = nn.ModuleList(_Layer(moe=i % 2 == 1) for i in range(5))
    found = find_routed_experts(model)
    assert [g.name for g in found] == ["layers.1.mlp.experts", "layers.3.mlp.experts"]
    assert all(g.layout == LAYOUT_MODULE_LIST and len(g.units) == 6 for g in found)
    assert all(isinstance(u, _MLP) for g in found for u in g.units)
    expected = {id(p) for layer in model.layers[1::2] for p in layer.mlp.experts.parameters()}
    assert {id(p) for g in found for p in g.parameters()} == expected


def test_move_handles_nested_outputs():
    t = torch.ones(2)
    moved = _move((t, [t], {"a": t}, 3), torch.device("meta"))
    assert moved[0].is_meta and moved[1][0].is_meta and moved[2]["a"].is_meta
    assert moved[3] == 3


def test_generate_greedy_matches_decode_and_honours_stops(model_dirs):
    system = _cpu_system(model_dirs["deepseek_v3"])
    tokenizer = AutoTokenizer.from_pretrained(model_dirs["deepseek_v3"])
    text = "The quick brown fox"
    ids = tokenizer(text)["input_ids"]
    tokens = list(system.decode(ids, 8).token_ids)
    if EOS in tokens:
        tokens = tokens[: tokens.index(EOS)]
    full = tokenizer.decode(tokens, skip_special_tokens=True)
    assert system.generate(text, Sampling(max_new_tokens=8)) == full
    stop = tokenizer.decode(tokens[2:4])
    assert stop and full.find(stop) > 0
    cut = system.generate(text, Sampling(max_new_tokens=8, stop=(stop,)))
    assert cut == full[: full.find(stop)]
    sampled = Sampling(max_new_tokens=6, temperature=1.0, top_p=0.9, seed=2025)
    assert system.generate(text, sampled) == system.generate(text, sampled)
    system.close()


def test_config_validation_and_threads(model_dirs):
    assert FiddlerConfig.from_mapping(None) == FiddlerConfig()
    with pytest.raises(ValueError, match="devise"):
        FiddlerConfig.from_mapping({"devise": "cpu"})
    with pytest.raises(ValueError, match="threads"):
        FiddlerConfig.from_mapping({"threads": 0})
    before = torch.get_num_threads()
    system = FiddlerSystem({"device": "cpu", "threads": 1})
    system.load(_spec(model_dirs["qwen2_moe"]), "bf16")
    assert system.describe()["torch_threads"] == 1
    assert system.describe()["dtype"] == "bfloat16"
    system.close()
    assert torch.get_num_threads() == before


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ARCHS)
def test_gpu_hybrid_matches_cpu_in_fp32(model_dirs, arch):
    reference = _cpu_system(model_dirs[arch])
    expected = reference.forward_logits(PROMPT)
    greedy = reference.decode(PROMPT, 6).token_ids
    reference.close()
    system = FiddlerSystem({"device": "cuda"})
    system.load(_spec(model_dirs[arch]), "fp32")
    assert system.describe()["expert_hooks"] == LAYERS - DENSE_LAYERS
    torch.testing.assert_close(system.forward_logits(PROMPT), expected, rtol=1e-4, atol=1e-4)
    assert system.decode(PROMPT, 6).token_ids == greedy
    system.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_placement_experts_on_cpu_rest_on_cuda(model_dirs):
    path = model_dirs["qwen2_moe"]
    reference = _cpu_system(path)
    expected = reference.forward_logits(PROMPT)
    reference.close()
    system = FiddlerSystem({"device": "auto"})
    system.load(_spec(path), "bf16")
    model = system._model
    routed = {id(p) for g in find_routed_experts(model) for p in g.parameters()}
    assert routed and all(p.device.type == "cpu" for p in model.parameters() if id(p) in routed)
    others = [p for p in model.parameters() if id(p) not in routed]
    assert others and all(p.device.type == "cuda" for p in others)
    assert all(b.device.type == "cuda" for b in model.buffers())
    facts = system.describe()
    assert set(facts["other_params_by_device"]) == {"cuda:0"}
    assert set(facts["expert_params_by_device"]) == {"cpu"}
    assert json.dumps(facts, default=str)
    logits = system.forward_logits(PROMPT)  # bf16 on GPU + CPU against fp32 on the CPU
    assert (logits - expected).abs().max() <= 0.05 * expected.abs().max()
    assert system.prefill(PROMPT).seconds > 0
    assert len(system.decode(PROMPT, 4).token_ids) == 4
    system.close()


def test_reload_replaces_previous_model(model_dirs):
    system = _cpu_system(model_dirs["qwen2_moe"])
    system.load(_spec(model_dirs["deepseek_v2"]), "fp32")
    assert system.describe()["architecture"] == "DeepseekV2ForCausalLM"
    system.close()

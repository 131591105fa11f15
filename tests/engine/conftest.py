"""Fixtures for the engine tests: tiny random checkpoints made with transformers' own config
classes and save_pretrained, the matching transformers models, and our loaded models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

VOCAB = 256
ROUTER_GAIN = 6.0
YARN_V2 = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
    "beta_fast": 32,
    "beta_slow": 1,
}
YARN_V3 = {
    **YARN_V2,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
    "factor": 8.0,
    "original_max_position_embeddings": 32,
}
COMMON: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_experts_per_tok": 3,
    "max_position_embeddings": 256,
    "eos_token_id": None,
    "bos_token_id": None,
}
MLA: dict[str, Any] = {
    "num_key_value_heads": 4,
    "n_routed_experts": 8,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
}
# name -> (transformers class name, config kwargs); together they cover norm_topk_prob
# true/false, n_group > 1, first_k_dense_replace > 0, q_lora_rank null and set, YaRN.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2_norm": (
        "Qwen2Moe",
        {
            **COMMON,
            "num_key_value_heads": 2,
            "num_experts": 8,
            "shared_expert_intermediate_size": 48,
            "norm_topk_prob": True,
            "mlp_only_layers": [1],
        },
    ),
    "qwen2_nonorm": (
        "Qwen2Moe",
        {
            **COMMON,
            "num_key_value_heads": 1,
            "num_experts": 6,
            "shared_expert_intermediate_size": 40,
            "norm_topk_prob": False,
        },
    ),
    "ds2_qnull_group_yarn": (
        "DeepseekV2",
        {
            **COMMON,
            **MLA,
            "q_lora_rank": None,
            "n_shared_experts": 2,
            "first_k_dense_replace": 1,
            "topk_method": "group_limited_greedy",
            "n_group": 4,
            "topk_group": 2,
            "routed_scaling_factor": 1.5,
            "rope_parameters": YARN_V2,
        },
    ),
    "ds2_qlora_greedy": (
        "DeepseekV2",
        {
            **COMMON,
            **MLA,
            "q_lora_rank": 24,
            "n_shared_experts": 1,
            "first_k_dense_replace": 0,
            "topk_method": "greedy",
        },
    ),
    "ds3_qlora_norm": (
        "DeepseekV3",
        {
            **COMMON,
            **MLA,
            "q_lora_rank": 24,
            "n_shared_experts": 1,
            "first_k_dense_replace": 1,
            "n_group": 4,
            "topk_group": 2,
            "norm_topk_prob": True,
        },
    ),
    "ds3_qnull_nonorm_yarn": (
        "DeepseekV3",
        {
            **COMMON,
            **MLA,
            "q_lora_rank": None,
            "n_shared_experts": 2,
            "first_k_dense_replace": 2,
            "n_group": 2,
            "topk_group": 1,
            "norm_topk_prob": False,
            "rope_parameters": YARN_V3,
        },
    ),
}


def hf_classes(family: str) -> tuple[type, type]:
    """(config class, causal-LM class) of transformers for ``family``."""
    import transformers

    return getattr(transformers, f"{family}Config"), getattr(transformers, f"{family}ForCausalLM")


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every weight a non-trivial value (norms near 1, biases small, routers spread)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            elif name.endswith("mlp.gate.weight"):  # peaked routing, as trained routers have
                p.copy_(ROUTER_GAIN * noise / p.shape[-1] ** 0.5)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))


def build_checkpoint(name: str, root: Path, seed: int = 0) -> Path:
    """Save case ``name`` as a Hugging Face directory under ``root``; return its path."""
    family, kwargs = CASES[name]
    config_cls, model_cls = hf_classes(family)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs))
    randomize(model, seed)
    path = root / name
    model.save_pretrained(path)
    return path


def load_hf(path: Path, name: str, dtype: torch.dtype) -> torch.nn.Module:
    """The transformers model of case ``name`` from ``path`` (eager attention), in eval mode."""
    _, model_cls = hf_classes(CASES[name][0])
    model = model_cls.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``checkpoint(name)`` -> directory of tiny case ``name`` (built once per module)."""
    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_checkpoint(name, root)
        return built[name]

    return get


@pytest.fixture(scope="module")
def load_engine() -> Callable[..., Any]:
    """``load_engine(path, dtype=, precision=, device=, ...)`` -> our MoECausalLM."""
    from engine.experts import make_expert_backend
    from engine.loaders import open_weights
    from engine.models import load_model

    def load(
        path: Path,
        dtype: torch.dtype = torch.float32,
        precision: str = "fp32",
        device: str = "cpu",
        **kwargs: Any,
    ) -> Any:
        source = open_weights(path)
        try:
            return load_model(
                source,
                expert_backend=make_expert_backend("reference", precision),
                device=device,
                dtype=dtype,
                **kwargs,
            )
        finally:
            source.close()

    return load


DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    """The device the non-expert weights go to: cpu, and cuda where a GPU is present."""
    return str(request.param)

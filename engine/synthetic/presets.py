"""config.json presets: the real models' values, tiny versions of them, and layer slices."""

from __future__ import annotations

import copy
from typing import Any

from engine.errors import EngineError

ARCHITECTURES = ("qwen2_moe", "deepseek_v2", "deepseek_v3")
KINDS = ("tiny", "slice")
STANDS_FOR = {"qwen2_moe": "qw2", "deepseek_v2": "ds2", "deepseek_v3": "ds3"}
SOURCE_CHECKPOINT = {
    "qwen2_moe": "Qwen/Qwen2-57B-A14B-Instruct",
    "deepseek_v2": "deepseek-ai/DeepSeek-V2.5-1210",
    "deepseek_v3": "deepseek-ai/DeepSeek-V3-0324",
}
# Default slice caps: enough MoE layers to measure per-layer behaviour (ds3 keeps its 3 dense).
SLICE_LAYER_CAP = {"qwen2_moe": 4, "deepseek_v2": 4, "deepseek_v3": 7}


class SyntheticConfigError(EngineError):
    """A synthetic model request names an unknown architecture, kind or config field."""


# config.json of Qwen2-57B-A14B-Instruct.
_QWEN2_57B: dict[str, Any] = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "model_type": "qwen2_moe",
    "moe_intermediate_size": 2560,
    "norm_topk_prob": False,
    "num_attention_heads": 28,
    "num_experts": 64,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "shared_expert_intermediate_size": 20480,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

# config.json of DeepSeek-V2.5-1210 (auto_map dropped: transformers has native classes).
_DEEPSEEK_V25: dict[str, Any] = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 12288,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1536,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 160,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 128,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 60,
    "num_key_value_heads": 128,
    "pretraining_tp": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 16.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 3,
    "topk_method": "group_limited_greedy",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}

# config.json of DeepSeek-V3-0324, less its FP8 quantization_config (synthetic weights are BF16).
_DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

REAL_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2_moe": _QWEN2_57B,
    "deepseek_v2": _DEEPSEEK_V25,
    "deepseek_v3": _DEEPSEEK_V3,
}
REAL_LAYERS = {arch: cfg["num_hidden_layers"] for arch, cfg in REAL_CONFIGS.items()}

# Tiny widths; routed-expert count, top-k, grouping and scoring stay those of the real model.
_TINY_COMMON = {
    "hidden_size": 128,
    "moe_intermediate_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "vocab_size": 4096,
}
_TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "qwen2_moe": {
        **_TINY_COMMON,
        "num_key_value_heads": 2,
        "shared_expert_intermediate_size": 256,
        "max_window_layers": 4,
    },
    "deepseek_v2": {
        **_TINY_COMMON,
        "num_key_value_heads": 4,
        "first_k_dense_replace": 1,
        "q_lora_rank": 64,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
    },
    "deepseek_v3": {
        **_TINY_COMMON,
        "num_key_value_heads": 4,
        "first_k_dense_replace": 1,
        "q_lora_rank": 64,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
    },
}


def check_architecture(architecture: str) -> None:
    if architecture not in REAL_CONFIGS:
        raise SyntheticConfigError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )


def default_first_k_dense(architecture: str, layers: int) -> int:
    """Dense layers at the start of a slice: the real count, but leaving at least one MoE layer."""
    real = REAL_CONFIGS[architecture].get("first_k_dense_replace", 0)
    return max(0, min(real, layers - 1))


def build_config(
    architecture: str, kind: str, layers: int | None = None, dims: dict[str, Any] | None = None
) -> dict[str, Any]:
    """config.json for a synthetic model (real field names and values, synthetic dims applied)."""
    check_architecture(architecture)
    if kind not in KINDS:
        raise SyntheticConfigError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    config = copy.deepcopy(REAL_CONFIGS[architecture])
    if kind == "tiny":
        config.update(copy.deepcopy(_TINY_OVERRIDES[architecture]))
    dims = dict(dims or {})
    unknown = sorted(k for k in dims if k not in config and k != "num_hidden_layers")
    if unknown:
        raise SyntheticConfigError(
            f"dims override unknown config field(s) {unknown} for {architecture}"
        )
    if layers is not None and "num_hidden_layers" in dims and dims["num_hidden_layers"] != layers:
        raise SyntheticConfigError(
            f"layers={layers} contradicts dims num_hidden_layers={dims['num_hidden_layers']}"
        )
    config.update(dims)
    if layers is not None:
        config["num_hidden_layers"] = layers
    n = config["num_hidden_layers"]
    if not isinstance(n, int) or n < 1:
        raise SyntheticConfigError(f"layers must be a positive integer, got {n!r}")
    if kind == "slice" and n > REAL_LAYERS[architecture]:
        raise SyntheticConfigError(
            f"a {architecture} slice has at most {REAL_LAYERS[architecture]} layers, asked for {n}"
        )
    if "first_k_dense_replace" in config and "first_k_dense_replace" not in dims:
        config["first_k_dense_replace"] = max(0, min(config["first_k_dense_replace"], n - 1))
    if architecture == "qwen2_moe":
        config["max_window_layers"] = min(config["max_window_layers"], n)
    if architecture == "deepseek_v3":
        config["num_nextn_predict_layers"] = 0  # no multi-token-prediction layer is written
    _validate(architecture, config)
    return config


def _validate(architecture: str, config: dict[str, Any]) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise SyntheticConfigError(f"{architecture} config: {msg}")

    for key, value in config.items():
        if key.endswith(("_size", "_dim", "_heads", "_rank", "_experts")) and value is not None:
            need(
                isinstance(value, int) and value >= 1,
                f"{key} must be a positive int, got {value!r}",
            )
    need(
        config["hidden_size"] % config["num_attention_heads"] == 0,
        "hidden_size must be a multiple of num_attention_heads",
    )
    need(
        config["num_attention_heads"] % config["num_key_value_heads"] == 0,
        "num_attention_heads must be a multiple of num_key_value_heads",
    )
    experts = config.get("num_experts", config.get("n_routed_experts"))
    need(
        1 <= config["num_experts_per_tok"] <= experts,
        "num_experts_per_tok must be between 1 and the number of routed experts",
    )
    if architecture != "qwen2_moe":
        need(
            config["first_k_dense_replace"] < config["num_hidden_layers"],
            "first_k_dense_replace must leave at least one MoE layer",
        )
        groups = config.get("n_group") or 1
        need(experts % groups == 0, "n_routed_experts must be divisible by n_group")
        topk_group = config.get("topk_group") or 1
        need(topk_group <= groups, "topk_group must not exceed n_group")
        need(
            config["num_experts_per_tok"] <= topk_group * (experts // groups),
            "top-k experts must fit in the selected groups",
        )
    need(config["vocab_size"] >= 512, "vocab_size must be at least 512 (byte-level tokenizer)")


def moe_layer_indices(architecture: str, config: dict[str, Any]) -> list[int]:
    """Indices of the decoder layers that have routed experts."""
    n = config["num_hidden_layers"]
    if architecture == "qwen2_moe":
        step = config.get("decoder_sparse_step", 1)
        only_mlp = set(config.get("mlp_only_layers") or [])
        return [i for i in range(n) if i not in only_mlp and step > 0 and (i + 1) % step == 0]
    return list(range(config["first_k_dense_replace"], n))

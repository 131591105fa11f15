"""A checkpoint's config.json turned into a typed ModelConfig for the three supported families."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UnsupportedModelError

ARCHITECTURES = {
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}
FAMILIES = ("qwen2_moe", "deepseek_v2", "deepseek_v3")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters: ``kind`` is ``default`` or ``yarn``."""

    kind: str
    theta: float
    dim: int
    factor: float = 1.0
    original_max_position_embeddings: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Everything the model code needs, whatever the family (unused fields keep defaults)."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    moe_intermediate_size: int
    num_experts: int
    top_k: int
    num_heads: int
    rms_norm_eps: float
    rope: RopeConfig
    tie_word_embeddings: bool = False
    norm_topk_prob: bool = False
    eos_token_ids: tuple[int, ...] = ()
    # Qwen2-MoE
    num_kv_heads: int = 0
    head_dim: int = 0
    qkv_bias: bool = True
    shared_expert_intermediate_size: int = 0
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    # DeepSeek-V2/V3
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    attention_bias: bool = False
    n_shared_experts: int = 0
    first_k_dense_replace: int = 0
    moe_layer_freq: int = 1
    topk_method: str = "greedy"
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    rope_interleave: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_mla(self) -> bool:
        """True for DeepSeek's multi-head latent attention."""
        return self.family in ("deepseek_v2", "deepseek_v3")

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` has routed experts (else a dense MLP)."""
        if self.num_experts <= 0:
            return False
        if self.family == "qwen2_moe":
            return (
                layer_idx not in self.mlp_only_layers
                and (layer_idx + 1) % self.decoder_sparse_step == 0
            )
        return layer_idx >= self.first_k_dense_replace and layer_idx % self.moe_layer_freq == 0

    @property
    def softmax_scale(self) -> float:
        """Attention logit scale (DeepSeek: with YaRN's mscale_all_dim correction squared)."""
        if not self.is_mla:
            return self.head_dim**-0.5
        scale = (self.qk_nope_head_dim + self.qk_rope_head_dim) ** -0.5
        if self.rope.kind != "default" and self.rope.mscale_all_dim:
            m = yarn_mscale(self.rope.factor, self.rope.mscale_all_dim)
            scale = scale * m * m
        return scale


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's magnitude correction ``0.1 * mscale * ln(scale) + 1`` (1 when scale <= 1)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def detect_family(raw: dict[str, Any]) -> str:
    """The supported family of a config.json, or UnsupportedModelError naming what it is."""
    model_type = raw.get("model_type")
    if model_type in FAMILIES:
        return str(model_type)
    for arch in raw.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    name = (raw.get("architectures") or [None])[0] or model_type or "<no model_type>"
    raise UnsupportedModelError(
        f"unsupported architecture {name!r} (model_type {model_type!r}); the engine supports "
        f"{', '.join(ARCHITECTURES)}"
    )


def _rope(raw: dict[str, Any], dim: int) -> RopeConfig:
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    if any(isinstance(v, dict) for v in params.values()):
        raise UnsupportedModelError("per-layer-type rope_parameters are not supported")
    kind = params.get("rope_type") or params.get("type") or "default"
    theta = float(params.get("rope_theta") or raw.get("rope_theta") or 10000.0)
    if kind == "default":
        return RopeConfig("default", theta, dim)
    if kind != "yarn":
        raise UnsupportedModelError(f"unsupported RoPE scaling type {kind!r} (default, yarn)")
    orig = params.get("original_max_position_embeddings") or raw.get("max_position_embeddings")
    factor = params.get("factor")
    if factor is None:
        factor = raw["max_position_embeddings"] / orig
    return RopeConfig(
        kind="yarn",
        theta=theta,
        dim=dim,
        factor=float(factor),
        original_max_position_embeddings=int(orig),
        beta_fast=float(params.get("beta_fast") or 32),
        beta_slow=float(params.get("beta_slow") or 1),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        attention_factor=params.get("attention_factor"),
        truncate=bool(params.get("truncate", True)),
    )


def _eos(raw: dict[str, Any]) -> tuple[int, ...]:
    eos = raw.get("eos_token_id")
    if eos is None:
        return ()
    return tuple(int(e) for e in eos) if isinstance(eos, list) else (int(eos),)


def parse_model_config(raw: dict[str, Any]) -> ModelConfig:
    """Read a config.json dict; UnsupportedModelError for other families or options."""
    family = detect_family(raw)
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModelError(f"unsupported hidden_act {act!r} (only silu)")
    try:
        common: dict[str, Any] = {
            "family": family,
            "vocab_size": int(raw["vocab_size"]),
            "hidden_size": int(raw["hidden_size"]),
            "num_layers": int(raw["num_hidden_layers"]),
            "intermediate_size": int(raw["intermediate_size"]),
            "moe_intermediate_size": int(raw["moe_intermediate_size"]),
            "top_k": int(raw["num_experts_per_tok"]),
            "num_heads": int(raw["num_attention_heads"]),
            "rms_norm_eps": float(raw.get("rms_norm_eps", 1e-6)),
            "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False)),
            "eos_token_ids": _eos(raw),
        }
        if family == "qwen2_moe":
            return _qwen2(raw, common)
        return _deepseek(raw, common, family)
    except KeyError as exc:
        raise UnsupportedModelError(f"config.json lacks required key {exc.args[0]!r}") from None


def _qwen2(raw: dict[str, Any], common: dict[str, Any]) -> ModelConfig:
    if raw.get("use_sliding_window"):
        raise UnsupportedModelError("Qwen2-MoE with use_sliding_window=true is not supported")
    head_dim = int(raw.get("head_dim") or common["hidden_size"] // common["num_heads"])
    return ModelConfig(
        **common,
        num_experts=int(raw["num_experts"]),
        rope=_rope(raw, head_dim),
        norm_topk_prob=bool(raw.get("norm_topk_prob", False)),
        num_kv_heads=int(raw.get("num_key_value_heads") or common["num_heads"]),
        head_dim=head_dim,
        qkv_bias=bool(raw.get("qkv_bias", True)),
        shared_expert_intermediate_size=int(raw.get("shared_expert_intermediate_size") or 0),
        decoder_sparse_step=int(raw.get("decoder_sparse_step") or 1),
        mlp_only_layers=tuple(int(i) for i in raw.get("mlp_only_layers") or ()),
    )


def _deepseek(raw: dict[str, Any], common: dict[str, Any], family: str) -> ModelConfig:
    v3 = family == "deepseek_v3"
    method = raw.get("topk_method") or ("noaux_tc" if v3 else "greedy")
    allowed = ("noaux_tc",) if v3 else ("greedy", "group_limited_greedy")
    if method not in allowed:
        raise UnsupportedModelError(f"{family}: unsupported topk_method {method!r} ({allowed})")
    scoring = raw.get("scoring_func") or ("sigmoid" if v3 else "softmax")
    if scoring != ("sigmoid" if v3 else "softmax"):
        raise UnsupportedModelError(f"{family}: unsupported scoring_func {scoring!r}")
    if raw.get("mlp_bias"):
        raise UnsupportedModelError(f"{family}: mlp_bias=true is not supported")
    rope_dim = int(raw["qk_rope_head_dim"])
    q_lora = raw.get("q_lora_rank")
    return ModelConfig(
        **common,
        num_experts=int(raw["n_routed_experts"] or 0),
        rope=_rope(raw, rope_dim),
        norm_topk_prob=bool(raw.get("norm_topk_prob", v3)),
        q_lora_rank=int(q_lora) if q_lora else None,
        kv_lora_rank=int(raw["kv_lora_rank"]),
        qk_nope_head_dim=int(raw["qk_nope_head_dim"]),
        qk_rope_head_dim=rope_dim,
        v_head_dim=int(raw["v_head_dim"]),
        attention_bias=bool(raw.get("attention_bias", False)),
        n_shared_experts=int(raw.get("n_shared_experts") or 0),
        first_k_dense_replace=int(raw.get("first_k_dense_replace") or 0),
        moe_layer_freq=int(raw.get("moe_layer_freq") or 1),
        topk_method=method,
        n_group=int(raw.get("n_group") or 1),
        topk_group=int(raw.get("topk_group") or 1),
        routed_scaling_factor=float(raw.get("routed_scaling_factor") or 1.0),
        rope_interleave=bool(raw.get("rope_interleave", True)) if v3 else True,
    )

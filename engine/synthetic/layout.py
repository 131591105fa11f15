"""The tensor list of a checkpoint: real Hugging Face names, shapes, dtypes and init recipes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.synthetic.presets import moe_layer_indices

# Output projections (o_proj, down_proj) are scaled down so the residual stream stays O(1).
OUTPUT_SCALE = 0.5
DTYPE_BYTES = {"BF16": 2, "F32": 4}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to write: ``init`` is normal | ones | zeros | embed | router."""

    name: str
    shape: tuple[int, ...]
    init: str
    std: float = 0.0
    dtype: str = "BF16"
    layer: int = -1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


def _linear(name: str, out_f: int, in_f: int, scale: float = 1.0, layer: int = -1) -> TensorSpec:
    return TensorSpec(name, (out_f, in_f), "normal", scale / math.sqrt(in_f), layer=layer)


def _norm(name: str, size: int, layer: int = -1) -> TensorSpec:
    return TensorSpec(name, (size,), "ones", layer=layer)


def _mlp(prefix: str, hidden: int, inter: int, layer: int, down_scale: float) -> list[TensorSpec]:
    return [
        _linear(f"{prefix}.gate_proj.weight", inter, hidden, layer=layer),
        _linear(f"{prefix}.up_proj.weight", inter, hidden, layer=layer),
        _linear(f"{prefix}.down_proj.weight", hidden, inter, down_scale, layer=layer),
    ]


def _qwen2_attention(p: str, c: dict[str, Any], layer: int) -> list[TensorSpec]:
    h, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = h // heads
    specs = []
    for proj, out_f in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
        specs.append(_linear(f"{p}.{proj}.weight", out_f, h, layer=layer))
        specs.append(TensorSpec(f"{p}.{proj}.bias", (out_f,), "normal", 0.02, layer=layer))
    specs.append(_linear(f"{p}.o_proj.weight", h, heads * hd, OUTPUT_SCALE, layer=layer))
    return specs


def _mla_attention(p: str, c: dict[str, Any], layer: int) -> list[TensorSpec]:
    h, heads = c["hidden_size"], c["num_attention_heads"]
    qk_head = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    specs = []
    if c.get("q_lora_rank") is None:
        specs.append(_linear(f"{p}.q_proj.weight", heads * qk_head, h, layer=layer))
    else:
        r = c["q_lora_rank"]
        specs += [
            _linear(f"{p}.q_a_proj.weight", r, h, layer=layer),
            _norm(f"{p}.q_a_layernorm.weight", r, layer),
            _linear(f"{p}.q_b_proj.weight", heads * qk_head, r, layer=layer),
        ]
    kv_r = c["kv_lora_rank"]
    specs += [
        _linear(f"{p}.kv_a_proj_with_mqa.weight", kv_r + c["qk_rope_head_dim"], h, layer=layer),
        _norm(f"{p}.kv_a_layernorm.weight", kv_r, layer),
        _linear(
            f"{p}.kv_b_proj.weight",
            heads * (c["qk_nope_head_dim"] + c["v_head_dim"]),
            kv_r,
            layer=layer,
        ),
        _linear(f"{p}.o_proj.weight", h, heads * c["v_head_dim"], OUTPUT_SCALE, layer=layer),
    ]
    return specs


def _router(name: str, experts: int, hidden: int, layer: int) -> TensorSpec:
    return TensorSpec(name, (experts, hidden), "router", 1.0 / math.sqrt(hidden), layer=layer)


def _qwen2_mlp(p: str, c: dict[str, Any], layer: int, is_moe: bool) -> list[TensorSpec]:
    h = c["hidden_size"]
    if not is_moe:
        return _mlp(p, h, c["intermediate_size"], layer, OUTPUT_SCALE)
    specs = [_router(f"{p}.gate.weight", c["num_experts"], h, layer)]
    for e in range(c["num_experts"]):
        specs += _mlp(f"{p}.experts.{e}", h, c["moe_intermediate_size"], layer, OUTPUT_SCALE)
    shared = c["shared_expert_intermediate_size"]
    specs += _mlp(f"{p}.shared_expert", h, shared, layer, OUTPUT_SCALE)
    specs.append(_linear(f"{p}.shared_expert_gate.weight", 1, h, layer=layer))
    return specs


def _deepseek_mlp(
    p: str, c: dict[str, Any], layer: int, is_moe: bool, v3: bool
) -> list[TensorSpec]:
    h = c["hidden_size"]
    if not is_moe:
        return _mlp(p, h, c["intermediate_size"], layer, OUTPUT_SCALE)
    experts, inter = c["n_routed_experts"], c["moe_intermediate_size"]
    specs = [_router(f"{p}.gate.weight", experts, h, layer)]
    if v3:  # the real checkpoints keep this bias in float32
        specs.append(
            TensorSpec(f"{p}.gate.e_score_correction_bias", (experts,), "zeros", 0.0, "F32", layer)
        )
    # Routed outputs are multiplied by routed_scaling_factor in the model: undo it in the weights.
    routed_down = OUTPUT_SCALE / float(c.get("routed_scaling_factor", 1.0))
    for e in range(experts):
        specs += _mlp(f"{p}.experts.{e}", h, inter, layer, routed_down)
    specs += _mlp(f"{p}.shared_experts", h, inter * c["n_shared_experts"], layer, OUTPUT_SCALE)
    return specs


def iter_tensor_specs(architecture: str, config: dict[str, Any]) -> Iterator[TensorSpec]:
    """Every tensor of the checkpoint in the order the real checkpoints store them."""
    h, vocab = config["hidden_size"], config["vocab_size"]
    yield TensorSpec("model.embed_tokens.weight", (vocab, h), "embed", 1.0)
    moe_layers = set(moe_layer_indices(architecture, config))
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        if architecture == "qwen2_moe":
            yield from _qwen2_attention(f"{p}.self_attn", config, i)
            yield from _qwen2_mlp(f"{p}.mlp", config, i, i in moe_layers)
        else:
            yield from _mla_attention(f"{p}.self_attn", config, i)
            yield from _deepseek_mlp(
                f"{p}.mlp", config, i, i in moe_layers, architecture == "deepseek_v3"
            )
        yield _norm(f"{p}.input_layernorm.weight", h, i)
        yield _norm(f"{p}.post_attention_layernorm.weight", h, i)
    yield _norm("model.norm.weight", h)
    yield _linear("lm_head.weight", vocab, h)


def total_bytes(architecture: str, config: dict[str, Any]) -> int:
    return sum(spec.nbytes for spec in iter_tensor_specs(architecture, config))

"""Tensor names: Hugging Face checkpoint names <-> llama.cpp GGUF names for qwen2moe and deepseek2.

The table mirrors llama.cpp's own conventions (gguf-py's ``tensor_mapping.py`` and
``convert_hf_to_gguf.py``): ``model.layers.3.self_attn.q_proj.weight`` is
``blk.3.attn_q.weight``; routed experts are stored stacked per projection as
``blk.3.ffn_gate_exps.weight`` with numpy shape [E, out, in]; DeepSeek-V3's
``mlp.gate.e_score_correction_bias`` is ``blk.3.exp_probs_b.bias``. DeepSeek's
``kv_b_proj`` is written either fused (``attn_kv_b``, legacy files) or split into
``attn_k_b`` / ``attn_v_b`` (current llama.cpp, for MLA weight absorption); the split
is handled by the loader and exporter, not by this table.
"""

from __future__ import annotations

import re

from engine.errors import UnsupportedModelError

SUPPORTED_ARCHES = ("qwen2moe", "deepseek2")

# Hugging Face model_type -> llama.cpp architecture name.
HF_MODEL_TYPE_TO_ARCH = {
    "qwen2_moe": "qwen2moe",
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
}

EXPERT_PROJS = ("gate", "up", "down")

_GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}

_LAYER_COMMON = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
}

_LAYER_ARCH = {
    "qwen2moe": {
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
        "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    },
    "deepseek2": {
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_a_proj.weight": "attn_q_a.weight",
        "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
        "self_attn.q_b_proj.weight": "attn_q_b.weight",
        "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
        "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
        "self_attn.kv_b_proj.weight": "attn_kv_b.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
        "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    },
}

_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_GGUF_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_HF_EXPERT_RE = re.compile(
    r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$"
)
_GGUF_EXPERT_RE = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$")


def check_arch(arch: str, where: str) -> None:
    """Raise UnsupportedModelError unless ``arch`` is one this project maps."""
    if arch not in SUPPORTED_ARCHES:
        raise UnsupportedModelError(
            f"{where}: architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHES)})"
        )


def _layer_table(arch: str) -> dict[str, str]:
    return {**_LAYER_COMMON, **_LAYER_ARCH[arch]}


def hf_to_gguf(arch: str, hf_name: str) -> str | None:
    """GGUF name of a non-expert HF tensor, or None when llama.cpp has no such tensor."""
    if hf_name in _GLOBAL:
        return _GLOBAL[hf_name]
    m = _HF_LAYER_RE.match(hf_name)
    if m is None:
        return None
    suffix = _layer_table(arch).get(m.group(2))
    return None if suffix is None else f"blk.{m.group(1)}.{suffix}"


def gguf_to_hf(arch: str, gguf_name: str) -> str | None:
    """HF name of a non-expert GGUF tensor, or None when it has no one-to-one HF tensor."""
    for hf, gg in _GLOBAL.items():
        if gg == gguf_name:
            return hf
    m = _GGUF_LAYER_RE.match(gguf_name)
    if m is None:
        return None
    for hf_suffix, gg_suffix in _layer_table(arch).items():
        if gg_suffix == m.group(2):
            return f"model.layers.{m.group(1)}.{hf_suffix}"
    return None


def parse_hf_expert(hf_name: str) -> tuple[int, int, str] | None:
    """(layer, expert, proj) of a routed-expert HF name, proj in gate/up/down; else None."""
    m = _HF_EXPERT_RE.match(hf_name)
    return None if m is None else (int(m.group(1)), int(m.group(2)), m.group(3))


def parse_gguf_experts(gguf_name: str) -> tuple[int, str] | None:
    """(layer, proj) of a stacked-expert GGUF name; else None."""
    m = _GGUF_EXPERT_RE.match(gguf_name)
    return None if m is None else (int(m.group(1)), m.group(2))


def hf_expert_name(layer: int, expert: int, proj: str) -> str:
    """HF name of one routed expert's projection (proj: gate, up or down)."""
    return f"model.layers.{layer}.mlp.experts.{expert}.{proj}_proj.weight"


def gguf_experts_name(layer: int, proj: str) -> str:
    """GGUF name of a layer's stacked routed-expert projection (proj: gate, up or down)."""
    return f"blk.{layer}.ffn_{proj}_exps.weight"


def normalize_proj(which: str) -> str:
    """Accept 'gate', 'gate_proj', 'w1'-style aliases; return gate/up/down."""
    alias = {"w1": "gate", "w3": "up", "w2": "down"}
    proj = alias.get(which, which.removesuffix("_proj"))
    if proj not in EXPERT_PROJS:
        raise ValueError(f"expert projection must be one of {EXPERT_PROJS}, got {which!r}")
    return proj

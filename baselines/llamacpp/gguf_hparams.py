"""llama.cpp's hyperparameter keys for a GGUF export: ``qwen2moe`` and ``deepseek2``.

Follows ``convert_hf_to_gguf.py``: the common block/embedding/expert counts, RoPE (plain,
linear or YaRN, with DeepSeek's ``mscale_all_dim`` as ``rope.scaling.yarn_log_multiplier``),
Qwen2-MoE's shared-expert size, DeepSeek's MLA ranks and sizes (or the legacy fused
``kv_b`` layout), gating function, routed scaling and expert groups. A configuration that
llama.cpp cannot express raises :class:`engine.errors.UnsupportedModelError` here, before
llama.cpp could abort the process on it. Used by :mod:`baselines.llamacpp.gguf_export`.
"""

from __future__ import annotations

from typing import Any

from gguf import ExpertGatingFuncType, GGUFWriter, RopeScalingType

from engine.errors import UnsupportedModelError

__all__ = ["write_deepseek2", "write_qwen2moe"]


def _rope(cfg: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = cfg.get("rope_theta", params.get("rope_theta", 10000.0))
    return float(theta), params


def _write_rope(w: GGUFWriter, cfg: dict[str, Any], deepseek: bool) -> None:
    theta, p = _rope(cfg)
    w.add_rope_freq_base(theta)
    rtype = p.get("rope_type", p.get("type"))
    if rtype in (None, "default"):
        return
    if rtype == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(p["factor"]))
        return
    if rtype != "yarn":
        raise UnsupportedModelError(f"RoPE scaling {rtype!r} is not supported for GGUF export")
    w.add_rope_scaling_type(RopeScalingType.YARN)
    w.add_rope_scaling_factor(float(p["factor"]))
    orig = p.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    if orig is not None:
        w.add_rope_scaling_orig_ctx_len(int(orig))
    for key, add in (
        ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
        ("beta_slow", w.add_rope_scaling_yarn_beta_slow),
        ("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
        ("attention_factor", w.add_rope_scaling_yarn_attn_factor),
    ):
        if p.get(key) is not None:
            add(float(p[key]))
    if deepseek and p.get("mscale_all_dim") is not None:
        if p.get("mscale") is not None and float(p["mscale"]) != float(p["mscale_all_dim"]):
            raise UnsupportedModelError("YaRN with mscale != mscale_all_dim has no llama.cpp key")
        w.add_rope_scaling_yarn_log_mul(
            0.1 * float(p["mscale_all_dim"])
        )  # convert_hf_to_gguf's 0.1x


def _write_common(w: GGUFWriter, cfg: dict[str, Any], n_experts: int) -> None:
    w.add_type("model")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(int(cfg.get("max_position_embeddings", 4096)))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_expert_count(n_experts)
    w.add_expert_used_count(cfg["num_experts_per_tok"])


def write_qwen2moe(w: GGUFWriter, cfg: dict[str, Any]) -> None:
    if cfg.get("decoder_sparse_step", 1) != 1 or cfg.get("mlp_only_layers"):
        raise UnsupportedModelError(
            "qwen2moe with dense layers (decoder_sparse_step != 1 or mlp_only_layers) "
            "is not supported by llama.cpp"
        )
    _write_common(w, cfg, cfg["num_experts"])
    w.add_head_count_kv(cfg.get("num_key_value_heads", cfg["num_attention_heads"]))
    w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    w.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    if cfg.get("norm_topk_prob"):  # llama.cpp's qwen2moe ignores this key; kept for round trips
        w.add_expert_weights_norm(True)
    _write_rope(w, cfg, deepseek=False)


def _expert_groups(cfg: dict[str, Any], v3: bool) -> tuple[int, int] | None:
    """(group count, groups used) to write, or None when group-limited routing is a no-op.

    llama.cpp aborts the process (GGML_ASSERT, no error return) unless 1 < groups <
    experts, experts % groups == 0 and 0 < used < groups, so those are checked here. With
    used >= groups (or one group) the limit selects every group: nothing is written. Note
    that llama.cpp ranks groups by the sum of their two best scores (DeepSeek-V3's
    ``noaux_tc``); V2's ``group_limited_greedy`` ranks them by the best score alone, so
    V2 routing can differ from Hugging Face's (convert_hf_to_gguf.py writes the same keys).
    """
    if cfg.get("topk_method", "noaux_tc" if v3 else "greedy") == "greedy":
        return None
    n_group, used = int(cfg.get("n_group") or 1), int(cfg.get("topk_group") or 0)
    experts = int(cfg["n_routed_experts"])
    if n_group <= 1 or used >= n_group:
        return None
    if used < 1 or experts % n_group or n_group >= experts:
        raise UnsupportedModelError(
            f"expert groups n_group={n_group}, topk_group={used} with {experts} experts "
            "cannot be expressed for llama.cpp"
        )
    return n_group, used


def write_deepseek2(w: GGUFWriter, cfg: dict[str, Any], legacy_kv_b: bool) -> None:
    v3 = cfg.get("model_type") == "deepseek_v3"
    _write_common(w, cfg, cfg["n_routed_experts"])
    rope, nope, v = cfg["qk_rope_head_dim"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    kv_lora = cfg["kv_lora_rank"]
    w.add_vocab_size(cfg["vocab_size"])
    w.add_leading_dense_block_count(int(cfg.get("first_k_dense_replace") or 0))
    # llama.cpp reads q_lora_rank unless it guesses a "lite" model from the layer count;
    # 0 means "no q LoRA" (it then uses attn_q), so always write it.
    w.add_q_lora_rank(int(cfg.get("q_lora_rank") or 0))
    w.add_kv_lora_rank(kv_lora)
    if legacy_kv_b:
        w.add_head_count_kv(cfg["num_attention_heads"])
        w.add_key_length(nope + rope)
        w.add_value_length(v)
    else:  # MLA: MQA over the latent (head_count_kv 1), per-head sizes in *_mla
        w.add_head_count_kv(1)
        w.add_key_length(kv_lora + rope)
        w.add_value_length(kv_lora)
        w.add_key_length_mla(nope + rope)
        w.add_value_length_mla(v)
    w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    w.add_expert_shared_count(int(cfg.get("n_shared_experts") or 0))
    w.add_expert_weights_scale(float(cfg.get("routed_scaling_factor") or 1.0))
    if cfg.get("norm_topk_prob"):
        w.add_expert_weights_norm(True)
    scoring = cfg.get("scoring_func", "sigmoid" if v3 else "softmax")
    w.add_expert_gating_func(
        ExpertGatingFuncType.SIGMOID if scoring == "sigmoid" else ExpertGatingFuncType.SOFTMAX
    )
    groups = _expert_groups(cfg, v3)
    if groups is not None:
        w.add_expert_group_count(groups[0])
        w.add_expert_group_used_count(groups[1])
    w.add_rope_dimension_count(rope)
    _write_rope(w, cfg, deepseek=True)

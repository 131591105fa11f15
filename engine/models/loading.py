"""Build a MoECausalLM from a WeightSource, tensor by tensor, checking every name and shape.

Non-expert tensors go to ``device`` in ``dtype`` one at a time; routed experts stay on the CPU
and are handed to the expert backend one layer at a time (which converts them to its
precision), so host memory peaks at the final weights plus one layer's experts.
"""

from __future__ import annotations

import torch

from engine.errors import WeightsError
from engine.experts.backend import ExpertBackend, StackedExperts
from engine.loaders.base import WeightSource
from engine.models.attention_gqa import GQAAttention
from engine.models.attention_mla import MLAAttention
from engine.models.config import ModelConfig, parse_model_config
from engine.models.layers import Linear, RMSNorm, SwiGLUMLP
from engine.models.model import DecoderLayer, MoECausalLM
from engine.models.moe import MoEBlock
from engine.models.routing import DeepseekV2Router, DeepseekV3Router, SoftmaxTopKRouter

LATENT_NORM_EPS = 1e-6  # q_a_layernorm / kv_a_layernorm use the RMSNorm default in DeepSeek code


class TensorFetcher:
    """Reads named tensors from a source with shape checks, onto a device and dtype."""

    def __init__(self, source: WeightSource, device: torch.device, dtype: torch.dtype) -> None:
        self.source = source
        self.device = device
        self.dtype = dtype
        self._names = set(source.names())

    def has(self, name: str) -> bool:
        return name in self._names

    def cpu(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """``name`` on the CPU, in the checkpoint's dtype unless ``dtype`` is given."""
        if name not in self._names:
            raise WeightsError(f"tensor {name!r} is missing from {self.source.path}")
        found = tuple(self.source.shape(name))
        if found != tuple(shape):
            raise WeightsError(
                f"tensor {name!r} in {self.source.path} has shape {found}, expected {tuple(shape)}"
            )
        return self.source.load(name, dtype)

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """``name`` on the model device in the model dtype, in memory the model owns.

        ``copy=True``: a CPU model must not keep views of a memory-mapped checkpoint.
        """
        return self.cpu(name, shape).to(self.device, self.dtype, copy=True)

    def linear(self, prefix: str, out_dim: int, in_dim: int, bias: bool = False) -> Linear:
        return Linear(
            self.get(f"{prefix}.weight", (out_dim, in_dim)),
            self.get(f"{prefix}.bias", (out_dim,)) if bias else None,
        )

    def norm(self, prefix: str, dim: int, eps: float) -> RMSNorm:
        return RMSNorm(self.get(f"{prefix}.weight", (dim,)), eps)

    def mlp(self, prefix: str, hidden: int, inter: int) -> SwiGLUMLP:
        return SwiGLUMLP(
            self.linear(f"{prefix}.gate_proj", inter, hidden),
            self.linear(f"{prefix}.up_proj", inter, hidden),
            self.linear(f"{prefix}.down_proj", hidden, inter),
        )


def load_model(
    source: WeightSource,
    *,
    expert_backend: ExpertBackend,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    num_layers: int | None = None,
    mla_prefill: str = "naive",
) -> MoECausalLM:
    """Load the first ``num_layers`` layers (all when None) of ``source`` into a model."""
    config = parse_model_config(source.config)
    device = torch.device(device)
    n = config.num_layers if num_layers is None else num_layers
    if not 0 < n <= config.num_layers:
        raise WeightsError(f"num_layers {n} is outside 1..{config.num_layers}")
    fetch = TensorFetcher(source, device, dtype)
    h, v = config.hidden_size, config.vocab_size
    embed = fetch.get("model.embed_tokens.weight", (v, h))
    layers = [_layer(fetch, config, i, expert_backend) for i in range(n)]
    norm = fetch.norm("model.norm", h, config.rms_norm_eps)
    if config.tie_word_embeddings and not fetch.has("lm_head.weight"):
        lm_head = embed
    else:
        lm_head = fetch.get("lm_head.weight", (v, h))
    model = MoECausalLM(config, embed, layers, norm, lm_head, expert_backend, device, dtype)
    model.set_mla_prefill(mla_prefill)
    return model


def _layer(fetch: TensorFetcher, c: ModelConfig, i: int, backend: ExpertBackend) -> DecoderLayer:
    p = f"model.layers.{i}"
    attention = _mla(fetch, c, p) if c.is_mla else _gqa(fetch, c, p)
    if c.is_moe_layer(i):
        mlp: SwiGLUMLP | MoEBlock = _moe(fetch, c, i, backend)
    else:
        mlp = fetch.mlp(f"{p}.mlp", c.hidden_size, c.intermediate_size)
    return DecoderLayer(
        fetch.norm(f"{p}.input_layernorm", c.hidden_size, c.rms_norm_eps),
        attention,
        fetch.norm(f"{p}.post_attention_layernorm", c.hidden_size, c.rms_norm_eps),
        mlp,
    )


def _gqa(fetch: TensorFetcher, c: ModelConfig, p: str) -> GQAAttention:
    h, hd = c.hidden_size, c.head_dim
    return GQAAttention(
        q_proj=fetch.linear(f"{p}.self_attn.q_proj", c.num_heads * hd, h, c.qkv_bias),
        k_proj=fetch.linear(f"{p}.self_attn.k_proj", c.num_kv_heads * hd, h, c.qkv_bias),
        v_proj=fetch.linear(f"{p}.self_attn.v_proj", c.num_kv_heads * hd, h, c.qkv_bias),
        o_proj=fetch.linear(f"{p}.self_attn.o_proj", h, c.num_heads * hd),
        num_heads=c.num_heads,
        num_kv_heads=c.num_kv_heads,
        head_dim=hd,
        scale=c.softmax_scale,
    )


def _mla(fetch: TensorFetcher, c: ModelConfig, p: str) -> MLAAttention:
    a = f"{p}.self_attn"
    h, nh, bias = c.hidden_size, c.num_heads, c.attention_bias
    qk = c.qk_nope_head_dim + c.qk_rope_head_dim
    q_proj = q_a = q_norm = q_b = None
    if c.q_lora_rank is None:
        q_proj = fetch.linear(f"{a}.q_proj", nh * qk, h)
    else:
        q_a = fetch.linear(f"{a}.q_a_proj", c.q_lora_rank, h, bias)
        q_norm = fetch.norm(f"{a}.q_a_layernorm", c.q_lora_rank, LATENT_NORM_EPS)
        q_b = fetch.linear(f"{a}.q_b_proj", nh * qk, c.q_lora_rank)
    return MLAAttention(
        q_proj=q_proj,
        q_a_proj=q_a,
        q_a_norm=q_norm,
        q_b_proj=q_b,
        kv_a_proj=fetch.linear(
            f"{a}.kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, h, bias
        ),
        kv_a_norm=fetch.norm(f"{a}.kv_a_layernorm", c.kv_lora_rank, LATENT_NORM_EPS),
        kv_b_proj=fetch.linear(
            f"{a}.kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank
        ),
        o_proj=fetch.linear(f"{a}.o_proj", h, nh * c.v_head_dim, bias),
        num_heads=nh,
        nope_dim=c.qk_nope_head_dim,
        rope_dim=c.qk_rope_head_dim,
        v_dim=c.v_head_dim,
        kv_lora_rank=c.kv_lora_rank,
        scale=c.softmax_scale,
        interleaved=c.rope_interleave,
    )


def _moe(fetch: TensorFetcher, c: ModelConfig, i: int, backend: ExpertBackend) -> MoEBlock:
    p = f"model.layers.{i}.mlp"
    h, e = c.hidden_size, c.num_experts
    gate_w = fetch.get(f"{p}.gate.weight", (e, h))
    if c.family == "qwen2_moe":
        router = SoftmaxTopKRouter(gate_w, c.top_k, c.norm_topk_prob)
        shared = None
        shared_gate = None
        if c.shared_expert_intermediate_size:
            shared = fetch.mlp(f"{p}.shared_expert", h, c.shared_expert_intermediate_size)
            shared_gate = fetch.linear(f"{p}.shared_expert_gate", 1, h)
    else:
        if c.family == "deepseek_v2":
            router = DeepseekV2Router(
                gate_w, c.top_k, c.topk_method, c.n_group, c.topk_group,
                c.routed_scaling_factor, c.norm_topk_prob,
            )  # fmt: skip
        else:
            bias = fetch.cpu(f"{p}.gate.e_score_correction_bias", (e,), torch.float32)
            router = DeepseekV3Router(
                gate_w, bias.to(fetch.device), c.top_k, c.n_group, c.topk_group,
                c.routed_scaling_factor, c.norm_topk_prob,
            )  # fmt: skip
        shared_gate = None
        shared = None
        if c.n_shared_experts:
            inter = c.moe_intermediate_size * c.n_shared_experts
            shared = fetch.mlp(f"{p}.shared_experts", h, inter)
    _load_experts(fetch, c, i, backend)
    return MoEBlock(i, router, shared, shared_gate)


def _load_experts(fetch: TensorFetcher, c: ModelConfig, i: int, backend: ExpertBackend) -> None:
    """Read layer ``i``'s experts straight into one stacked ``gate_up``/``down`` pair (in the
    checkpoint's dtype, process memory) and hand them to the backend."""
    h, inter, e = c.hidden_size, c.moe_intermediate_size, c.num_experts
    p = f"model.layers.{i}.mlp.experts"
    first = fetch.cpu(f"{p}.0.gate_proj.weight", (inter, h))
    gate_up = torch.empty((e, 2 * inter, h), dtype=first.dtype)
    down = torch.empty((e, h, inter), dtype=first.dtype)
    for n in range(e):
        gate_up[n, :inter].copy_(
            first if n == 0 else fetch.cpu(f"{p}.{n}.gate_proj.weight", (inter, h))
        )
        gate_up[n, inter:].copy_(fetch.cpu(f"{p}.{n}.up_proj.weight", (inter, h)))
        down[n].copy_(fetch.cpu(f"{p}.{n}.down_proj.weight", (h, inter)))
    backend.prepare(i, StackedExperts(gate_up, down))

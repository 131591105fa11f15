"""The causal LM shared by all three families: embed, decoder layers, final norm, lm_head."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.experts.backend import ExpertBackend
from engine.experts.runner import ExpertRunner, ImmediateExpertRunner
from engine.models.attention_gqa import GQAAttention
from engine.models.attention_mla import MLAAttention
from engine.models.config import ModelConfig
from engine.models.layers import Linear, RMSNorm, SwiGLUMLP
from engine.models.moe import MoEBlock
from engine.models.rope import RotaryEmbedding
from engine.runtime.kv_cache import KVCache


@dataclass
class DecoderLayer:
    """Pre-norm attention and MLP (dense or MoE) with residual connections."""

    input_norm: RMSNorm
    attention: GQAAttention | MLAAttention
    post_attention_norm: RMSNorm
    mlp: SwiGLUMLP | MoEBlock

    def __call__(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache_layer,
        start: int,
        runner: ExpertRunner,
    ) -> torch.Tensor:
        x = x + self.attention(self.input_norm(x), cos, sin, cache_layer, start)
        h = self.post_attention_norm(x)
        return x + (self.mlp(h, runner) if isinstance(self.mlp, MoEBlock) else self.mlp(h))

    def step(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache_layer,  # noqa: ANN001
        position: torch.Tensor,
        visible: torch.Tensor,
        runner: ExpertRunner,
    ) -> torch.Tensor:
        """One decode token with static shapes (see the attention's ``decode_at``)."""
        h = self.input_norm(x)
        x = x + self.attention.decode_at(h, cos, sin, cache_layer, position, visible)
        h = self.post_attention_norm(x)
        return x + (self.mlp(h, runner) if isinstance(self.mlp, MoEBlock) else self.mlp(h))


class MoECausalLM:
    """A loaded model (one sequence at a time); routed experts live in ``expert_backend``.

    ``expert_runner`` is the extension point for routed experts (engine.experts.runner):
    every MoE layer starts its routed experts through it and collects them after its shared
    expert. Install another runner only for a block of code, with
    :func:`engine.experts.deferral.expert_split`, which restores the previous one.
    """

    def __init__(
        self,
        config: ModelConfig,
        embed: torch.Tensor,
        layers: list[DecoderLayer],
        norm: RMSNorm,
        lm_head: torch.Tensor,
        expert_backend: ExpertBackend,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.config = config
        self.embed = embed
        self.layers = layers
        self.norm = norm
        self.lm_head = lm_head
        self.expert_backend = expert_backend
        self.expert_runner: ExpertRunner = ImmediateExpertRunner(
            expert_backend, config.hidden_size, config.top_k
        )
        self.device = device
        self.dtype = dtype
        self.max_tokens_per_forward = 8192  # runners with fixed buffers size them by this
        self.runners: dict[int, ExpertRunner] = {}  # reusable runners by immediate experts
        self.rotary = RotaryEmbedding(config.rope, device)

    @property
    def num_layers(self) -> int:
        """Layers loaded (a layer slice loads fewer than the config's num_hidden_layers)."""
        return len(self.layers)

    def set_mla_prefill(self, mode: str) -> None:
        """Choose MLA prefill: ``naive`` or ``absorbed`` (decode is always absorbed)."""
        if mode not in ("naive", "absorbed"):
            raise ValueError(f"mla_prefill must be naive or absorbed, got {mode!r}")
        for layer in self.layers:
            if isinstance(layer.attention, MLAAttention):
                layer.attention.absorbed_prefill = mode == "absorbed"

    def new_cache(self, max_seq: int) -> KVCache:
        """Allocate a static KV cache for ``max_seq`` tokens on the model device."""
        c = self.config
        if c.is_mla:
            return KVCache.for_mla(
                self.num_layers,
                max_seq,
                c.kv_lora_rank,
                c.qk_rope_head_dim,
                self.dtype,
                self.device,
            )
        return KVCache.for_gqa(
            self.num_layers, max_seq, c.num_kv_heads, c.head_dim, self.dtype, self.device
        )

    @torch.inference_mode()
    def forward(
        self, token_ids: torch.Tensor, cache: KVCache, all_logits: bool = False
    ) -> torch.Tensor:
        """Run ``token_ids[T]`` after the ``cache.length`` tokens already cached.

        Returns float32 logits ``[T, vocab]`` (``all_logits``) or ``[vocab]`` for the last
        token, and advances ``cache.length`` by T.
        """
        t = int(token_ids.shape[0])
        start = cache.reserve(t)
        positions = torch.arange(start, start + t, device=self.device)
        cos, sin = self.rotary.cos_sin(positions)
        x = self.embed[token_ids.to(self.device)]
        self.expert_runner.start_pass()
        for layer, cache_layer in zip(self.layers, cache.layers, strict=True):
            x = layer(x, cos, sin, cache_layer, start, self.expert_runner)
        cache.length = start + t
        if not all_logits:
            x = x[-1:]
        logits = Linear(self.lm_head)(self.norm(x)).to(torch.float32)
        return logits if all_logits else logits[0]

    @torch.inference_mode()
    def forward_step(
        self, token: torch.Tensor, position: torch.Tensor, cache: KVCache, visible: torch.Tensor
    ) -> torch.Tensor:
        """One decode token with every shape static and every index a device tensor
        (``token[1]``, ``position[1]``, ``visible[window]`` = keys <= position, attention over
        the cache's first ``window`` positions): the step a CUDA Graph captures. Float32
        logits ``[vocab]``; ``cache.length`` is not touched."""
        cos, sin = self.rotary.cos_sin(position)
        x = self.embed[token]
        self.expert_runner.start_pass()
        for layer, cache_layer in zip(self.layers, cache.layers, strict=True):
            x = layer.step(x, cos, sin, cache_layer, position, visible, self.expert_runner)
        return Linear(self.lm_head)(self.norm(x)).to(torch.float32)[0]

    def close(self) -> None:
        """Drop weights (device memory is freed once nothing else holds them)."""
        self.runners.clear()
        self.expert_runner = None  # type: ignore[assignment]
        self.expert_backend.close()
        self.layers = []

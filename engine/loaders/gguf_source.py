"""GGUFSource: a llama.cpp GGUF file (qwen2moe or deepseek2) seen as Hugging Face-named tensors.

The file is memory-mapped by ``gguf.GGUFReader``; each ``load`` dequantizes one tensor
(F32, F16, BF16, Q8_0, Q4_0 and every other type ``gguf.quants`` can dequantize) from the
map, so nothing is read before it is asked for. llama.cpp's stacked routed experts
(``blk.N.ffn_gate_exps.weight``, numpy shape [E, out, in]) appear as per-expert HF names
and are sliced on load (only that expert's bytes are dequantized); ``load_stacked`` gives
the whole [E, out, in] tensor at once. DeepSeek's ``kv_b_proj`` is rebuilt from
``attn_k_b`` / ``attn_v_b`` when the file has the split (MLA) form. ``config`` is a
Hugging Face ``config.json`` equivalent rebuilt from the GGUF metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from engine.errors import WeightsError
from engine.loaders import gguf_names as names

_ARCH_KEY = "general.architecture"


def _open_reader(path: Path) -> GGUFReader:
    if not path.is_file():
        raise WeightsError(f"{path}: GGUF file not found")
    try:
        reader = GGUFReader(path, "r")
    except Exception as exc:  # the reader raises ValueError/IndexError/... on damaged files
        raise WeightsError(
            f"{path}: not a readable GGUF file (truncated or corrupt): {exc}"
        ) from exc
    size = path.stat().st_size
    for t in reader.tensors:
        if int(t.data_offset) + int(t.n_bytes) > size or t.data.nbytes != int(t.n_bytes):
            raise WeightsError(
                f"{path}: truncated GGUF file: tensor {t.name!r} needs bytes up to "
                f"{int(t.data_offset) + int(t.n_bytes)} but the file has {size}"
            )
    return reader


class _Meta:
    """Typed access to a reader's key/value metadata, with the ``{arch}.`` prefix filled in."""

    def __init__(self, reader: GGUFReader, arch: str) -> None:
        self._reader = reader
        self.arch = arch

    def get(self, key: str, default: Any = None) -> Any:
        field = self._reader.get_field(key.replace("{arch}", self.arch))
        if field is None or not field.types:
            return default
        return field.contents()

    def arr_len(self, key: str) -> int | None:
        field = self._reader.get_field(key)
        return None if field is None else len(field.data)


def _shape(t: Any) -> tuple[int, ...]:
    """Logical numpy-order shape of a reader tensor (ggml stores ne reversed)."""
    return tuple(int(x) for x in reversed(t.shape.tolist()))


def _rope_fields(meta: _Meta, theta: float, deepseek: bool) -> dict[str, Any]:
    """rope_theta / rope_scaling (real checkpoints' keys) and rope_parameters (transformers 5)."""
    stype = meta.get("{arch}.rope.scaling.type", "none")
    factor = meta.get("{arch}.rope.scaling.factor")
    scaling: dict[str, Any] | None = None
    if stype == "yarn" and factor is not None:
        scaling = {"type": "yarn", "rope_type": "yarn", "factor": float(factor)}
        orig = meta.get("{arch}.rope.scaling.original_context_length")
        if orig is not None:
            scaling["original_max_position_embeddings"] = int(orig)
        for key, hf in (
            ("yarn_beta_fast", "beta_fast"),
            ("yarn_beta_slow", "beta_slow"),
            ("yarn_ext_factor", "extrapolation_factor"),
            ("yarn_attn_factor", "attention_factor"),
        ):
            val = meta.get("{arch}.rope.scaling." + key)
            if val is not None:
                scaling[hf] = float(val)
        log_mul = meta.get("{arch}.rope.scaling.yarn_log_multiplier")
        if deepseek and log_mul is not None:
            # convert_hf_to_gguf writes 0.1 * mscale_all_dim; DeepSeek's mscale == mscale_all_dim
            mscale_all_dim = round(float(log_mul) / 0.1, 6)
            scaling["mscale_all_dim"] = mscale_all_dim
            scaling["mscale"] = mscale_all_dim
    elif stype == "linear" and factor is not None:
        scaling = {"type": "linear", "rope_type": "linear", "factor": float(factor)}
    params = {"rope_type": "default", "rope_theta": theta}
    if scaling is not None:
        params.update({k: v for k, v in scaling.items() if k != "type"})
    return {"rope_theta": theta, "rope_scaling": scaling, "rope_parameters": params}


def _common_config(meta: _Meta, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    if "token_embd.weight" not in shapes:
        raise WeightsError("GGUF file has no token_embd.weight tensor")
    vocab = shapes["token_embd.weight"][0]
    heads = int(meta.get("{arch}.attention.head_count"))
    return {
        "vocab_size": int(meta.get("{arch}.vocab_size", vocab)),
        "hidden_size": int(meta.get("{arch}.embedding_length")),
        "num_hidden_layers": int(meta.get("{arch}.block_count")),
        "num_attention_heads": heads,
        "max_position_embeddings": int(meta.get("{arch}.context_length", 4096)),
        "rms_norm_eps": float(meta.get("{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "num_experts_per_tok": int(meta.get("{arch}.expert_used_count")),
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in shapes,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }


def _ff_len(meta: _Meta, key: str, shapes: dict[str, tuple[int, ...]], tensor: str) -> int | None:
    val = meta.get(key)
    if val is not None:
        return int(val)
    return shapes[tensor][-2] if tensor in shapes else None


def qwen2moe_config(meta: _Meta, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """HF Qwen2MoeForCausalLM config rebuilt from qwen2moe GGUF metadata."""
    cfg = _common_config(meta, shapes)
    n_layer = cfg["num_hidden_layers"]
    first_moe = next((i for i in range(n_layer) if f"blk.{i}.ffn_gate_exps.weight" in shapes), 0)
    cfg.update(
        architectures=["Qwen2MoeForCausalLM"],
        model_type="qwen2_moe",
        num_key_value_heads=int(
            meta.get("{arch}.attention.head_count_kv", cfg["num_attention_heads"])
        ),
        intermediate_size=int(meta.get("{arch}.feed_forward_length", 0)) or None,
        moe_intermediate_size=_ff_len(
            meta,
            "{arch}.expert_feed_forward_length",
            shapes,
            f"blk.{first_moe}.ffn_gate_exps.weight",
        ),
        shared_expert_intermediate_size=_ff_len(
            meta,
            "{arch}.expert_shared_feed_forward_length",
            shapes,
            f"blk.{first_moe}.ffn_gate_shexp.weight",
        ),
        num_experts=int(meta.get("{arch}.expert_count")),
        norm_topk_prob=bool(meta.get("{arch}.expert_weights_norm", False)),
        decoder_sparse_step=1,
        mlp_only_layers=[],
        qkv_bias="blk.0.attn_q.bias" in shapes,
        use_sliding_window=False,
        sliding_window=None,
    )
    cfg.update(_rope_fields(meta, float(meta.get("{arch}.rope.freq_base", 10000.0)), False))
    return cfg


def deepseek2_config(meta: _Meta, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """HF DeepseekV2/V3ForCausalLM config rebuilt from deepseek2 GGUF metadata."""
    cfg = _common_config(meta, shapes)
    rope_dim = int(meta.get("{arch}.rope.dimension_count"))
    k_mla = meta.get("{arch}.attention.key_length_mla")
    v_mla = meta.get("{arch}.attention.value_length_mla")
    if k_mla and v_mla:  # current converter: MQA over the latent, per-head sizes in *_mla
        qk_head, v_head = int(k_mla), int(v_mla)
    else:  # legacy files: plain per-head sizes
        qk_head = int(meta.get("{arch}.attention.key_length"))
        v_head = int(meta.get("{arch}.attention.value_length"))
    q_lora = int(meta.get("{arch}.attention.q_lora_rank", 0) or 0)
    gating = int(meta.get("{arch}.expert_gating_func", 0) or 0)
    has_bias = any(n.endswith("exp_probs_b.bias") for n in shapes)
    v3 = gating == 2 or has_bias
    n_group = int(meta.get("{arch}.expert_group_count", 1) or 1)
    topk_method = "noaux_tc" if v3 else ("group_limited_greedy" if n_group > 1 else "greedy")
    cfg.update(
        architectures=["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
        model_type="deepseek_v3" if v3 else "deepseek_v2",
        num_key_value_heads=cfg["num_attention_heads"],
        intermediate_size=int(meta.get("{arch}.feed_forward_length")),
        moe_intermediate_size=int(meta.get("{arch}.expert_feed_forward_length")),
        n_routed_experts=int(meta.get("{arch}.expert_count")),
        n_shared_experts=int(meta.get("{arch}.expert_shared_count", 0) or 0) or None,
        first_k_dense_replace=int(meta.get("{arch}.leading_dense_block_count", 0) or 0),
        moe_layer_freq=1,
        q_lora_rank=q_lora or None,
        kv_lora_rank=int(meta.get("{arch}.attention.kv_lora_rank")),
        qk_rope_head_dim=rope_dim,
        qk_nope_head_dim=qk_head - rope_dim,
        v_head_dim=v_head,
        routed_scaling_factor=float(meta.get("{arch}.expert_weights_scale", 1.0)),
        norm_topk_prob=bool(meta.get("{arch}.expert_weights_norm", False)),
        scoring_func="sigmoid" if gating == 2 else "softmax",
        topk_method=topk_method,
        n_group=n_group,
        topk_group=int(meta.get("{arch}.expert_group_used_count", 1) or 1),
        attention_bias=False,
        rope_interleave=True,
    )
    cfg.update(_rope_fields(meta, float(meta.get("{arch}.rope.freq_base", 10000.0)), True))
    return cfg


class GGUFSource:
    """A qwen2moe / deepseek2 GGUF file as a WeightSource (Hugging Face names, lazy loads)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._reader: GGUFReader | None = _open_reader(self.path)
        arch_field = self._reader.get_field(_ARCH_KEY)
        if arch_field is None:
            raise WeightsError(f"{self.path}: GGUF file has no {_ARCH_KEY} key")
        self.arch: str = str(arch_field.contents())
        names.check_arch(self.arch, f"GGUF file {self.path}")
        self._tensors = {t.name: t for t in self._reader.tensors}
        shapes = {n: _shape(t) for n, t in self._tensors.items()}
        meta = _Meta(self._reader, self.arch)
        try:
            build = qwen2moe_config if self.arch == "qwen2moe" else deepseek2_config
            self.config: dict[str, Any] = build(meta, shapes)
        except (TypeError, ValueError) as exc:  # int(None): a required key is missing
            raise WeightsError(f"{self.path}: incomplete {self.arch} metadata: {exc}") from exc
        self._index: dict[str, tuple[Any, ...]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._build_index(shapes)

    # -- index -------------------------------------------------------------------------
    def _build_index(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for gname, shape in shapes.items():
            experts = names.parse_gguf_experts(gname)
            if experts is not None:
                layer, proj = experts
                for e in range(shape[0]):
                    self._add(names.hf_expert_name(layer, e, proj), ("expert", gname, e), shape[1:])
                continue
            if gname.endswith(".attn_k_b.weight"):
                if gname.replace(".attn_k_b.", ".attn_kv_b.") not in shapes:  # fused one wins
                    self._add_split_kv_b(gname, shapes)
                continue
            if gname.endswith(".attn_v_b.weight"):
                continue
            hf = names.gguf_to_hf(self.arch, gname)
            if hf is None:
                continue  # e.g. rope_freqs, MTP/nextn tensors: not part of the HF model
            if hf.endswith("mlp.shared_expert_gate.weight") and len(shape) == 1:
                shape = (1, shape[0])
            self._add(hf, ("plain", gname), shape)

    def _add(self, hf: str, loc: tuple[Any, ...], shape: tuple[int, ...]) -> None:
        self._index[hf] = loc
        self._shapes[hf] = tuple(shape)

    def _add_split_kv_b(self, k_name: str, shapes: dict[str, tuple[int, ...]]) -> None:
        v_name = k_name.replace(".attn_k_b.", ".attn_v_b.")
        if v_name not in shapes:
            raise WeightsError(
                f"{self.path}: tensor {v_name!r} is missing (its pair {k_name!r} exists)"
            )
        n_head, kv_lora, nope = shapes[k_name]
        v_head = shapes[v_name][1]
        layer = int(k_name.split(".")[1])
        hf = f"model.layers.{layer}.self_attn.kv_b_proj.weight"
        self._add(hf, ("kv_b_split", k_name, v_name), (n_head * (nope + v_head), kv_lora))

    # -- WeightSource ------------------------------------------------------------------
    def names(self) -> list[str]:
        """All tensor names available, in Hugging Face naming."""
        return list(self._index)

    def shape(self, name: str) -> tuple[int, ...]:
        """Logical shape of ``name`` without reading data."""
        self._locate(name)
        return self._shapes[name]

    def gguf_type(self, name: str) -> str:
        """GGML type the tensor is stored in (F32, F16, BF16, Q8_0, Q4_0, ...)."""
        loc = self._locate(name)
        return GGMLQuantizationType(self._tensors[loc[1]].tensor_type).name

    def load(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read and dequantize ``name`` on the CPU (float32 unless ``dtype`` is given)."""
        loc = self._locate(name)
        if loc[0] == "expert":
            t = self._tensors[loc[1]]
            out = self._dequant(t.data[loc[2]], t.tensor_type, loc[1])
        elif loc[0] == "kv_b_split":
            k_b = self._dequant_tensor(loc[1])  # [n_head, kv_lora, nope]
            v_b = self._dequant_tensor(loc[2])  # [n_head, v_head, kv_lora]
            out = torch.cat([k_b.transpose(1, 2), v_b], dim=1).reshape(-1, k_b.shape[1])
        else:
            out = self._dequant_tensor(loc[1])
        out = out.reshape(self._shapes[name])
        return out if dtype is None else out.to(dtype)

    def load_stacked(
        self, layer: int, which: str, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """A layer's routed experts for one projection as one [E, out, in] tensor."""
        gname = names.gguf_experts_name(layer, names.normalize_proj(which))
        if gname not in self._tensors:
            raise WeightsError(f"{self.path}: tensor {gname!r} (layer {layer} {which}) is missing")
        out = self._dequant_tensor(gname)
        return out if dtype is None else out.to(dtype)

    def close(self) -> None:
        """Drop the memory map."""
        self._reader = None
        self._tensors = {}

    def __enter__(self) -> GGUFSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------
    def _locate(self, name: str) -> tuple[Any, ...]:
        loc = self._index.get(name)
        if loc is None:
            raise WeightsError(f"{self.path}: tensor {name!r} is missing from the GGUF file")
        if self._reader is None:
            raise WeightsError(f"{self.path}: source is closed (reading {name!r})")
        return loc

    def _dequant_tensor(self, gname: str) -> torch.Tensor:
        t = self._tensors[gname]
        return self._dequant(t.data, t.tensor_type, gname).reshape(_shape(t))

    def _dequant(self, data: np.ndarray, qtype: int, gname: str) -> torch.Tensor:
        try:
            arr = dequantize(data, GGMLQuantizationType(qtype))
        except NotImplementedError as exc:
            raise WeightsError(f"{self.path}: tensor {gname!r}: {exc}") from exc
        if not arr.flags.writeable or arr.dtype != np.float32:
            arr = np.array(arr, dtype=np.float32)
        return torch.from_numpy(arr)

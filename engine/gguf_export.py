"""Export a Hugging Face safetensors directory to a GGUF file that an unmodified llama.cpp loads.

Covers llama.cpp's ``qwen2moe`` (Qwen2-MoE) and ``deepseek2`` (DeepSeek-V2/V2.5/V3)
architectures and follows its ``convert_hf_to_gguf.py``: llama.cpp tensor names, routed
experts stacked per projection into [E, out, in], DeepSeek's ``kv_b_proj`` split into
``attn_k_b`` (transposed) / ``attn_v_b`` for MLA (or kept fused with ``legacy_kv_b``),
V3's ``e_score_correction_bias`` as ``exp_probs_b.bias``, norms / biases / routers kept
F32, tensors whose rows do not fit the quantization block written F16, hyperparameters
under llama.cpp's keys and the byte-level BPE vocabulary from ``tokenizer.json``.
Tensors are read one at a time (FP8 block-quantized weights dequantized with their
``_scale_inv``) and written straight to the file, so peak memory is one stacked expert
tensor. ``export_gguf_cached`` reuses an up-to-date export and writes new ones atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import (
    GGML_QUANT_SIZES,
    GGML_QUANT_VERSION,
    ExpertGatingFuncType,
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
    RopeScalingType,
    TokenType,
)
from gguf.quants import quant_shape_to_byte_shape, quantize
from safetensors import safe_open
from tqdm import tqdm

from engine.errors import UnsupportedModelError, WeightsError
from engine.loaders import gguf_names as names
from engine.loaders.fp8 import SCALE_SUFFIX, block_size_from_config, dequant_fp8_block

log = logging.getLogger(__name__)

EXPORT_VERSION = 1  # part of the cache key: bump when the files this module writes change

OUT_TYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
}

QWEN2_PRE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# -- reading the checkpoint -----------------------------------------------------------------
class _Checkpoint:
    """A safetensors directory read tensor by tensor (FP8 weights dequantized on read)."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir
        cfg_path = model_dir / "config.json"
        if not cfg_path.is_file():
            raise WeightsError(f"{model_dir}: no config.json")
        self.config: dict[str, Any] = json.loads(cfg_path.read_text())
        self.fp8_block = block_size_from_config(self.config)
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(
                {model_dir / f for f in json.loads(index.read_text())["weight_map"].values()}
            )
        else:
            files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise WeightsError(f"{model_dir}: no *.safetensors files")
        self._handles: dict[Path, Any] = {}
        self.where: dict[str, Path] = {}
        for f in files:
            for key in self._handle(f).keys():  # noqa: SIM118 - safe_open is not iterable
                self.where[key] = f

    def _handle(self, f: Path) -> Any:
        if f not in self._handles:
            if not f.is_file():
                raise WeightsError(f"{f}: safetensors shard is missing")
            try:
                self._handles[f] = safe_open(str(f), framework="pt")
            except Exception as exc:  # safetensors raises SafetensorError on damaged headers
                raise WeightsError(f"{f}: unreadable safetensors file: {exc}") from exc
        return self._handles[f]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(self._file(name)).get_slice(name).get_shape())

    def _file(self, name: str) -> Path:
        if name not in self.where:
            raise WeightsError(f"{self.dir}: tensor {name!r} is missing")
        return self.where[name]

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 numpy (FP8 block-quantized weights dequantized)."""
        f = self._file(name)
        try:
            t = self._handle(f).get_tensor(name)
        except Exception as exc:
            raise WeightsError(f"{f}: cannot read tensor {name!r}: {exc}") from exc
        if t.dtype == torch.float8_e4m3fn:
            scale = name + SCALE_SUFFIX
            if scale not in self.where:
                raise WeightsError(f"{self.dir}: FP8 tensor {name!r} has no {scale!r}")
            t = dequant_fp8_block(
                t,
                self._handle(self.where[scale]).get_tensor(scale),
                self.fp8_block or (128, 128),
                name,
            )
        return t.to(torch.float32).numpy()


# -- the tensor plan ------------------------------------------------------------------------
@dataclass
class _Item:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order
    produce: Callable[[], np.ndarray]  # float32 data, loaded when written
    qtype: GGMLQuantizationType = GGMLQuantizationType.F32


def _tensor_type(
    gname: str, shape: tuple[int, ...], base: GGMLQuantizationType
) -> GGMLQuantizationType:
    """Per-tensor type as convert_hf_to_gguf.py chooses it."""
    if len(shape) <= 1 or gname.endswith("_norm.weight") or not gname.endswith(".weight"):
        return GGMLQuantizationType.F32
    if gname.endswith((".ffn_gate_inp.weight", ".ffn_gate_inp_shexp.weight")):
        return GGMLQuantizationType.F32
    if base == GGMLQuantizationType.Q4_0 and gname == "output.weight":
        base = GGMLQuantizationType.Q8_0  # llama-quantize keeps the output higher (Q6_K)
    block = GGML_QUANT_SIZES[base][0]
    if shape[-1] % block != 0:
        log.debug("%s: row of %d does not fit %s blocks, writing F16", gname, shape[-1], base.name)
        return GGMLQuantizationType.F16
    return base


def _stacked(
    ck: _Checkpoint, hf_names: list[str], shape: tuple[int, ...]
) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        out = np.empty((len(hf_names), *shape), dtype=np.float32)
        for e, n in enumerate(hf_names):
            data = ck.get(n)
            if data.shape != shape:
                raise WeightsError(
                    f"{ck.dir}: tensor {n!r} has shape {data.shape}, expected {shape}"
                )
            out[e] = data
        return out

    return produce


def _split_kv_b(
    ck: _Checkpoint, hf: str, cfg: dict[str, Any], part: str
) -> Callable[[], np.ndarray]:
    heads, nope = cfg["num_attention_heads"], cfg["qk_nope_head_dim"]

    def produce() -> np.ndarray:
        kv_b = ck.get(hf)
        kv_b = kv_b.reshape(heads, -1, kv_b.shape[-1])  # [H, nope + v, kv_lora]
        if part == "k":
            return np.ascontiguousarray(kv_b[:, :nope, :].transpose(0, 2, 1))  # [H, kv_lora, nope]
        return np.ascontiguousarray(kv_b[:, nope:, :])  # [H, v, kv_lora]

    return produce


def _layer_items(
    ck: _Checkpoint,
    arch: str,
    cfg: dict[str, Any],
    layer: int,
    hf_names: list[str],
    legacy_kv_b: bool,
) -> Iterator[_Item]:
    experts: dict[str, dict[int, str]] = {}
    for hf in hf_names:
        if hf.endswith(SCALE_SUFFIX) or hf.endswith("rotary_emb.inv_freq"):
            continue
        parsed = names.parse_hf_expert(hf)
        if parsed is not None:
            experts.setdefault(parsed[2], {})[parsed[1]] = hf
            continue
        if arch == "deepseek2" and hf.endswith("kv_b_proj.weight") and not legacy_kv_b:
            heads, nope, v = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
            kv_lora = ck.shape(hf)[1]
            yield _Item(
                f"blk.{layer}.attn_k_b.weight",
                (heads, kv_lora, nope),
                _split_kv_b(ck, hf, cfg, "k"),
            )
            yield _Item(
                f"blk.{layer}.attn_v_b.weight", (heads, v, kv_lora), _split_kv_b(ck, hf, cfg, "v")
            )
            continue
        gname = names.hf_to_gguf(arch, hf)
        if gname is None:
            raise UnsupportedModelError(
                f"{ck.dir}: tensor {hf!r} has no llama.cpp {arch} equivalent"
            )
        yield _Item(gname, ck.shape(hf), lambda hf=hf: ck.get(hf))
    n_exp = cfg.get("num_experts") if arch == "qwen2moe" else cfg.get("n_routed_experts")
    for proj in ("down", "gate", "up") if experts else ():
        have = experts.get(proj, {})
        missing = [names.hf_expert_name(layer, e, proj) for e in range(n_exp) if e not in have]
        if missing:
            raise WeightsError(f"{ck.dir}: tensor {missing[0]!r} is missing")
        ordered = [experts[proj][e] for e in range(n_exp)]
        shape = ck.shape(ordered[0])
        yield _Item(
            names.gguf_experts_name(layer, proj), (n_exp, *shape), _stacked(ck, ordered, shape)
        )


def _plan(ck: _Checkpoint, arch: str, cfg: dict[str, Any], legacy_kv_b: bool) -> list[_Item]:
    by_layer: dict[int, list[str]] = {}
    for hf in sorted(ck.where):
        if hf.startswith("model.layers."):
            by_layer.setdefault(int(hf.split(".")[2]), []).append(hf)
    items = [
        _Item(
            "token_embd.weight",
            ck.shape("model.embed_tokens.weight"),
            lambda: ck.get("model.embed_tokens.weight"),
        )
    ]
    for layer in range(cfg["num_hidden_layers"]):  # later layers (DeepSeek-V3's MTP) are skipped
        if layer not in by_layer:
            raise WeightsError(f"{ck.dir}: no tensors for layer {layer}")
        items.extend(_layer_items(ck, arch, cfg, layer, by_layer[layer], legacy_kv_b))
    items.append(
        _Item(
            "output_norm.weight", ck.shape("model.norm.weight"), lambda: ck.get("model.norm.weight")
        )
    )
    if "lm_head.weight" in ck.where:
        items.append(
            _Item("output.weight", ck.shape("lm_head.weight"), lambda: ck.get("lm_head.weight"))
        )
    elif arch == "qwen2moe":  # llama.cpp's qwen2moe requires output.weight: write the tied copy
        items.append(
            _Item(
                "output.weight",
                ck.shape("model.embed_tokens.weight"),
                lambda: ck.get("model.embed_tokens.weight"),
            )
        )
    return items


# -- hyperparameters ------------------------------------------------------------------------
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


def _write_qwen2moe(w: GGUFWriter, cfg: dict[str, Any]) -> None:
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


def _write_deepseek2(w: GGUFWriter, cfg: dict[str, Any], legacy_kv_b: bool) -> None:
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
    if cfg.get("topk_method", "noaux_tc" if v3 else "greedy") != "greedy" and cfg.get("n_group"):
        w.add_expert_group_count(int(cfg["n_group"]))
        w.add_expert_group_used_count(int(cfg["topk_group"]))
    w.add_rope_dimension_count(rope)
    _write_rope(w, cfg, deepseek=True)


# -- tokenizer ------------------------------------------------------------------------------
def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` name for a byte-level BPE tokenizer.json."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    patterns = [
        (p.get("pattern") or {}).get("Regex", "") for p in parts if p.get("type") == "Split"
    ]
    if QWEN2_PRE_REGEX in patterns:
        return "qwen2"
    if any(p.startswith(r"\s?[A-Za-zµ") for p in patterns):
        return "deepseek-llm"
    if r"\p{N}{1,3}" in patterns and any("一-龥" in p for p in patterns):
        return "deepseek-v3"
    if not patterns and any(
        p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts
    ):
        return "gpt-2"
    return "default"


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for each byte (the byte-level BPE alphabet)."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def _token_id(tok: Any, vocab: dict[str, int]) -> int | None:
    content = tok.get("content") if isinstance(tok, dict) else tok
    return vocab.get(content) if isinstance(content, str) else None


def _write_vocab(w: GGUFWriter, model_dir: Path, cfg: dict[str, Any]) -> None:
    n_vocab = cfg["vocab_size"]
    tok_path = model_dir / "tokenizer.json"
    tcfg_path = model_dir / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text()) if tcfg_path.is_file() else {}
    if tok_path.is_file():
        tj = json.loads(tok_path.read_text())
        model = tj.get("model") or {}
        if model.get("type") != "BPE":
            raise UnsupportedModelError(
                f"{tok_path}: only byte-level BPE tokenizers export to GGUF"
            )
        vocab: dict[str, int] = dict(model["vocab"])
        added = {a["id"]: a for a in tj.get("added_tokens", [])}
        vocab.update({a["content"]: i for i, a in added.items()})
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        pre = pre_tokenizer_name(tj)
    else:
        log.warning("%s: no tokenizer.json; writing a synthetic byte-level vocabulary", model_dir)
        vocab = {t: i for i, t in enumerate(_bytes_to_unicode()[:n_vocab])}
        added, merges, pre = {}, [], "default"
    if max(vocab.values()) >= n_vocab:
        raise WeightsError(f"{tok_path}: token id {max(vocab.values())} >= vocab_size {n_vocab}")
    reverse = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(reverse[i])
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, add in (
        ("bos", w.add_bos_token_id),
        ("eos", w.add_eos_token_id),
        ("pad", w.add_pad_token_id),
    ):
        tid = cfg.get(f"{key}_token_id")
        if isinstance(tid, list):
            tid = tid[0] if tid else None
        if tid is None:
            tid = _token_id(tcfg.get(f"{key}_token"), vocab)
        if tid is not None:
            add(int(tid))
    for key, add in (
        ("add_bos_token", w.add_add_bos_token),
        ("add_eos_token", w.add_add_eos_token),
    ):
        if isinstance(tcfg.get(key), bool):
            add(tcfg[key])
    if isinstance(tcfg.get("chat_template"), str):
        w.add_chat_template(tcfg["chat_template"])


# -- export ---------------------------------------------------------------------------------
def arch_of(config: dict[str, Any], where: str) -> str:
    """llama.cpp architecture for a HF config (UnsupportedModelError naming it otherwise)."""
    model_type = config.get("model_type")
    arch = names.HF_MODEL_TYPE_TO_ARCH.get(str(model_type))
    if arch is None:
        archs = config.get("architectures") or [model_type]
        raise UnsupportedModelError(
            f"{where}: architecture {archs[0]!r} (model_type {model_type!r}) cannot be exported to "
            f"GGUF; supported: {', '.join(sorted(names.HF_MODEL_TYPE_TO_ARCH))}"
        )
    return arch


def _nbytes(
    shape: tuple[int, ...], qtype: GGMLQuantizationType
) -> tuple[tuple[int, ...], Any, int]:
    if qtype == GGMLQuantizationType.F32:
        return shape, np.float32, math.prod(shape) * 4
    if qtype == GGMLQuantizationType.F16:
        return shape, np.float16, math.prod(shape) * 2
    byte_shape = quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, np.uint8, math.prod(byte_shape)


def export_gguf(
    model_dir: Path,
    out_path: Path,
    out_type: str = "f16",
    progress: bool = True,
    *,
    legacy_kv_b: bool = False,
) -> Path:
    """Write ``model_dir`` (HF safetensors) as a llama.cpp GGUF of ``out_type``; returns the path.

    ``legacy_kv_b`` keeps DeepSeek's fused ``attn_kv_b`` (pre-MLA llama.cpp layout) instead
    of the split ``attn_k_b`` / ``attn_v_b`` that current llama.cpp writes.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if out_type not in OUT_TYPES:
        raise ValueError(f"out_type must be one of {sorted(OUT_TYPES)}, got {out_type!r}")
    base, ftype = OUT_TYPES[out_type]
    ck = _Checkpoint(model_dir)
    cfg = ck.config
    arch = arch_of(cfg, str(model_dir))
    items = _plan(ck, arch, cfg, legacy_kv_b)
    w = GGUFWriter(path=None, arch=arch)
    w.add_name(model_dir.name)
    if arch == "qwen2moe":
        _write_qwen2moe(w, cfg)
    else:
        _write_deepseek2(w, cfg, legacy_kv_b)
    w.add_file_type(ftype)
    w.add_quantization_version(GGML_QUANT_VERSION)
    _write_vocab(w, model_dir, cfg)
    for it in items:
        it.qtype = _tensor_type(it.name, it.shape, base)
        shape, np_dtype, nbytes = _nbytes(it.shape, it.qtype)
        raw = None if it.qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) else it.qtype
        w.add_tensor_info(it.name, shape, np.dtype(np_dtype), nbytes, raw_dtype=raw)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f"{out_path.name}.tmp{os.getpid()}")
    try:
        w.write_header_to_file(path=tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for it in tqdm(items, desc=out_path.name, unit="tensor", disable=not progress):
            data = it.produce()
            if data.shape != it.shape:
                raise WeightsError(
                    f"{model_dir}: {it.name} has shape {data.shape}, expected {it.shape}"
                )
            w.write_tensor_data(quantize(data, it.qtype))
        w.close()
        os.replace(tmp, out_path)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return out_path


def export_cache_key(model_dir: Path, out_type: str) -> str:
    """Content key of an export: config.json bytes, other files' sizes/mtimes, out_type."""
    model_dir = Path(model_dir)
    h = hashlib.sha256(f"hmoe-gguf v{EXPORT_VERSION} {out_type}\n".encode())
    h.update((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".json") and f.name != "config.json":
            st = f.stat()
            h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def default_cache_dir(model_dir: Path) -> Path:
    """Beside the model (``<model_dir>/.gguf_cache``) when writable, else ~/.cache/hmoe/gguf."""
    model_dir = Path(model_dir)
    if os.access(model_dir, os.W_OK):
        return model_dir / ".gguf_cache"
    return Path.home() / ".cache" / "hmoe" / "gguf"


def export_gguf_cached(
    model_dir: Path, out_type: str = "f16", cache_dir: Path | None = None, progress: bool = False
) -> Path:
    """An up-to-date GGUF export of ``model_dir``: reused when cached, else written atomically."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise WeightsError(f"{model_dir}: no config.json")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(model_dir)
    out = cache / f"{model_dir.name}-{out_type}-{export_cache_key(model_dir, out_type)}.gguf"
    if out.is_file():
        return out
    return export_gguf(model_dir, out, out_type, progress)

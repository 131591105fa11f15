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
tensor. ``vocab_limit`` V writes a timing copy: the first V rows of the embedding and the
output head and a byte-level stand-in vocabulary of V tokens (for prefill on layer slices,
:mod:`baselines.llamacpp`). ``export_gguf_cached`` reuses an up-to-date export and writes
new ones atomically; a file that cannot fit its disk fails before it is started
(:mod:`baselines.llamacpp.disk_space`).
Q8_0/Q4_0 are quantized by llama.cpp's own ``llama_model_quantize`` (from the F16 export)
when llama-cpp-python is installed, else by gguf-py; that runs in a torch-free child
process (:mod:`baselines.llamacpp.quantize`; :class:`LlamaCppLog`, re-exported here, lives in
:mod:`baselines.llamacpp.log`). ``main`` is ``hmoe export-gguf``.
The vocabulary part lives in :mod:`baselines.llamacpp.gguf_vocab`, the hyperparameter keys in
:mod:`baselines.llamacpp.gguf_hparams`.
"""

from __future__ import annotations

import hashlib
import importlib.util
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
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
)
from gguf.quants import quant_shape_to_byte_shape, quantize
from safetensors import safe_open
from tqdm import tqdm

from baselines.llamacpp.disk_space import require_free_space
from baselines.llamacpp.gguf_hparams import write_deepseek2, write_qwen2moe
from baselines.llamacpp.gguf_vocab import (
    QWEN2_PRE_REGEX,
    STAND_IN_MIN_VOCAB,
    pre_tokenizer_name,
    write_vocab,
)
from baselines.llamacpp.log import LlamaCppLog
from baselines.llamacpp.quantize import LLAMA_FTYPES, quantize_with_llamacpp
from engine.errors import UnsupportedModelError, WeightsError
from engine.loaders import gguf_names as names
from engine.loaders.fp8 import SCALE_SUFFIX, block_size_from_config, dequant_fp8_block

__all__ = [
    "EXPORT_VERSION",
    "OUT_TYPES",
    "QUANTIZERS",
    "QWEN2_PRE_REGEX",
    "LlamaCppLog",
    "arch_of",
    "default_cache_dir",
    "export_cache_key",
    "export_gguf",
    "export_gguf_cached",
    "llamacpp_importable",
    "pre_tokenizer_name",
    "quantize_with_llamacpp",
    "resolve_quantizer",
]

log = logging.getLogger(__name__)

EXPORT_VERSION = 2  # part of the cache key: bump when the files this module writes change

OUT_TYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
}
# Which code quantizes q8_0/q4_0: llama.cpp's own llama_model_quantize (through
# llama-cpp-python, from an F16 export), gguf-py's numpy quantizers, or "auto" (llama.cpp
# when llama-cpp-python is importable). Float types are always written by gguf-py.
QUANTIZERS = ("auto", "llama.cpp", "gguf-py")


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


def _head(ck: _Checkpoint, name: str, rows: int | None) -> _Item:
    """An embedding/output matrix ``name`` (HF), only its first ``rows`` rows when given."""
    shape = ck.shape(name)
    if rows is None:
        return _Item("", shape, lambda: ck.get(name))
    return _Item("", (rows, *shape[1:]), lambda: np.ascontiguousarray(ck.get(name)[:rows]))


def _plan(
    ck: _Checkpoint, arch: str, cfg: dict[str, Any], legacy_kv_b: bool, head_rows: int | None
) -> list[_Item]:
    by_layer: dict[int, list[str]] = {}
    for hf in sorted(ck.where):
        if hf.startswith("model.layers."):
            by_layer.setdefault(int(hf.split(".")[2]), []).append(hf)
    embed = _head(ck, "model.embed_tokens.weight", head_rows)
    items = [_Item("token_embd.weight", embed.shape, embed.produce)]
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
        head = _head(ck, "lm_head.weight", head_rows)
        items.append(_Item("output.weight", head.shape, head.produce))
    elif arch == "qwen2moe" or head_rows is not None:
        # llama.cpp's qwen2moe requires output.weight, and a cut embedding must not stand
        # for a tied head: write the (cut) tied copy
        items.append(_Item("output.weight", embed.shape, embed.produce))
    return items


# -- llama.cpp's own quantizer --------------------------------------------------------------
def llamacpp_importable() -> bool:
    """True when llama-cpp-python (module ``llama_cpp``) can be imported here."""
    return importlib.util.find_spec("llama_cpp") is not None


def resolve_quantizer(quantizer: str, out_type: str) -> str:
    """``llama.cpp`` or ``gguf-py``: who writes ``out_type`` for the requested ``quantizer``."""
    if quantizer not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
    if out_type not in LLAMA_FTYPES:
        return "gguf-py"
    if quantizer == "auto":
        return "llama.cpp" if llamacpp_importable() else "gguf-py"
    if quantizer == "llama.cpp" and not llamacpp_importable():
        raise WeightsError("quantizer llama.cpp needs llama-cpp-python: pip install -e .[llamacpp]")
    return quantizer


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
    quantizer: str = "gguf-py",
    vocab_limit: int | None = None,
) -> Path:
    """Write ``model_dir`` (HF safetensors) as a llama.cpp GGUF of ``out_type``; returns the path.

    ``legacy_kv_b`` keeps DeepSeek's fused ``attn_kv_b`` (pre-MLA llama.cpp layout) instead
    of the split ``attn_k_b`` / ``attn_v_b`` that current llama.cpp writes. ``quantizer``
    (see :data:`QUANTIZERS`) picks who quantizes q8_0/q4_0; with llama.cpp an F16 export
    is written to a temporary file first and quantized from it. ``vocab_limit`` V writes the
    timing copy with a V-token head and stand-in vocabulary (see the module docstring).
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if out_type not in OUT_TYPES:
        raise ValueError(f"out_type must be one of {sorted(OUT_TYPES)}, got {out_type!r}")
    if resolve_quantizer(quantizer, out_type) == "llama.cpp":
        f16 = out_path.with_name(f"{out_path.name}.f16.tmp{os.getpid()}")
        try:
            _write_gguf(model_dir, f16, "f16", progress, legacy_kv_b, vocab_limit)
            return quantize_with_llamacpp(f16, out_path, out_type)
        finally:
            f16.unlink(missing_ok=True)
    return _write_gguf(model_dir, out_path, out_type, progress, legacy_kv_b, vocab_limit)


def check_vocab_limit(vocab_limit: int | None, vocab_size: int, where: str) -> None:
    """ValueError unless ``vocab_limit`` is None or from 257 (the stand-in vocabulary's size)
    to ``vocab_size``."""
    if vocab_limit is None:
        return
    low = STAND_IN_MIN_VOCAB
    if not isinstance(vocab_limit, int) or not low <= vocab_limit <= vocab_size:
        raise ValueError(
            f"{where}: vocab_limit must be an int from {low} (the byte-level stand-in "
            f"vocabulary) to the model's vocab_size {vocab_size}, got {vocab_limit!r}"
        )


def _write_gguf(
    model_dir: Path,
    out_path: Path,
    out_type: str,
    progress: bool,
    legacy_kv_b: bool,
    vocab_limit: int | None = None,
) -> Path:
    """The gguf-py writer behind :func:`export_gguf` (atomic: a temporary file, then rename)."""
    base, ftype = OUT_TYPES[out_type]
    ck = _Checkpoint(model_dir)
    cfg = ck.config
    arch = arch_of(cfg, str(model_dir))
    check_vocab_limit(vocab_limit, int(cfg["vocab_size"]), str(model_dir))
    if vocab_limit is not None:
        cfg = {**cfg, "vocab_size": vocab_limit}
    items = _plan(ck, arch, cfg, legacy_kv_b, vocab_limit)
    w = GGUFWriter(path=None, arch=arch)
    w.add_name(model_dir.name)
    if arch == "qwen2moe":
        write_qwen2moe(w, cfg)
    else:
        write_deepseek2(w, cfg, legacy_kv_b)
    w.add_file_type(ftype)
    w.add_quantization_version(GGML_QUANT_VERSION)
    write_vocab(w, model_dir, cfg, stand_in=vocab_limit is not None)
    total = 0
    for it in items:
        it.qtype = _tensor_type(it.name, it.shape, base)
        shape, np_dtype, nbytes = _nbytes(it.shape, it.qtype)
        raw = None if it.qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16) else it.qtype
        w.add_tensor_info(it.name, shape, np.dtype(np_dtype), nbytes, raw_dtype=raw)
        total += nbytes
    require_free_space(out_path.parent, total, f"the {out_type} GGUF export {out_path.name}")
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


def export_cache_key(
    model_dir: Path, out_type: str, quantizer: str = "gguf-py", vocab_limit: int | None = None
) -> str:
    """Content key of an export: config.json bytes, other files' sizes/mtimes, out_type
    (and the vocab limit of a timing copy).

    Files quantized by llama.cpp also key on the llama-cpp-python version that wrote them.
    """
    model_dir = Path(model_dir)
    limit = f" vocab {vocab_limit}" if vocab_limit is not None else ""
    h = hashlib.sha256(f"hmoe-gguf v{EXPORT_VERSION} {out_type}{limit}\n".encode())
    if quantizer == "llama.cpp":
        from importlib.metadata import PackageNotFoundError, version

        try:
            h.update(f"llama.cpp quantizer {version('llama-cpp-python')}\n".encode())
        except PackageNotFoundError:
            h.update(b"llama.cpp quantizer unknown\n")
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
    model_dir: Path,
    out_type: str = "f16",
    cache_dir: Path | None = None,
    progress: bool = False,
    *,
    quantizer: str = "auto",
    vocab_limit: int | None = None,
) -> Path:
    """An up-to-date GGUF export of ``model_dir``: reused when cached, else written atomically.

    With llama.cpp as the quantizer, q8_0/q4_0 are quantized from the cached F16 export
    (written first if missing, and kept: full-precision points reuse it).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise WeightsError(f"{model_dir}: no config.json")
    if out_type not in OUT_TYPES:
        raise ValueError(f"out_type must be one of {sorted(OUT_TYPES)}, got {out_type!r}")
    cfg = json.loads((model_dir / "config.json").read_text())
    arch_of(cfg, str(model_dir))
    check_vocab_limit(vocab_limit, int(cfg["vocab_size"]), str(model_dir))
    who = resolve_quantizer(quantizer, out_type)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(model_dir)
    key = export_cache_key(model_dir, out_type, who, vocab_limit)
    tag = f"-v{vocab_limit}" if vocab_limit is not None else ""
    out = cache / f"{model_dir.name}-{out_type}{tag}-{key}.gguf"
    if out.is_file():
        return out
    if who == "llama.cpp":
        f16 = export_gguf_cached(
            model_dir, "f16", cache, progress, quantizer="gguf-py", vocab_limit=vocab_limit
        )
        return quantize_with_llamacpp(f16, out, out_type)
    return export_gguf(model_dir, out, out_type, progress, vocab_limit=vocab_limit)


# -- command line ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``hmoe export-gguf MODEL_DIR --type T [--out PATH]``: export and print the GGUF's path.

    Without ``--out`` the export goes to the cache beside the model (reused when up to
    date); with it, to PATH (overwritten).
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="hmoe export-gguf",
        description="Export a Hugging Face safetensors MoE model (Qwen2-MoE, DeepSeek-V2/V3) "
        "to a GGUF file for llama.cpp and print its path.",
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--type", dest="out_type", default="f16", choices=sorted(OUT_TYPES))
    parser.add_argument("--out", type=Path, default=None, help="default: cached beside the model")
    parser.add_argument("--quantizer", default="auto", choices=QUANTIZERS)
    parser.add_argument("--legacy-kv-b", action="store_true", help="DeepSeek: fused attn_kv_b")
    parser.add_argument(
        "--vocab-limit",
        type=int,
        default=None,
        metavar="V",
        help="a timing copy: only the first V embedding/output rows, stand-in vocabulary",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.model_dir.is_dir():
        raise WeightsError(f"{args.model_dir}: not a model directory")
    if args.out is None and args.legacy_kv_b:
        parser.error("--legacy-kv-b needs --out (the cache holds the current layout)")
    if args.out is None:
        path = export_gguf_cached(
            args.model_dir,
            args.out_type,
            progress=not args.no_progress,
            quantizer=args.quantizer,
            vocab_limit=args.vocab_limit,
        )
    else:
        path = export_gguf(
            args.model_dir,
            args.out,
            args.out_type,
            not args.no_progress,
            legacy_kv_b=args.legacy_kv_b,
            quantizer=args.quantizer,
            vocab_limit=args.vocab_limit,
        )
    print(path)
    return 0

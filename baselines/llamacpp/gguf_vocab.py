"""The tokenizer part of a GGUF export: a byte-level BPE ``tokenizer.json`` as llama.cpp's vocab.

Writes ``tokenizer.ggml.*``: the token list (ids beyond the tokenizer padded as unused),
token types (added special tokens as control), merges, llama.cpp's pre-tokenizer name
(``tokenizer.ggml.pre``, recognised from the pre-tokenizer regexes), BOS/EOS/PAD ids and
the add-BOS/EOS flags and chat template from ``tokenizer_config.json``. Without a
tokenizer.json, or for a timing copy (``stand_in``), a byte-level stand-in vocabulary is
written (no merges, no special tokens).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, TokenType

from engine.errors import UnsupportedModelError, WeightsError

log = logging.getLogger(__name__)

QWEN2_PRE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


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


STAND_IN_MIN_VOCAB = 257  # the 256 byte tokens and one merged token


def _stand_in_vocab(n_vocab: int) -> tuple[dict[str, int], list[str]]:
    """The byte-level stand-in: 256 byte tokens, then "ĠĠ" (two spaces) and its merge, since
    llama.cpp refuses a BPE vocabulary without merges and gguf-py writes no empty array.
    Below :data:`STAND_IN_MIN_VOCAB` ids: the bytes that fit and no merges (the engine's GGUF
    loader reads that; llama.cpp does not)."""
    alphabet = _bytes_to_unicode()
    if n_vocab < STAND_IN_MIN_VOCAB:
        return {t: i for i, t in enumerate(alphabet[:n_vocab])}, []
    space = alphabet[ord(" ")]
    vocab = {t: i for i, t in enumerate(alphabet)}
    vocab[space + space] = len(alphabet)
    return vocab, [f"{space} {space}"]


def _token_id(tok: Any, vocab: dict[str, int]) -> int | None:
    content = tok.get("content") if isinstance(tok, dict) else tok
    return vocab.get(content) if isinstance(content, str) else None


def write_vocab(
    w: GGUFWriter, model_dir: Path, cfg: dict[str, Any], stand_in: bool = False
) -> None:
    """``tokenizer.ggml.*`` for ``cfg["vocab_size"]`` ids; ``stand_in``: the byte-level
    stand-in whatever the model's tokenizer (a timing copy's cut vocabulary)."""
    n_vocab = cfg["vocab_size"]
    tok_path = model_dir / "tokenizer.json"
    tcfg_path = model_dir / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text()) if tcfg_path.is_file() and not stand_in else {}
    if stand_in:
        cfg = {k: v for k, v in cfg.items() if not k.endswith("_token_id")}
        vocab, merges = _stand_in_vocab(n_vocab)
        added, pre = {}, "default"
    elif tok_path.is_file():
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
        vocab, merges = _stand_in_vocab(n_vocab)
        added, pre = {}, "default"
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

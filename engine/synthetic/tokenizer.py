"""Byte-level BPE tokenizer trained on the real-text corpus, padded to a model's vocab size."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import EngineError
from engine.text_corpus import Corpus

MAX_TRAINED_VOCAB = 32000
BOS_EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (BOS_EOS, PAD, "<|im_start|>", "<|im_end|>")
TOKENIZER_VERSION = 1
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train(corpus: Corpus, target_vocab: int) -> str:
    """Train a GPT-2-style byte-level BPE; returns tokenizer.json text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=target_vocab,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.text.splitlines(keepends=True), trainer)
    return tok.to_str()


def trained_tokenizer_json(corpus: Corpus, vocab_size: int, cache_dir: Path) -> dict[str, Any]:
    """The trained (unpadded) tokenizer for this corpus and size, trained once per cache dir."""
    target = min(vocab_size, MAX_TRAINED_VOCAB)
    text_hash = hashlib.sha256(corpus.text.encode("utf-8")).hexdigest()[:12]
    path = cache_dir / "tokenizers" / f"bpe-v{TOKENIZER_VERSION}-{target}-{text_hash}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _train(corpus, target)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return json.loads(path.read_text(encoding="utf-8"))


def pad_vocab(tokenizer: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """Add unreachable ``<|pad_N|>`` model-vocab entries until there are exactly vocab_size ids."""
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    ids = set(vocab.values()) | {t["id"] for t in tokenizer.get("added_tokens", [])}
    if len(ids) > vocab_size:
        raise EngineError(f"trained tokenizer has {len(ids)} tokens, more than vocab {vocab_size}")
    for i in range(vocab_size):
        if i not in ids:
            vocab[f"<|pad_{i}|>"] = i
    return tokenizer


def write_tokenizer(
    model_dir: Path, corpus: Corpus, vocab_size: int, cache_dir: Path, model_max_length: int
) -> dict[str, int]:
    """Write tokenizer.json + tokenizer_config.json; returns the special token ids."""
    tokenizer = pad_vocab(trained_tokenizer_json(corpus, vocab_size, cache_dir), vocab_size)
    (model_dir / "tokenizer.json").write_text(
        json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8"
    )
    special = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_EOS,
        "eos_token": BOS_EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
        "synthetic_corpus": corpus.name,
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (model_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS_EOS, "eos_token": BOS_EOS, "pad_token": PAD}, indent=2) + "\n"
    )
    return {
        "bos_token_id": special[BOS_EOS],
        "eos_token_id": special[BOS_EOS],
        "pad_token_id": special[PAD],
    }

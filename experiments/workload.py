"""Prompt tokens for the throughput experiments: seeded random windows of a real text corpus.

Every system gets the same token ids for the same (length, trial), so routing sees the
same real-text distribution everywhere (unlike llama-bench's random token ids, which give
unrealistically uniform MoE routing). The corpus is tokenised once with the model's own
tokenizer.json; short corpora are repeated to reach the longest window.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from experiments.errors import HmoeError


class PromptSource:
    """Random windows of the tokenised corpus for one model's tokenizer."""

    def __init__(
        self,
        model_dir: Path,
        corpus: str = "auto",
        corpus_file: str | None = None,
        seed: int = 1234,
    ) -> None:
        from tokenizers import Tokenizer

        from engine.text_corpus import load_corpus

        tok_file = Path(model_dir) / "tokenizer.json"
        if not tok_file.is_file():
            raise HmoeError(f"no tokenizer.json in {model_dir}: cannot build prompts")
        try:
            tokenizer = Tokenizer.from_file(str(tok_file))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise HmoeError(f"cannot read {tok_file}: {exc}") from exc
        text = load_corpus(corpus, corpus_file)
        self.corpus_name = text.name
        self.seed = seed
        self.ids: list[int] = tokenizer.encode(text.text).ids
        if len(self.ids) < 64:
            raise HmoeError(f"corpus {text.name!r} is too short ({len(self.ids)} tokens)")

    def window(self, length: int, trial: int, purpose: str = "") -> list[int]:
        """``length`` consecutive corpus tokens, at an offset seeded by (seed, length, trial)."""
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            raise HmoeError(f"prompt length must be a positive integer, got {length!r}")
        ids = self.ids
        while len(ids) < length + 1:
            ids = ids + self.ids
        key = f"{self.seed}/{purpose}/{length}/{trial}".encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        start = rng.randrange(0, len(ids) - length)
        return list(ids[start : start + length])

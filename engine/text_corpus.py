"""Real English text for tokenizers and prompts: a user file, WikiText-2, or the CPython docs."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError

WIKITEXT_NAME = "wikitext-2-raw-v1/test"
PYTHON_DOCS_NAME = "python-docs (pydoc_data.topics)"
PREFERENCES = ("auto", "wikitext2", "python_docs", "file")


class CorpusError(EngineError):
    """A text corpus was asked for but cannot be read."""


@dataclass(frozen=True)
class Corpus:
    """A named body of real text; ``name`` says what the text is and is recorded in results."""

    name: str
    text: str


def _load_file(corpus_file: str) -> Corpus:
    path = Path(corpus_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"corpus file {path}: cannot read as UTF-8 text ({exc})") from exc
    if not text.strip():
        raise CorpusError(f"corpus file {path} is empty")
    return Corpus(name=f"file:{path.name}", text=text)


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _load_wikitext2() -> Corpus:
    """WikiText-2 raw test split through the ``datasets`` package (local cache or Hub)."""
    import datasets  # optional dependency, imported only when asked for

    if not _hub_reachable():
        # Without a network, read only the local cache instead of retrying the Hub for minutes.
        for flag in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
            if hasattr(datasets.config, flag):
                setattr(datasets.config, flag, True)
    ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    text = "".join(ds["text"])
    if not text.strip():
        raise CorpusError("WikiText-2 test split loaded but is empty")
    return Corpus(name=WIKITEXT_NAME, text=text)


def _load_python_docs() -> Corpus:
    """The English documentation topics that ship with every CPython install (~0.5 MB of prose)."""
    from pydoc_data.topics import topics  # stdlib, but large: load lazily

    text = "\n\n".join(topics[key].strip() + "\n" for key in sorted(topics))
    return Corpus(name=PYTHON_DOCS_NAME, text=text)


def load_corpus(preference: str = "auto", corpus_file: str | None = None) -> Corpus:
    """Return a corpus: ``auto`` tries the file, then WikiText-2, then the Python docs."""
    if preference not in PREFERENCES:
        raise CorpusError(f"unknown corpus preference {preference!r}; choose one of {PREFERENCES}")
    if preference == "file":
        if not corpus_file:
            raise CorpusError("corpus preference 'file' needs corpus_file")
        return _load_file(corpus_file)
    if preference == "python_docs":
        return _load_python_docs()
    if preference == "wikitext2":
        try:
            return _load_wikitext2()
        except CorpusError:
            raise
        except Exception as exc:  # any failure of an optional package or the network
            raise CorpusError(f"WikiText-2 is unavailable: {type(exc).__name__}: {exc}") from exc
    # auto
    if corpus_file:
        return _load_file(corpus_file)
    try:
        return _load_wikitext2()
    except Exception:  # fall back to text that is always there
        return _load_python_docs()

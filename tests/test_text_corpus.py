"""Tests for engine.text_corpus: where real text comes from and what it is called."""

from __future__ import annotations

import importlib.util

import pytest

from engine.errors import EngineError
from engine.text_corpus import PYTHON_DOCS_NAME, Corpus, CorpusError, load_corpus


def test_python_docs_is_real_english_prose() -> None:
    corpus = load_corpus("python_docs")
    assert corpus.name == PYTHON_DOCS_NAME
    assert len(corpus.text) > 200_000
    words = corpus.text.split()
    assert sum(w.lower() == "the" for w in words) > 1000
    assert load_corpus("python_docs").text == corpus.text  # same order every time


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_auto_falls_back_to_python_docs_without_datasets() -> None:
    assert load_corpus("auto").name == PYTHON_DOCS_NAME


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_explicit_wikitext_without_datasets_is_an_error() -> None:
    with pytest.raises(CorpusError, match="WikiText-2 is unavailable"):
        load_corpus("wikitext2")


def test_user_file_wins_in_auto_and_file_modes(tmp_path) -> None:
    path = tmp_path / "my text.txt"
    path.write_text("A small corpus of my own.\nSecond line.\n", encoding="utf-8")
    for preference in ("auto", "file"):
        corpus = load_corpus(preference, str(path))
        assert corpus == Corpus(name="file:my text.txt", text=path.read_text())


@pytest.mark.parametrize(
    ("preference", "make_file", "message"),
    [
        ("bogus", None, "unknown corpus preference"),
        ("file", None, "needs corpus_file"),
        ("file", "", "is empty"),
        ("file", b"\xff\xfe\xfa not utf-8", "cannot read as UTF-8"),
    ],
)
def test_bad_requests_raise_engine_errors(tmp_path, preference, make_file, message) -> None:
    corpus_file = None
    if make_file is not None:
        path = tmp_path / "c.txt"
        if isinstance(make_file, bytes):
            path.write_bytes(make_file)
        else:
            path.write_text(make_file)
        corpus_file = str(path)
    with pytest.raises(EngineError, match=message):
        load_corpus(preference, corpus_file)


def test_missing_file_names_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError, match="nope.txt"):
        load_corpus("file", str(missing))

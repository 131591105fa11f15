"""Where accuracy data comes from: a local directory of the shared layout, else the HF Hub.

Local layout (``data.dir`` / ``--data-dir`` / ``HMOE_DATA_DIR``, e.g. ../shared/datasets)::

    <task>/test.jsonl     problems, tests and answers, in test order
    <task>/input.jsonl    the paper artifact's exact prompts (used only by the tests)
    <task>/shots.md       few-shot exemplars of the artifact's prompts (mbpp, gsm8k, strategy_qa);
                          needed to generate, never to score
    mmlu/{test,dev}/<subject>_{test,dev}.csv   headerless MMLU CSVs (6 fields)

Without a local file the loaders fall back to the Hugging Face Hub through ``datasets``
(optional dependency); if that is not installed or cannot load (no network, no cache),
``DataUnavailable`` says in one line what is missing and where it looked (the local path
or that no directory is set, and the Hub dataset). The datasets are never copied into the
project.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from experiments.errors import HmoeError

ENV_VAR = "HMOE_DATA_DIR"


class DataUnavailable(HmoeError):
    """Neither a local data directory nor the Hugging Face Hub can provide a task's data."""


def resolve_data_dir(configured: str | None) -> Path | None:
    """The local data directory: the configured one, else $HMOE_DATA_DIR, else None."""
    for value, origin in ((configured, "data.dir"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise HmoeError(f"data directory {value} ({origin}): no such directory")
            return path
    return None


def local_file(data_dir: Path | None, *parts: str) -> Path | None:
    """``data_dir/parts...`` if a data directory is set and that file exists."""
    if data_dir is None:
        return None
    path = data_dir.joinpath(*parts)
    return path if path.is_file() else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HmoeError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise HmoeError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise HmoeError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    return rows


def where_local(data_dir: Path | None, *parts: str) -> str:
    """Where a local file was looked for, for a missing-data message."""
    if data_dir is None:
        wanted = "/".join(parts)
        return f"no local data directory is set to hold {wanted} (data.dir, --data-dir, {ENV_VAR})"
    return f"{data_dir.joinpath(*parts)} does not exist"


def problem_rows(
    task: str, data_dir: Path | None, dataset: str, config: str | None
) -> list[dict[str, Any]]:
    """A task's ``<task>/test.jsonl`` rows, else its Hub test split (DataUnavailable)."""
    local = local_file(data_dir, task, "test.jsonl")
    if local is not None:
        return read_jsonl(local)
    return hub_rows(task, dataset, config, "test", looked=where_local(data_dir, task, "test.jsonl"))


def read_shots(data_dir: Path | None, task: str) -> str | None:
    """The artifact's few-shot block (``<task>/shots.md``, exact bytes), if present locally."""
    path = local_file(data_dir, task, "shots.md")
    if path is None:
        return None
    with path.open(encoding="utf-8", newline="") as handle:
        return handle.read()


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached (one TCP connect, 3 s), or None when it may be used.

    With HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set (use the local HF cache) or a proxy
    configured, nothing is probed. Without this check ``datasets`` retries for ~25 s offline.
    """
    if any(os.environ.get(v) for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc.strerror or type(exc).__name__})"
    return None


def hub_rows(
    task: str, dataset: str, config: str | None, split: str, looked: str = ""
) -> list[dict[str, Any]]:
    """One split of a Hub dataset as a list of dicts, or DataUnavailable (fails fast offline).

    ``looked`` says where the local copy was looked for (for the message).
    """
    try:
        reason = hub_unreachable()
        if reason is not None:
            raise ConnectionError(f"{reason}; set HF_HUB_OFFLINE=1 to use a local HF cache")
        import datasets  # optional dependency (extra "eval")

        rows = datasets.load_dataset(dataset, config, split=split)
        return [dict(row) for row in rows]
    except Exception as exc:  # anything: missing package, no network, no cache, bad id
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        local = looked or f"no local {task}/ data (set data.dir, --data-dir or {ENV_VAR})"
        raise DataUnavailable(
            f"{task}: {split} data not found: {local}; the Hugging Face Hub ({dataset}, "
            f"{split} split) failed: {type(exc).__name__}: {first}"[:500]
        ) from None


def number_docs(docs: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` docs, each with its 0-based position in test order as ``idx``."""
    if limit is not None:
        docs = docs[: max(limit, 0)]
    return [{**doc, "idx": i} for i, doc in enumerate(docs)]

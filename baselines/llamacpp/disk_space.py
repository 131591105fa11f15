"""Refuse to start writing a large file (a GGUF export, a quantized copy) that cannot fit.

A full disk otherwise shows up minutes later as a truncated temporary file and an
unhelpful library message (llama.cpp's quantizer says ``basic_ios::clear: iostream
error``), as it did for a 4-layer Qwen2-57B slice on the GPU host's 64 GiB disk.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine.errors import EngineError

SLACK_BYTES = 64 << 20  # headers, metadata and the estimate's error


class DiskSpaceError(EngineError):
    """The file to be written does not fit in the free space of its file system."""


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def require_free_space(directory: Path, nbytes: int, what: str) -> None:
    """DiskSpaceError unless about ``nbytes`` (plus a little slack) fit under ``directory``.

    ``directory`` need not exist yet: its nearest existing parent's file system is asked.
    """
    probe = Path(directory).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = int(nbytes) + SLACK_BYTES
    if free < need:
        raise DiskSpaceError(
            f"not enough disk space for {what}: it needs about {_gib(need)}, only {_gib(free)} "
            f"free on the file system of {directory}; free some space or write it elsewhere "
            "(hmoe export-gguf --out PATH, system.options.cache_dir, HMOE_CACHE_DIR)"
        )

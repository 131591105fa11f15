"""Streaming writer of sharded safetensors files: header first, then tensors chunk by chunk."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from engine.errors import WeightsError

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
INDEX_NAME = "model.safetensors.index.json"
_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8, "I32": 4, "U8": 1}


class TensorEntry(Protocol):
    """What the writer needs to know about a tensor before its bytes exist."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int: ...


def plan_shards(entries: Iterable[TensorEntry], max_shard_bytes: int) -> list[list[TensorEntry]]:
    """Group tensors in order into shards of at most ``max_shard_bytes`` (bigger tensor: alone)."""
    if max_shard_bytes < 1:
        raise WeightsError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return [s for s in shards if s]


def shard_name(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def encode_header(entries: Sequence[TensorEntry], metadata: dict[str, str] | None = None) -> bytes:
    """The 8-byte length + JSON header (space-padded to 8-byte alignment) of one file."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for entry in entries:
        itemsize = _ITEMSIZE[entry.dtype]
        if entry.nbytes % itemsize:
            raise WeightsError(f"{entry.name}: {entry.nbytes} bytes is not a whole {entry.dtype}")
        header[entry.name] = {
            "dtype": entry.dtype,
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_sharded(
    out_dir: Path,
    shards: Sequence[Sequence[TensorEntry]],
    chunks: Callable[[TensorEntry], Iterator[bytes | memoryview]],
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Write every shard plus the index file; returns the index. Memory: one chunk at a time."""
    weight_map: dict[str, str] = {}
    total = 0
    for i, shard in enumerate(shards):
        name = shard_name(i, len(shards))
        with open(out_dir / name, "wb") as f:
            f.write(encode_header(shard))
            for entry in shard:
                written = 0
                for chunk in chunks(entry):
                    n = memoryview(chunk).nbytes
                    f.write(chunk)
                    written += n
                    del chunk  # keep one block alive at a time
                    if on_bytes is not None:
                        on_bytes(n)
                if written != entry.nbytes:
                    raise WeightsError(
                        f"{entry.name}: generated {written} bytes, header says {entry.nbytes}"
                    )
                weight_map[entry.name] = name
                total += entry.nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return index

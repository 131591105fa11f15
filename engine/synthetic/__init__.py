"""Synthetic models: real-format Hugging Face directories with seeded weights (no checkpoint)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from engine.errors import EngineError
from engine.synthetic.generator import (
    METADATA_NAME,
    SyntheticRequest,
    entry_name,
    generate,
    is_complete,
)
from engine.synthetic.layout import total_bytes
from engine.synthetic.presets import (
    REAL_LAYERS,
    SLICE_LAYER_CAP,
    SyntheticConfigError,
    build_config,
    check_architecture,
)
from engine.synthetic.safetensors_writer import DEFAULT_MAX_SHARD_BYTES
from engine.text_corpus import Corpus, load_corpus

MEMORY_SHARE = 0.45
DISK_SHARE = 0.60

__all__ = [
    "SyntheticRequest",
    "SyntheticConfigError",
    "ensure_synthetic_model",
    "choose_slice_layers",
    "slice_bytes",
    "read_synthetic_metadata",
]


def slice_bytes(architecture: str, layers: int, dims: dict[str, Any] | None = None) -> int:
    """Bytes of the safetensors data of an ``architecture`` slice with ``layers`` decoder layers."""
    return total_bytes(architecture, build_config(architecture, "slice", layers, dims))


def _fitting_layers(
    architecture: str,
    mem_bytes: int,
    disk_bytes: int,
    cap: int | None,
    dims: dict[str, Any] | None,
    already_on_disk: frozenset[int] | set[int] = frozenset(),
) -> int:
    check_architecture(architecture)
    top = min(cap or SLICE_LAYER_CAP[architecture], REAL_LAYERS[architecture])
    for n in range(top, 0, -1):
        size = slice_bytes(architecture, n, dims)
        fits_disk = n in already_on_disk or size <= DISK_SHARE * disk_bytes
        if size <= MEMORY_SHARE * mem_bytes and fits_disk:
            return n
    one = slice_bytes(architecture, 1, dims)
    raise EngineError(
        f"no {architecture} slice fits: even 1 layer needs {one / 1e9:.1f} GB, but only "
        f"{MEMORY_SHARE:.0%} of memory ({MEMORY_SHARE * mem_bytes / 1e9:.1f} GB) and "
        f"{DISK_SHARE:.0%} of free disk ({DISK_SHARE * disk_bytes / 1e9:.1f} GB) may be used"
    )


def choose_slice_layers(
    architecture: str, mem_bytes: int, disk_bytes: int, *, cap: int | None = None
) -> int:
    """Largest layer count (<= cap, <= the real model's) whose slice fits in memory and on disk."""
    return _fitting_layers(architecture, mem_bytes, disk_bytes, cap, None)


def ensure_synthetic_model(
    req: SyntheticRequest,
    cache_dir: Path,
    progress: bool = True,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    corpus: Corpus | None = None,
) -> Path:
    """The cached model directory for ``req``: reused if complete, otherwise written atomically."""
    cache_dir = Path(cache_dir)
    if req.routing_skew < 0:
        raise SyntheticConfigError(f"routing_skew must be >= 0, got {req.routing_skew}")
    corpus = corpus or load_corpus("auto")
    layers = req.layers
    if req.kind == "slice" and layers is None and "num_hidden_layers" not in (req.dims or {}):
        layers = _auto_slice_layers(req, cache_dir, corpus)
    config = build_config(req.architecture, req.kind, layers, req.dims)
    return generate(req, cache_dir, config, progress, max_shard_bytes, corpus)


def _auto_slice_layers(req: SyntheticRequest, cache_dir: Path, corpus: Corpus) -> int:
    import psutil

    check_architecture(req.architecture)

    def cached(n: int) -> bool:
        config = build_config(req.architecture, "slice", n, req.dims)
        return is_complete(cache_dir / entry_name(req, config, corpus))

    on_disk = {n for n in range(1, REAL_LAYERS[req.architecture] + 1) if cached(n)}
    probe = (
        cache_dir
        if cache_dir.exists()
        else next((p for p in cache_dir.parents if p.exists()), Path("/"))
    )
    return _fitting_layers(
        req.architecture,
        psutil.virtual_memory().total,
        shutil.disk_usage(probe).free,
        None,
        req.dims,
        on_disk,
    )


def read_synthetic_metadata(model_dir: Path) -> dict | None:
    """The generator's metadata for a synthetic directory; None for any other directory."""
    path = Path(model_dir) / METADATA_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path}: unreadable synthetic-model metadata ({exc})") from exc
    return data if isinstance(data, dict) and data.get("synthetic") is True else None

"""Writes a synthetic model dir (config, shards, tokenizer, metadata) into the cache, atomically."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.synthetic.layout import iter_tensor_specs
from engine.synthetic.presets import REAL_LAYERS, SOURCE_CHECKPOINT, STANDS_FOR
from engine.synthetic.safetensors_writer import (
    DEFAULT_MAX_SHARD_BYTES,
    INDEX_NAME,
    plan_shards,
    write_sharded,
)
from engine.synthetic.tokenizer import write_tokenizer
from engine.synthetic.weights import WeightRecipe
from engine.text_corpus import Corpus, load_corpus

GENERATOR_VERSION = 1
METADATA_NAME = "hmoe_synthetic.json"
TRANSFORMERS_VERSION_TAG = "5.23.0"


@dataclass(frozen=True)
class SyntheticRequest:
    """What to generate; every field (and the resolved config) is part of the cache key."""

    architecture: str  # "qwen2_moe" | "deepseek_v2" | "deepseek_v3"
    kind: str  # "tiny" | "slice"
    layers: int | None = None  # decoder layers; None = preset default (tiny) or auto (slice)
    seed: int = 0
    routing_skew: float = 0.0  # 0 = no skew; >0 = Zipf exponent of expert popularity
    dims: dict | None = None  # optional overrides of config.json fields


def _cache_key(req: SyntheticRequest, config: dict[str, Any], corpus: Corpus) -> str:
    payload = {
        "architecture": req.architecture,
        "kind": req.kind,
        "config": config,
        "seed": req.seed,
        "routing_skew": float(req.routing_skew),
        "corpus": corpus.name,
        "generator_version": GENERATOR_VERSION,
    }
    raw = json.dumps(payload, sort_keys=True).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:8]


def entry_name(req: SyntheticRequest, config: dict[str, Any], corpus: Corpus) -> str:
    """Readable cache directory name, e.g. ``qwen2_moe-tiny-L4-s0-1a2b3c4d``."""
    skew = f"-z{req.routing_skew:g}" if req.routing_skew else ""
    layers = config["num_hidden_layers"]
    key = _cache_key(req, config, corpus)
    return f"{req.architecture}-{req.kind}-L{layers}-s{req.seed}{skew}-{key}"


def is_complete(model_dir: Path) -> bool:
    """A finished entry: the metadata is written last, and the directory is renamed into place."""
    return (model_dir / METADATA_NAME).is_file() and (model_dir / INDEX_NAME).is_file()


def _metadata(req: SyntheticRequest, config: dict[str, Any], corpus: Corpus) -> dict[str, Any]:
    layers = config["num_hidden_layers"]
    return {
        "synthetic": True,
        "architecture": req.architecture,
        "kind": req.kind,
        "seed": req.seed,
        "routing_skew": float(req.routing_skew),
        "layers_run": layers,
        "layers_total": REAL_LAYERS[req.architecture] if req.kind == "slice" else layers,
        "first_k_dense_replace": config.get("first_k_dense_replace", 0),
        "stands_for": STANDS_FOR[req.architecture],
        "source_checkpoint": SOURCE_CHECKPOINT[req.architecture],
        "tokenizer_corpus": corpus.name,
        "dims_overridden": sorted((req.dims or {}).keys()),
        "generator_version": GENERATOR_VERSION,
    }


def _write_entry(
    tmp: Path,
    req: SyntheticRequest,
    config: dict[str, Any],
    corpus: Corpus,
    cache_dir: Path,
    max_shard_bytes: int,
    progress: bool,
) -> None:
    special = write_tokenizer(
        tmp, corpus, config["vocab_size"], cache_dir, config["max_position_embeddings"]
    )
    config = {**config, **special, "dtype": "bfloat16"}
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        "bos_token_id": special["bos_token_id"],
        "eos_token_id": special["eos_token_id"],
        "pad_token_id": special["pad_token_id"],
        "do_sample": False,
        "transformers_version": TRANSFORMERS_VERSION_TAG,
    }
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")

    specs = list(iter_tensor_specs(req.architecture, config))
    shards = plan_shards(specs, max_shard_bytes)
    recipe = WeightRecipe(req.seed, config["hidden_size"], req.routing_skew)
    total = sum(s.nbytes for s in specs)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"synth {tmp.name.removeprefix('.tmp-').rsplit('-', 1)[0]}",
        )
    try:
        write_sharded(tmp, shards, recipe.chunks, on_bytes=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    (tmp / METADATA_NAME).write_text(json.dumps(_metadata(req, config, corpus), indent=2) + "\n")


def generate(
    req: SyntheticRequest,
    cache_dir: Path,
    config: dict[str, Any],
    progress: bool = True,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    corpus: Corpus | None = None,
) -> Path:
    """Return the cached directory for (req, config), writing it first if it is not there."""
    corpus = corpus or load_corpus("auto")
    cache_dir = Path(cache_dir)
    final = cache_dir / entry_name(req, config, corpus)
    if is_complete(final):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".tmp-{final.name}-"))
    try:
        _write_entry(tmp, req, config, corpus, cache_dir, max_shard_bytes, progress)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache entry is meant to be shared
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):  # a leftover, incomplete entry: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final

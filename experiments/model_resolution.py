"""Turn a model config into a ModelSpec: a real checkpoint directory, or a synthetic one.

With ``model.path`` set (e.g. from QW2_SAFETENSORS) the checkpoint is checked and used as
is; otherwise the synthetic generator writes (or reuses from the cache) a tiny model or a
layer slice of the real shapes, and the spec says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psutil

from experiments.config_schema import ModelEntry
from experiments.errors import HmoeError
from experiments.system_api import ModelSpec

_ENV_OF_PATH = {
    "qw2": "QW2_SAFETENSORS",
    "ds2": "DS2_SAFETENSORS",
    "ds3": "DS3_SAFETENSORS",
}


def _read_config_json(directory: Path, origin: str) -> dict:
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise HmoeError(f"{origin}: no config.json in {directory}")
    try:
        data = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HmoeError(f"{origin}: {cfg_file} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise HmoeError(f"{origin}: {cfg_file} does not hold a JSON object")
    return data


def gguf_paths(model: ModelEntry) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for precision, value in (model.gguf or {}).items():
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise HmoeError(f"model {model.key}: GGUF file for {precision} not found: {path}")
            out[precision] = path
    return out


def check_checkpoint(model: ModelEntry) -> tuple[Path, dict]:
    """``model.path`` checked: a Hugging Face directory with a config.json of the model's
    architecture and safetensors weights; its GGUF files exist. Returns (path, config)."""
    from engine.errors import UnsupportedModelError
    from engine.models.config import detect_family

    assert model.path
    path = Path(model.path).expanduser()
    env = _ENV_OF_PATH.get(model.key)
    origin = f"model {model.key}" + (f" (path from {env})" if env else "")
    if not path.exists():
        raise HmoeError(f"{origin}: checkpoint path does not exist: {path}")
    if not path.is_dir():
        raise HmoeError(
            f"{origin}: checkpoint path is not a directory: {path} (a Hugging Face "
            "safetensors directory; GGUF files for llama.cpp go in model.gguf.<precision>)"
        )
    cfg = _read_config_json(path, origin)
    if not any(path.glob("*.safetensors")):
        raise HmoeError(f"{origin}: no *.safetensors weights in {path}")
    try:
        family = detect_family(cfg)
    except UnsupportedModelError as exc:
        raise HmoeError(f"{origin}: {path}: {exc}") from exc
    if family != model.architecture:
        raise HmoeError(
            f"{origin}: {path} holds a {family} model, but model {model.key} is "
            f"{model.architecture} ({model.name}); point the path at the right checkpoint"
        )
    gguf_paths(model)
    return path, cfg


def resolve_checkpoint(model: ModelEntry) -> ModelSpec:
    """A real checkpoint directory given by ``model.path``, validated."""
    path, cfg = check_checkpoint(model)
    layers = int(cfg.get("num_hidden_layers", model.layers_total))
    return ModelSpec(
        key=model.key,
        paper_model=model.paper_model,
        name=model.name,
        architecture=model.architecture,
        path=path,
        source=str(path),
        synthetic=False,
        layers_run=layers,
        layers_total=max(layers, model.layers_total),
        gguf=gguf_paths(model),
    )


def resolve_synthetic(model: ModelEntry, cache_dir: Path, progress: bool = True) -> ModelSpec:
    """Generate (or reuse) the synthetic stand-in described by ``model.synthetic``."""
    from engine.synthetic import (
        SyntheticRequest,
        choose_slice_layers,
        ensure_synthetic_model,
        read_synthetic_metadata,
    )

    syn = model.synthetic
    layers = syn.layers
    if syn.kind == "slice" and layers is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        layers = choose_slice_layers(
            model.architecture,
            mem_bytes=psutil.virtual_memory().total,
            disk_bytes=shutil.disk_usage(cache_dir).free,
        )
    request = SyntheticRequest(
        architecture=model.architecture,
        kind=syn.kind,
        layers=layers,
        seed=syn.seed,
        routing_skew=syn.routing_skew,
    )
    path = ensure_synthetic_model(request, cache_dir=cache_dir, progress=progress)
    meta = read_synthetic_metadata(path) or {}
    layers_run = int(meta.get("layers_run", layers or model.layers_total))
    return ModelSpec(
        key=model.key,
        paper_model=model.paper_model,
        name=model.name,
        architecture=model.architecture,
        path=path,
        source=f"synthetic-{syn.kind}",
        synthetic=True,
        layers_run=layers_run,
        layers_total=int(meta.get("layers_total", model.layers_total)),
        gguf={},
    )


def resolve_model(model: ModelEntry, cache_dir: Path, progress: bool = True) -> ModelSpec:
    """The ModelSpec for ``model``: its checkpoint when a path is set, else synthetic."""
    if model.path:
        return resolve_checkpoint(model)
    return resolve_synthetic(model, cache_dir, progress)

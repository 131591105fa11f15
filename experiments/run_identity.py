"""One results directory, one configuration: the profile and where each model came from.

A results directory's provenance records the profile it was measured with and, per model
key, its source (a checkpoint path and a fingerprint of its files, or the synthetic
model's recipe). A job whose profile or model source differs from what the directory
holds is refused before it measures anything, with a message naming the difference and
how to write elsewhere, so one table never mixes two configurations.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from experiments.errors import HmoeError


def checkpoint_fingerprint(path: Path) -> str:
    """A cheap content fingerprint of a checkpoint directory: config.json's bytes and the
    names and sizes of its weight files (hashing hundreds of GB would take minutes)."""
    digest = hashlib.sha256()
    config = path / "config.json"
    digest.update(config.read_bytes() if config.is_file() else b"")
    for weights in sorted(path.glob("*.safetensors")):
        digest.update(f"{weights.name}:{weights.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def model_source(model: Any) -> dict[str, Any]:  # noqa: ANN401 - a model config node
    """Where model entry ``model`` comes from, as recorded in provenance."""
    if model.path:
        path = Path(str(model.path)).expanduser().resolve()
        return {"checkpoint": str(path), "fingerprint": checkpoint_fingerprint(path)}
    syn = model.synthetic
    return {
        "synthetic": str(syn.kind),
        "layers": "auto" if syn.layers is None else int(syn.layers),
        "seed": int(syn.seed),
        "routing_skew": float(syn.routing_skew),
    }


def _describe(source: dict[str, Any]) -> str:
    if "checkpoint" in source:
        return f"checkpoint {source['checkpoint']} (fingerprint {source['fingerprint']})"
    return (
        "synthetic "
        + ", ".join(f"{k}={v}" for k, v in source.items() if k != "synthetic")
        + (f" ({source['synthetic']})")
    )


def check_identity(
    recorded: dict[str, Any] | None, results_dir: Path, profile: str, model_key: str,
    source: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The directory's identity with this job's added; HmoeError when they disagree."""
    identity = dict(recorded or {})
    hint = (
        f"write this run elsewhere with run=NAME (results go to results_root/NAME), or "
        f"remove {results_dir}"
    )
    have = identity.get("profile")
    if have is not None and have != profile:
        raise HmoeError(
            f"{results_dir} holds results measured with profile={have}; this job uses "
            f"profile={profile}, and one results directory holds one configuration: {hint}"
        )
    models = dict(identity.get("models") or {})
    before = models.get(model_key)
    if before is not None and before != source:
        raise HmoeError(
            f"{results_dir} holds results of model {model_key} from {_describe(before)}; this "
            f"job uses {_describe(source)}: {hint}"
        )
    models[model_key] = source
    return {"profile": profile, "models": models}

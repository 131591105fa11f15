"""provenance.json beside every results table: code version, config, machine, packages, times.

One run directory collects several jobs (one per experiment x model x system); each job
adds its resolved config under ``jobs`` and updates ``finished``. The file is rewritten
through an atomic replace, so it is never half-written.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments import hardware
from experiments.atomic_write import atomic_write_text

PROVENANCE_FILE = "provenance.json"
REPO_ROOT = Path(__file__).resolve().parents[1]

_PACKAGES = (
    "hybrid-moe-ae",
    "torch",
    "transformers",
    "safetensors",
    "tokenizers",
    "gguf",
    "hydra-core",
    "omegaconf",
    "pandas",
    "numpy",
    "matplotlib",
    "psutil",
    "nvidia-ml-py",
    "llama_cpp_python",
    "lm_eval",
    "datasets",
)


def utc_now() -> str:
    """Current UTC time, ISO 8601 with microseconds (sorts as text)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit hash and dirty flag of the checkout (``unknown`` outside git)."""

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = run("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    try:
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {"commit": commit, "dirty": dirty}


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the measurements."""
    out = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import torch

        out["torch.cuda"] = str(torch.version.cuda)
    except ImportError:
        pass
    return out


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str))


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """The run's provenance, or an empty dict when there is none (or it is unreadable)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def record_job_start(
    run_dir: Path, run: str, mode: str, profile: str, job: str, config: dict[str, Any]
) -> None:
    """Add a job's resolved config to the run's provenance (creating it on first use)."""
    prov = read_provenance(run_dir)
    now = utc_now()
    prov.setdefault("run", run)
    prov.setdefault("started", now)
    prov["mode"] = mode
    prov["profile"] = profile
    prov["git"] = git_state()
    prov["hardware"] = hardware.describe()
    prov["packages"] = package_versions()
    prov["config"] = config
    jobs = prov.setdefault("jobs", {})
    jobs[job] = {"started": now, "finished": None, "config": config}
    prov["finished"] = None
    _atomic_write_json(Path(run_dir) / PROVENANCE_FILE, prov)


def record_job_end(run_dir: Path, job: str, systems: dict[str, Any] | None = None) -> None:
    """Mark a job finished and keep what its systems reported about themselves."""
    prov = read_provenance(run_dir)
    now = utc_now()
    entry = prov.setdefault("jobs", {}).setdefault(job, {})
    entry["finished"] = now
    if systems:
        entry["systems"] = systems
        prov.setdefault("systems", {}).update(systems)
    prov["finished"] = now
    _atomic_write_json(Path(run_dir) / PROVENANCE_FILE, prov)

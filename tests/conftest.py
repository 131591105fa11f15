"""Shared fixtures: a per-session model cache and a helper to run the ``hmoe`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One synthetic-model cache for the whole session (models are generated once)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture()
def hmoe(model_cache):
    """Run ``python -m experiments.cli ARGS`` from the repo root; returns CompletedProcess."""

    def run(*args: str, timeout: float = 600, env: dict | None = None):
        full_env = {**os.environ, "HMOE_CACHE_DIR": str(model_cache), **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "experiments.cli", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )

    return run

"""Start a project module as a fresh Python process, and say in words how one ended.

Used to run llama.cpp away from torch: the child is a new interpreter (``python -m
MODULE``), so it imports only what that module imports, never what the parent has loaded.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def module_command(module: str, *args: str) -> list[str]:
    """The command line running ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env() -> dict[str, str]:
    """This process's environment with the project root first on ``PYTHONPATH``."""
    env = dict(os.environ)
    paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def describe_exit(returncode: int) -> str:
    """``exited with signal 11 (SIGSEGV)`` or ``exited with status 1``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"exited with signal {-returncode} ({name})"
    return f"exited with status {returncode}"

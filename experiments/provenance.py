"""provenance.json beside every results table: code version, config, machine, packages, times.

One run directory collects several jobs (one per experiment x model x system); each job
adds its resolved config under ``jobs`` and updates ``finished``. The file is rewritten
through an atomic replace, so it is never half-written. A cluster job writes the
provenance of its own shard (experiments/shards.py); reading a directory merges them.

Which code produced the rows: the git commit and dirty flag of the checkout; where there is
no ``.git`` (a copied tree), ``HMOE_GIT_COMMIT``, else the stamp written at install time
(``experiments/_build_info.py``, git-ignored: commit, dirty flag and a digest of the
sources, so a later edit of the copy shows as dirty). ``git.source`` says which was used.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from experiments import shards
from experiments.atomic_write import atomic_write_text

PROVENANCE_FILE = shards.PROVENANCE_FILE
REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_INFO = "_build_info.py"  # experiments/_build_info.py: the install-time stamp
COMMIT_ENV = "HMOE_GIT_COMMIT"
# What the source digest covers: the code and configs that shape a result.
_DIGEST_DIRS = ("engine", "experiments", "baselines", "plots", "conf")
_DIGEST_SUFFIXES = (".py", ".yaml", ".cpp", ".cc", ".h", ".hpp", ".cu", ".cuh")

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


def _git_checkout(repo: Path) -> dict[str, Any] | None:
    """Commit and dirty flag of ``repo`` when it is (inside) a git checkout, else None."""
    if not any((p / ".git").exists() for p in (repo, *repo.parents)):
        return None  # no git here: do not let git find an unrelated repository above

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = run("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {"commit": commit, "dirty": dirty, "source": "git"}


def source_digest(root: Path = REPO_ROOT) -> str | None:
    """A digest of the sources under ``root`` (the packages' Python and C++ files and the
    conf/ YAML: paths and bytes), or None when ``root`` is not a source tree."""
    root = Path(root)
    if not (root / "pyproject.toml").is_file():
        return None
    digest = hashlib.sha256()
    for top in _DIGEST_DIRS:
        for path in sorted((root / top).rglob("*")):
            if (
                path.suffix in _DIGEST_SUFFIXES
                and path.name != BUILD_INFO
                and "__pycache__" not in path.parts
                and path.is_file()
            ):
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def read_build_info(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The install-time stamp (``experiments/_build_info.py``) as a dict, {} when there is
    none. Read as literals, never executed."""
    try:
        tree = ast.parse((Path(root) / "experiments" / BUILD_INFO).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    info: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    info[target.id.lower()] = ast.literal_eval(node.value)
                except ValueError:
                    continue
    return info


def _project_version(root: Path) -> str | None:
    try:
        with open(Path(root) / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return importlib.metadata.version("hybrid-moe-ae")
    except importlib.metadata.PackageNotFoundError:
        return None


def stamp_build_info(
    root: Path = REPO_ROOT, env: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """Write ``experiments/_build_info.py`` under ``root``: the commit of its git checkout
    (else ``HMOE_GIT_COMMIT``), the dirty flag, the version and a digest of the sources.
    Called at install time (setup.py) and by ``run_all.sh wheelhouse``. Without git and
    without the variable it writes nothing (a copied tree keeps the stamp it came with);
    returns what it wrote, or None."""
    root = Path(root)
    env = os.environ if env is None else env
    state = _git_checkout(root)
    if state is None:
        if not env.get(COMMIT_ENV):
            return None
        state = {"commit": env[COMMIT_ENV].strip(), "dirty": None, "source": COMMIT_ENV}
    info = {
        "commit": state["commit"],
        "dirty": state["dirty"],
        "source": state["source"],
        "version": _project_version(root),
        "stamped": utc_now(),
        "digest": source_digest(root),
    }
    lines = [
        "# Written at install time (setup.py, run_all.sh wheelhouse): which code this tree is,",
        "# for provenance where there is no .git. Generated, git-ignored: do not edit.",
        *(f"{key.upper()} = {value!r}" for key, value in info.items()),
    ]
    atomic_write_text(root / "experiments" / BUILD_INFO, "\n".join(lines) + "\n")
    return info


def git_state(repo: Path = REPO_ROOT, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Which code this is: commit, dirty flag and ``source`` (``git``, ``HMOE_GIT_COMMIT`` or
    ``stamp``; commit ``unknown`` when none of them says)."""
    repo = Path(repo)
    env = os.environ if env is None else env
    state = _git_checkout(repo)
    if state is not None:
        return state
    if env.get(COMMIT_ENV):
        return {"commit": env[COMMIT_ENV].strip(), "dirty": None, "source": COMMIT_ENV}
    info = read_build_info(repo)
    if not info.get("commit"):
        return {"commit": "unknown", "dirty": None, "source": None}
    out = {
        "commit": info["commit"],
        "dirty": info.get("dirty"),
        "source": "stamp",
        "stamped": info.get("stamped"),
        "version": info.get("version"),
    }
    now = source_digest(repo)
    if info.get("digest") and now is not None and now != info["digest"]:
        out["dirty"] = True  # the sources changed after the stamp was written
        out["modified_since_stamp"] = True
    return out


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


def _read_own(write_dir: Path) -> dict[str, Any]:
    """The provenance.json of one writer's directory (for its read-modify-write)."""
    return shards.read_json(Path(write_dir) / PROVENANCE_FILE)


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """The run's provenance, or an empty dict when there is none (or it is unreadable).

    With shards (cluster jobs), their provenance merged (experiments/shards.py); HmoeError
    when the shards hold different configurations."""
    leaves = shards.tables(Path(run_dir))
    if len(leaves) <= 1:
        return _read_own(leaves[0] if leaves else run_dir)
    return shards.merge_provenance([(shards.label(p), _read_own(p)) for p in leaves])


def read_provenance_set(paths: Iterable[Path]) -> dict[str, Any]:
    """The merged provenance of several results directories (or parents of them)."""
    leaves = shards.expand(paths)
    return shards.merge_provenance([(shards.label(p), _read_own(p)) for p in leaves])


def record_job_start(
    run_dir: Path,
    *,
    run: str,
    run_id: str,
    mode: str,
    profile: str,
    job: str,
    config: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    """Add a job's resolved config to the run's provenance (creating it on first use).

    ``runs[run_id]`` describes each invocation that wrote rows here (start, end, git
    state, its jobs); ``identity`` is the directory's configuration (run_identity).
    """
    target = shards.write_dir(Path(run_dir))
    prov = _read_own(target)
    now = utc_now()
    prov.setdefault("run", run)
    prov.setdefault("started", now)
    prov["mode"] = mode
    prov["profile"] = profile
    prov["identity"] = identity
    prov["git"] = git_state()
    from experiments import hardware  # psutil: not needed by the install-time stamp

    prov["hardware"] = hardware.describe()
    prov["packages"] = package_versions()
    prov["config"] = config
    runs = prov.setdefault("runs", {})
    entry = runs.setdefault(run_id, {"started": now, "git": prov["git"], "jobs": []})
    entry["finished"] = None
    if job not in entry["jobs"]:
        entry["jobs"].append(job)
    jobs = prov.setdefault("jobs", {})
    jobs[job] = {"started": now, "finished": None, "run_id": run_id, "config": config}
    prov["finished"] = None
    target.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(target / PROVENANCE_FILE, prov)


def record_job_end(
    run_dir: Path, job: str, run_id: str, systems: dict[str, Any] | None = None
) -> None:
    """Mark a job finished and keep what its systems reported about themselves."""
    target = shards.write_dir(Path(run_dir))
    prov = _read_own(target)
    now = utc_now()
    entry = prov.setdefault("jobs", {}).setdefault(job, {})
    entry["finished"] = now
    if systems:
        entry["systems"] = systems
        prov.setdefault("systems", {}).update(systems)
    prov.setdefault("runs", {}).setdefault(run_id, {})["finished"] = now
    prov["finished"] = now
    target.mkdir(parents=True, exist_ok=True)
    _atomic_write_json(target / PROVENANCE_FILE, prov)


def new_run_id() -> str:
    """A fresh invocation id: UTC time to the second plus 4 random hex digits."""
    import secrets

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"

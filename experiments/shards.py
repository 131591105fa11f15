"""Results from several hosts: each host's jobs write their own shard, readers merge them.

A **shard** is a results table with its provenance (``results.csv`` + ``provenance.json``)
written by one process on one host. Layout of a results directory ``results/<run>/``::

    results.csv, provenance.json          what jobs on this machine wrote (no launcher)
    shards/<host>-<job id>/results.csv    what one cluster job wrote (hydra/launcher=...)
    shards/<host>-<job id>/provenance.json

A job writes a shard instead of the directory's own table when it runs under a submitit
launcher (``SUBMITIT_EXECUTOR`` is set in its environment: ``hydra/launcher=slurm`` or
``local``), or when ``HMOE_SHARD`` says so: ``auto`` (``<host>-<job id>``) or a name of its
own; ``HMOE_SHARD=off`` never shards. Each shard has exactly one writer, so jobs on many
hosts (or many jobs on one host) never write the same file, on a shared file system or not.

Reading merges: a results directory reads as its own table plus every shard under
``shards/``; a *set* of directories (several paths, or a parent folder whose subfolders are
results directories, e.g. copies brought back from several hosts) reads as one table. Rows
are concatenated, exact duplicates (the same shard copied twice) dropped, and a point
measured again anywhere keeps only its latest rows (as in one table). The shards must hold
one configuration: the same profile and, per model, the same source (checkpoint and
fingerprint, or synthetic recipe), the identity a single results directory keeps
(experiments/run_identity.py); a set that would mix them is refused, naming two shards and
the difference.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from experiments.errors import HmoeError
from experiments.run_identity import _describe as describe_source

RESULTS_FILE = "results.csv"
PROVENANCE_FILE = "provenance.json"
SHARDS_DIR = "shards"
SHARD_ENV = "HMOE_SHARD"
_OFF = {"0", "off", "no", "false", "none"}
_AUTO = {"1", "on", "yes", "true", "auto"}
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# -- writing --------------------------------------------------------------------------------
def _clean(text: str) -> str:
    return _NAME.sub("_", text).strip("._-") or "x"


def host_name() -> str:
    """This machine's short host name (the part before the first dot), file-name safe."""
    return _clean(socket.gethostname().split(".")[0])


def job_label(env: os._Environ | dict[str, str] | None = None) -> str:
    """This job's id on its scheduler: Slurm array ``JOB_TASK`` or job id, submitit's local
    job id, else ``pid<PID>``."""
    env = os.environ if env is None else env
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return _clean(f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}")
    for key in ("SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if env.get(key):
            return _clean(env[key])
    return f"pid{os.getpid()}"


def job_shard_name(env: os._Environ | dict[str, str] | None = None) -> str | None:
    """The shard this process writes, or None when it writes the directory's own table."""
    env = os.environ if env is None else env
    value = env.get(SHARD_ENV, "").strip()
    if value.lower() in _OFF and value:
        return None
    if value and value.lower() not in _AUTO:
        if _clean(value) != value or value in (".", ".."):
            raise HmoeError(
                f"{SHARD_ENV}={value!r} is not a usable shard name: use letters, digits, "
                "'.', '_' and '-' (or auto / off)"
            )
        return value
    if value or env.get("SUBMITIT_EXECUTOR"):
        return f"{host_name()}-{job_label(env)}"
    return None


def write_dir(results_dir: Path) -> Path:
    """Where this process writes the rows and provenance of ``results_dir``: the directory
    itself, or its shard ``shards/<name>/`` when this process is a cluster job."""
    name = job_shard_name()
    return Path(results_dir) if name is None else Path(results_dir) / SHARDS_DIR / name


# -- finding shards -------------------------------------------------------------------------
def _holds_results(path: Path) -> bool:
    return (path / RESULTS_FILE).is_file() or (path / PROVENANCE_FILE).is_file()


def _is_results_dir(path: Path) -> bool:
    return _holds_results(path) or (path / SHARDS_DIR).is_dir()


def tables(results_dir: Path) -> list[Path]:
    """The shards of one results directory: itself (when it holds a table or provenance),
    then each folder under its ``shards/``, sorted by name."""
    results_dir = Path(results_dir)
    found = [results_dir] if _holds_results(results_dir) else []
    shard_root = results_dir / SHARDS_DIR
    if shard_root.is_dir():
        found += sorted(p for p in shard_root.iterdir() if p.is_dir() and _holds_results(p))
    return found


def expand(paths: Iterable[Path]) -> list[Path]:
    """The shards of a set of paths: each path is a results directory (its own table and
    its ``shards/``) or a parent folder whose subfolders are results directories. A shard
    named twice (also through a parent) counts once. HmoeError when a path holds none."""
    leaves: list[Path] = []
    seen: set[Path] = set()
    for path in (Path(p) for p in paths):
        if not path.is_dir():
            raise HmoeError(f"no results table at {path / RESULTS_FILE} (no such directory)")
        if _is_results_dir(path):
            found = tables(path)
        else:
            children = sorted(p for p in path.iterdir() if p.is_dir() and _is_results_dir(p))
            found = [leaf for child in children for leaf in tables(child)]
        if not any((leaf / RESULTS_FILE).is_file() for leaf in found):
            raise HmoeError(
                f"no results table at {path / RESULTS_FILE} (nor in its {SHARDS_DIR}/ or its "
                "subfolders)"
            )
        for leaf in found:
            key = leaf.resolve()
            if key not in seen:
                seen.add(key)
                leaves.append(leaf)
    return leaves


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def shard_provenance(leaf: Path) -> dict[str, Any]:
    """One shard's own provenance.json ({} when missing)."""
    return read_json(Path(leaf) / PROVENANCE_FILE)


# -- one configuration ----------------------------------------------------------------------
class MixedShardsError(HmoeError):
    """Shards of different configurations were to be read as one table."""


def merge_identities(items: Sequence[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """The identity (profile, model sources) of shards read as one table, from each shard's
    ``(label, identity)``; HmoeError naming two shards when they disagree."""
    profile: tuple[str, Any] | None = None
    models: dict[str, tuple[str, Any]] = {}
    for name, identity in items:
        if not isinstance(identity, dict):
            continue
        have = identity.get("profile")
        if have is not None:
            if profile is not None and profile[1] != have:
                raise MixedShardsError(
                    f"{profile[0]} and {name} cannot be read as one table: {profile[0]} holds "
                    f"results measured with profile={profile[1]}, {name} with profile={have}; "
                    "one table holds one configuration (report or compare them separately)"
                )
            profile = profile or (name, have)
        for key, source in (identity.get("models") or {}).items():
            before = models.get(key)
            if before is not None and before[1] != source:
                raise MixedShardsError(
                    f"{before[0]} and {name} cannot be read as one table: model {key} comes "
                    f"from {describe_source(before[1])} in {before[0]} and from "
                    f"{describe_source(source)} in {name}; one table holds one configuration "
                    "(report or compare them separately)"
                )
            models.setdefault(key, (name, source))
    merged: dict[str, Any] = {"models": {k: v[1] for k, v in models.items()}}
    if profile is not None:
        merged["profile"] = profile[1]
    return merged


# -- provenance of a set --------------------------------------------------------------------
def _earliest(values: Iterable[Any]) -> Any:
    present = [v for v in values if v]
    return min(present) if present else None


def _merge_run(entries: list[dict[str, Any]], hosts: list[str]) -> dict[str, Any]:
    """One invocation's entry from the shards it wrote (a cluster run spans many)."""
    merged = dict(entries[0])
    merged["started"] = _earliest(e.get("started") for e in entries)
    finished = [e.get("finished") for e in entries]
    merged["finished"] = max(finished) if all(finished) else None
    jobs: list[str] = []
    for entry in entries:
        jobs += [j for j in entry.get("jobs") or [] if j not in jobs]
    merged["jobs"] = jobs
    merged["hosts"] = sorted(set(hosts))
    return merged


def merge_provenance(items: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The provenance of shards read as one table, from each shard's ``(label,
    provenance)``. One shard: its provenance unchanged. Several: the latest shard's fields
    (config, packages, hardware...), the merged identity, every invocation in ``runs``
    (with the hosts it ran on), every job, ``hosts`` (host name -> hardware) and ``shards``
    (label, host, run ids)."""
    present = [(name, prov) for name, prov in items if prov]
    if len(items) == 1:
        return dict(items[0][1])
    if not present:
        return {}
    latest = max(present, key=lambda item: str(item[1].get("started") or ""))[1]
    merged = dict(latest)
    merged["identity"] = merge_identities([(n, p.get("identity")) for n, p in present])
    merged["started"] = _earliest(p.get("started") for _, p in present)
    finished = [p.get("finished") for _, p in present]
    merged["finished"] = max(finished) if all(finished) else None
    runs: dict[str, list[dict[str, Any]]] = {}
    run_hosts: dict[str, list[str]] = {}
    jobs: dict[str, Any] = {}
    systems: dict[str, Any] = {}
    hosts: dict[str, Any] = {}
    shards = []
    for name, prov in present:
        hardware = prov.get("hardware") if isinstance(prov.get("hardware"), dict) else {}
        host = str(hardware.get("hostname") or "unknown")
        hosts.setdefault(host, hardware)
        for run_id, entry in (prov.get("runs") or {}).items():
            if isinstance(entry, dict):
                runs.setdefault(run_id, []).append(entry)
                run_hosts.setdefault(run_id, []).append(host)
        for job, entry in (prov.get("jobs") or {}).items():
            before = jobs.get(job)
            if before is None or str(entry.get("started") or "") >= str(before.get("started")):
                jobs[job] = entry
        systems.update(prov.get("systems") or {})
        shards.append({"shard": name, "host": host, "run_ids": sorted(prov.get("runs") or {})})
    merged["runs"] = {rid: _merge_run(entries, run_hosts[rid]) for rid, entries in runs.items()}
    merged["jobs"] = jobs
    merged["systems"] = systems
    merged["hosts"] = hosts
    merged["shards"] = shards
    return merged


def label(leaf: Path) -> str:
    """A shard's name for messages: its path (relative to the current folder when under it)."""
    try:
        return str(Path(leaf).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(leaf)

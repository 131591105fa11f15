"""Provenance without .git: the commit is stamped at install time (setup.py writes
experiments/_build_info.py) or passed in HMOE_GIT_COMMIT, so a copied tree still records
which code produced its rows, and an edit of the copy after the stamp shows as dirty."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.provenance import BUILD_INFO, git_state, read_build_info, stamp_build_info

REPO = Path(__file__).resolve().parents[1]
# what setup.py's stamping step needs of the project (it runs before any dependency exists)
STAMP_FILES = (
    "setup.py",
    "pyproject.toml",
    "experiments/__init__.py",
    "experiments/atomic_write.py",
    "experiments/errors.py",
    "experiments/provenance.py",
    "experiments/run_identity.py",
    "experiments/shards.py",
    "conf/config.yaml",
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture()
def checkout(tmp_path) -> Path:
    """A git checkout holding the files the stamp needs, committed."""
    root = tmp_path / "checkout"
    for name in STAMP_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "c")
    return root


def _copy_without_git(root: Path, dest: Path) -> Path:
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(".git"))
    return dest


def test_setup_py_stamps_the_commit_and_a_copy_without_git_reports_it(checkout, tmp_path):
    commit = _git(checkout, "rev-parse", "HEAD")
    proc = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=checkout, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    info = read_build_info(checkout)
    assert info["commit"] == commit and info["source"] == "git" and info["dirty"] is False
    assert info["version"] and info["digest"]
    assert "_build_info.py" in (REPO / ".gitignore").read_text()  # never committed

    copy = _copy_without_git(checkout, tmp_path / "copy")
    state = git_state(copy, env={})
    assert (state["commit"], state["source"], state["dirty"]) == (commit, "stamp", False)
    assert state["version"] == info["version"]
    # byte-code caches and results are not code: still clean
    (copy / "experiments" / "__pycache__").mkdir(exist_ok=True)
    (copy / "experiments" / "__pycache__" / "errors.cpython-311.pyc").write_bytes(b"\0")
    (copy / "results").mkdir()
    (copy / "results" / "notes.py").write_text("x = 1\n")
    assert git_state(copy, env={})["dirty"] is False
    # editing the copy after the stamp: the rows say the code is not the stamped commit
    (copy / "experiments" / "errors.py").write_text("# changed\n")
    edited = git_state(copy, env={})
    assert edited["commit"] == commit and edited["dirty"] is True
    assert edited["modified_since_stamp"] is True


def test_without_git_hmoe_git_commit_names_the_code(checkout, tmp_path):
    copy = _copy_without_git(checkout, tmp_path / "copy")
    assert git_state(copy, env={}) == {"commit": "unknown", "dirty": None, "source": None}
    env = {"HMOE_GIT_COMMIT": "feedc0de"}
    assert git_state(copy, env=env) == {
        "commit": "feedc0de",
        "dirty": None,
        "source": "HMOE_GIT_COMMIT",
    }
    # an install in the copy stamps what the variable says ...
    assert stamp_build_info(copy, env=env)["commit"] == "feedc0de"
    assert git_state(copy, env={})["commit"] == "feedc0de"
    # ... and a later install without git or the variable keeps that stamp
    before = (copy / "experiments" / BUILD_INFO).read_text()
    assert stamp_build_info(copy, env={}) is None
    assert (copy / "experiments" / BUILD_INFO).read_text() == before


def test_git_wins_over_a_stale_stamp(checkout):
    stamp_build_info(checkout, env={"HMOE_GIT_COMMIT": "old"})
    assert read_build_info(checkout)["commit"] != "old"  # git was there: git's commit
    (checkout / "experiments" / BUILD_INFO).write_text("COMMIT = 'stale'\n")
    state = git_state(checkout, env={"HMOE_GIT_COMMIT": "also-stale"})
    assert state["source"] == "git" and state["commit"] == _git(checkout, "rev-parse", "HEAD")


def test_a_stamp_is_read_as_literals_never_run(tmp_path):
    (tmp_path / "experiments").mkdir()
    marker = tmp_path / "ran"
    (tmp_path / "experiments" / BUILD_INFO).write_text(
        f"COMMIT = 'abc'\nDIRTY = open({str(marker)!r}, 'w').close()\n"
    )
    assert read_build_info(tmp_path) == {"commit": "abc"}
    assert not marker.exists()

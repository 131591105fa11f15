"""Offline installation: ``./run_all.sh wheelhouse DIR`` downloads what the project needs and
``./run_all.sh setup --wheelhouse DIR`` installs it into a fresh venv with pip's network
disabled (``--no-index``, PIP_NO_INDEX=1, an unroutable proxy, no pip configuration).

Trade-off of the install test: PyTorch is 200 MB (CPU) to 3 GB (CUDA) and the other
dependencies take minutes to install on 2 cores, so the wheelhouse is made without PyTorch
and the optional extras (``--no-torch``, ``HMOE_EXTRAS=""``), and the fresh venv sees most of
this venv's packages through a ``.pth`` file: PyTorch and the heavy dependencies are reused,
while hydra-core, omegaconf, antlr4 (published only as source: the wheelhouse builds its
wheel), gguf and psutil are left out so they really install from the wheelhouse, and so do
the build requirements of the project itself (setuptools, wheel, pybind11, in pip's
isolated build environment). That every requirement is in the wheelhouse is checked by the
wheelhouse mode itself (it resolves the whole set offline before it finishes); the
test asserts that check ran. Making the wheelhouse needs a package index: without one the
install test is skipped, with the reason.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFLINE = {
    "PIP_NO_INDEX": "1",
    "PIP_CONFIG_FILE": os.devnull,  # no configured index, mirror or find-links
    "HTTP_PROXY": "http://127.0.0.1:9",  # nothing listens there: any request fails
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
}
# these install from the wheelhouse in the fresh venv; everything else of this venv is reused
FROM_WHEELHOUSE = ("hybrid-moe-ae", "hydra-core", "omegaconf", "antlr4-python3-runtime", "gguf")
NOT_REUSED = (*FROM_WHEELHOUSE, "psutil", "pip", "setuptools", "wheel", "pybind11")


def _clean_env(offline: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment without the harness's variables; ``offline`` also drops
    pip's own (its index, mirrors, find-links) and any proxy exception."""
    drop = ("HMOE_", "VIRTUAL_ENV", "PYTHONPATH", *(("PIP_", "NO_PROXY", "no_proxy") * offline))
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **(OFFLINE if offline else {}), **extra}


def _run(args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 600):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheelhouse_and_setup_refuse_bad_arguments(tmp_path):
    env = _clean_env(HMOE_VENV=str(tmp_path / "never-made"))
    for args, needle in (
        (["wheelhouse"], "usage"),
        (["wheelhouse", str(tmp_path / "w"), "--python", "2.7"], "3.11 or newer"),
        (["wheelhouse", str(tmp_path / "w"), "--glibc", "2.5"], "2.17 or newer"),
        (["wheelhouse", str(tmp_path / "w"), "--frobnicate"], "unknown wheelhouse option"),
        (["setup", "--wheelhouse", str(tmp_path / "missing")], "is not a directory"),
        (["setup", "--frobnicate"], "unknown setup option"),
    ):
        proc = _run(["./run_all.sh", *args], env)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert needle in proc.stderr, (args, proc.stderr)
    # a wheelhouse made for another Python is refused before a venv is made
    (tmp_path / "w312").mkdir()
    (tmp_path / "w312" / "hmoe-wheelhouse.txt").write_text("python=3.99\n")
    proc = _run(["./run_all.sh", "setup", "--wheelhouse", str(tmp_path / "w312")], env)
    assert proc.returncode == 2 and "is for Python 3.99" in proc.stderr, proc.stderr
    assert not (tmp_path / "never-made").exists()


def _trim_script() -> str:
    text = (REPO / "run_all.sh").read_text()
    return re.search(r"^TRIM_LLAMA_PY='(.*?)^'", text, re.S | re.M).group(1)


def test_llama_cpp_source_is_trimmed_of_what_its_build_does_not_use(tmp_path):
    top = "llama_cpp_python-0.3.99"
    keep = [
        "pyproject.toml",
        "CMakeLists.txt",
        "llama_cpp/__init__.py",
        "vendor/llama.cpp/CMakeLists.txt",
        "vendor/llama.cpp/src/llama.cpp",
        "vendor/llama.cpp/ggml/src/ggml.c",
        "vendor/llama.cpp/tools/mtmd/mtmd.cpp",
        "vendor/llama.cpp/.gitignore",
        "examples/server.py",  # the Python package's own examples are not llama.cpp's
    ]
    drop = [
        "vendor/llama.cpp/models/ggml-vocab-llama.gguf",
        "vendor/llama.cpp/docs/build.md",
        "vendor/llama.cpp/media/logo.png",
        "vendor/llama.cpp/benches/x.md",
        "vendor/llama.cpp/tests/test-backend-ops.cpp",
        "vendor/llama.cpp/examples/simple/simple.cpp",
        "vendor/llama.cpp/.git",
        ".git/HEAD",
    ]
    src_dir = tmp_path / "src"
    for name in keep + drop:
        (src_dir / top / name).parent.mkdir(parents=True, exist_ok=True)
        (src_dir / top / name).write_text(name)
    sdist = tmp_path / f"{top}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(src_dir / top, arcname=top)
    out = tmp_path / "out" / sdist.name
    out.parent.mkdir()
    proc = _run([sys.executable, "-c", _trim_script(), str(sdist), str(out)], _clean_env())
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        files = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
        assert tar.extractfile(f"{top}/pyproject.toml").read() == b"pyproject.toml"
    assert files == set(keep)
    assert "files kept" in proc.stdout


def _index_problem(scratch: Path) -> str | None:
    """Why no wheelhouse can be made here (no package index reachable), or None."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--no-cache-dir", "-d", str(scratch), "wheel"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        return (
            "no package index reachable to make a wheelhouse: "
            + (proc.stderr.strip().splitlines() or ["pip download failed"])[-1]
        )
    return None


def _reuse_this_venv(venv: Path, farm: Path) -> None:
    """Make this venv's packages, except NOT_REUSED, visible to ``venv`` (a .pth file)."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm.mkdir()
    skip = {name.replace("_", "-").lower() for name in NOT_REUSED}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = (dist.metadata["Name"] or "").replace("_", "-").lower()
        if name in skip or not dist.files:
            continue
        for top in {f.parts[0] for f in dist.files if f.parts and f.parts[0] != ".."}:
            if top.endswith(".pth") or top == "__pycache__" or not (site / top).exists():
                continue
            if not (farm / top).exists():
                (farm / top).symlink_to(site / top)
    (lib,) = (venv / "lib").glob("python3*")
    (lib / "site-packages" / "reused-from-test-venv.pth").write_text(f"{farm}\n")


@pytest.mark.slow
def test_a_fresh_venv_installs_from_the_wheelhouse_without_network(tmp_path):
    problem = _index_problem(tmp_path / "probe")
    if problem:
        pytest.skip(problem)
    # a copy of the project as it travels to an offline machine: no .git
    project = tmp_path / "project"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, project / name)

    # on the connected machine: the wheelhouse (for this Python), and the commit stamped
    wheelhouse = tmp_path / "wheelhouse"
    made = _run(
        ["./run_all.sh", "wheelhouse", str(wheelhouse), "--no-torch"],
        _clean_env(
            HMOE_EXTRAS="", HMOE_VENV=str(Path(sys.executable).parents[1]), HMOE_GIT_COMMIT="c0ffee"
        ),
        cwd=project,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "resolves from" in made.stdout  # the completeness check ran
    manifest = (wheelhouse / "hmoe-wheelhouse.txt").read_text()
    assert f"python={sys.version_info[0]}.{sys.version_info[1]}\n" in manifest
    assert "commit=c0ffee\n" in manifest
    assert "COMMIT = 'c0ffee'" in (project / "experiments" / "_build_info.py").read_text()
    wheels = {p.name.split("-")[0].lower() for p in wheelhouse.glob("*.whl")}
    assert {"antlr4_python3_runtime", "hydra_core", "setuptools", "pybind11", "pandas"} <= wheels

    # on the offline machine: a fresh venv
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
    _reuse_this_venv(venv, tmp_path / "reused")

    env = _clean_env(
        offline=True,
        HMOE_VENV=str(venv),
        HMOE_EXTRAS="",
        HMOE_PYTHON=str(venv / "bin" / "python"),
        CC="false",  # the C++ kernels are not what this test is about: no compiler
        CXX="false",
    )
    setup = _run(["./run_all.sh", "setup", "--wheelhouse", str(wheelhouse)], env, cwd=project)
    out = setup.stdout + setup.stderr
    assert setup.returncode == 0, out
    assert f"packages only from the wheelhouse {wheelhouse}" in out
    assert "C++ kernels: NOT built" in out  # reported, and the install went on
    hmoe = _run([str(venv / "bin" / "hmoe"), "--help"], env, cwd=tmp_path)
    assert hmoe.returncode == 0 and "hmoe run" in hmoe.stdout, hmoe.stderr
    where = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import antlr4, gguf, hydra, omegaconf, experiments; "
            "print(*(m.__file__ for m in (antlr4, gguf, hydra, omegaconf)), sep='\\n'); "
            "print(experiments.__file__)",
        ],
        env,
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    *deps, project_file = where.stdout.split()
    assert all(path.startswith(str(venv)) for path in deps), deps  # from the wheelhouse
    assert project_file.startswith(str(project))

"""The layers point one way: plots -> experiments -> (engine, baselines); the engine is a
library that imports no harness code; registries resolve and name what they know."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.registry import Registry, RegistryError

REPO = Path(__file__).resolve().parents[1]
HARNESS = ("experiments", "baselines", "plots")


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each module file of ``package``: the top-level packages it imports (anywhere in
    the file, lazy imports inside functions included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {', '.join(sorted(names & set(forbidden)))}"
        for module, names in imported_packages(package).items()
        if names & set(forbidden)
    ]


def test_engine_imports_no_harness_code():
    assert offenders("engine", HARNESS) == []


def test_experiments_do_not_import_plots():
    """One direction only: plots read experiments' results and schema, never the reverse
    (the report runs as its own step; ``hmoe report`` is a lazy command entry)."""
    assert offenders("experiments", ("plots",)) == []
    assert offenders("baselines", ("plots",)) == []
    assert any("experiments" in names for names in imported_packages("plots").values())


def test_the_scanner_sees_lazy_imports(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("def f():\n    from plots.report import x\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert offenders("pkg", ("plots",)) == ["pkg/m.py imports plots"]


def registries() -> list[Registry]:
    from engine.experts import EXPERT_BACKENDS
    from experiments.cli import COMMANDS
    from experiments.points import EXPERIMENTS
    from experiments.system_api import SYSTEMS

    return [EXPERT_BACKENDS, COMMANDS, EXPERIMENTS, SYSTEMS]


@pytest.mark.parametrize("registry", registries(), ids=lambda r: r.kind)
def test_registries_resolve_and_refuse_unknown_names(registry):
    with pytest.raises(RegistryError, match=rf"unknown {registry.kind} 'nope'; available: "):
        registry.load("nope")
    for name in registry:
        if registry.kind == "expert backend" and name == "kernel":
            continue  # needs the C++ extension: tested with the kernels
        if registry.kind == "system" and name.startswith("llamacpp"):
            pytest.importorskip("llama_cpp")
        assert registry.load(name) is not None


def test_experiment_entries_plan_with_their_own_name():
    from experiments.points import EXPERIMENTS, experiment

    for name in EXPERIMENTS:
        exp = experiment(name)
        assert exp.name == name and exp.title and callable(exp.plan)

"""Registries of pluggable parts, named by lazy ``"module:attribute"`` strings.

One mechanism serves every kind of plug-in: expert backends (engine), systems, experiments
and accuracy tasks (harness). An entry is imported only when it is asked for, so a part
whose optional dependency is missing breaks nothing else, and adding one is one module plus
one entry. Unknown names fail with ``unknown <kind> 'x'; available: a, b``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class RegistryError(LookupError):
    """An unknown name, or an entry whose module or attribute does not exist."""


class MissingDependency(RegistryError):
    """An entry's module needs a package that is not installed (``.package`` names it)."""

    def __init__(self, message: str, package: str) -> None:
        super().__init__(message)
        self.package = package


class Registry(Mapping[str, str]):
    """Names of one kind of part -> ``"module:attribute"``; :meth:`load` imports lazily."""

    def __init__(self, kind: str, entries: Mapping[str, str]) -> None:
        for name, target in entries.items():
            if target.count(":") != 1:
                raise ValueError(f"{kind} {name!r}: target must be 'module:attribute'")
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> str:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, name: str) -> str:
        """``name`` itself when registered, else RegistryError listing what is."""
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self._entries)}"
            )
        return name

    def load(self, name: str) -> Any:
        """Import and return the entry's attribute (class, module-level object, function)."""
        module_name, attr = self._entries[self.check(name)].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and not module_name.startswith(exc.name):
                raise MissingDependency(
                    f"{self.kind} {name!r} needs the Python package {exc.name!r}, "
                    "which is not installed",
                    exc.name,
                ) from exc
            raise RegistryError(
                f"{self.kind} {name!r}: module {module_name} does not exist"
            ) from exc
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise RegistryError(f"{self.kind} {name!r}: {module_name} has no {attr!r}") from exc

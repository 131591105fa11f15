"""The Task protocols every accuracy task implements (generation or multiple choice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from experiments.accuracy_tasks.rules import DEFAULT_RULES


class Task(Protocol):
    """One benchmark: its docs, the paper's prompt for each, and how a completion scores.

    ``kind`` is "generate" (``prompt`` -> generate until a ``stop`` string, then ``score``)
    or "multiple_choice" (``prompt`` + each of ``choices`` scored by loglikelihood; the
    argmax is right when it equals ``gold``; see MultipleChoiceTask).
    """

    name: str
    kind: str
    stop: tuple[str, ...]
    max_new_tokens: int

    def load_problems(
        self, data_dir: Path | None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Problems in test order (0-based position as ``idx``): enough to score, not to prompt."""
        ...

    def load_docs(self, data_dir: Path | None, limit: int | None = None) -> list[dict[str, Any]]:
        """Docs in test order, each with its 0-based position as ``idx``, ready to prompt."""
        ...

    def prompt(self, doc: dict[str, Any]) -> str:
        """The exact prompt text (the paper artifact's, byte for byte)."""
        ...

    def score(self, doc: dict[str, Any], completion: str, rules: str = DEFAULT_RULES) -> float:
        """1.0 if the completion is right under the named rules ("paper" | "strict"), else 0.0."""
        ...


class MultipleChoiceTask(Task, Protocol):
    """A Task of kind "multiple_choice": continuations to rank and the index of the right one."""

    def choices(self, doc: dict[str, Any]) -> list[str]:
        """Continuations appended to the prompt, e.g. [" A", " B", " C", " D"]."""
        ...

    def gold(self, doc: dict[str, Any]) -> int:
        """Index into ``choices`` of the right answer."""
        ...

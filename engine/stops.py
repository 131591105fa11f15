"""Stop strings: where generated text ends (the one implementation every system uses)."""

from __future__ import annotations

from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest occurrence of any non-empty stop string in ``text``, or -1."""
    hits = [at for at in (text.find(s) for s in stops if s) if at >= 0]
    return min(hits) if hits else -1


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the earliest occurrence of any stop string (all of it if none occurs)."""
    at = find_stop(text, stops)
    return text if at < 0 else text[:at]

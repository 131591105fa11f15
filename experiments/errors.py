"""HmoeError: a problem the user can fix, printed as one line without a traceback."""

from __future__ import annotations


class HmoeError(Exception):
    """A user-facing error (bad input, missing file, unwritable directory...)."""

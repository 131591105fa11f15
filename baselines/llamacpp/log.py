"""Capture llama.cpp's log lines so that its refusals can carry their reason (torch-free).

Imported by the processes that load llama.cpp's libraries, which must import llama_cpp
before numpy (:mod:`baselines.llamacpp.load_order`) and never torch: keep this module's
imports to the standard library and ``llama_cpp``.
"""

from __future__ import annotations

import ctypes
from typing import Any


class LlamaCppLog:
    """llama.cpp's and ggml's log lines, captured instead of printed while the block runs.

    llama.cpp reports why it refuses a file or a quantization only in its log (stderr by
    default); the lines are kept here so the error raised can carry that reason. The log
    callback is process-wide: one callback is installed while any capture is open and
    hands every line to all open captures (a model keeps one open for its lifetime);
    when the last one closes, llama-cpp-python's own logger is put back.
    """

    LEVELS = {0: "none", 1: "debug", 2: "info", 3: "warn", 4: "error", 5: "cont"}  # ggml.h
    _open: list[LlamaCppLog] = []
    _callback: Any = None  # the installed ctypes callback (kept alive here)

    def __init__(self) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.lines: list[tuple[str, str]] = []  # (level, text)

    @classmethod
    def _on_log(cls, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        piece = text.decode("utf-8", errors="replace") if text else ""
        name = cls.LEVELS.get(int(level), "info")
        for capture in cls._open:
            if name == "cont" and capture.lines:
                prev_level, prev = capture.lines[-1]
                capture.lines[-1] = (prev_level, prev + piece)
            else:
                capture.lines.append((name, piece))

    def __enter__(self) -> LlamaCppLog:
        cls = type(self)
        if not cls._open:
            if cls._callback is None:
                cls._callback = self._llama_cpp.llama_log_callback(cls._on_log)
            self._llama_cpp.llama_log_set(cls._callback, ctypes.c_void_p(0))
        cls._open.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        if self in cls._open:
            cls._open.remove(self)
        if cls._open:
            return
        try:
            from llama_cpp import _logger

            self._llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        except ImportError:  # older llama-cpp-python: back to llama.cpp's default (stderr)
            self._llama_cpp.llama_log_set(None, ctypes.c_void_p(0))

    def text(self, since: int = 0) -> str:
        """Everything logged (from line ``since`` on), as llama.cpp would have printed it."""
        return "".join(t for _, t in self.lines[since:])

    def reason(self, since: int = 0, last: int = 6) -> str:
        """The error lines (else the warnings, else the last lines), joined with '; '."""
        logged = [(lvl, t.strip()) for lvl, t in self.lines[since:] if t.strip()]
        for wanted in (("error",), ("warn",), None):
            lines = [t for lvl, t in logged if wanted is None or lvl in wanted]
            if lines:
                return "; ".join(lines[-last:])
        return "llama.cpp logged no reason"

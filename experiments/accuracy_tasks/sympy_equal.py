"""Symbolic equality of two answer strings (the artifact's ``symbolic_equal``), time-limited.

Each string is parsed with sympy's ``parse_latex``, else ``parse_expr``, else kept as text;
the two are equal when ``simplify(a - b) == 0`` or their numeric values agree within
rel_tol 1e-3; any error means "not equal".

``parse_latex`` needs the ANTLR runtime 4.11, which cannot be installed beside hydra-core
1.3 (it pins antlr4-python3-runtime 4.9.*). Without it ``parse_latex`` raises ImportError
and the plain-expression parser is used, which is what the artifact effectively did in an
environment without that runtime. For GSM8K this path is reached only when the extracted
answer is not a plain number (e.g. "\\infty"), so it does not move the scores.

The comparison runs in a worker process (started on first use, kept for later calls), so
a pathological expression (``simplify`` of a huge power, say) cannot hang the scorer: past
``SYMBOLIC_TIMEOUT_S`` the worker is killed and the answer counts as not equal, as under
the artifact's own ``call_with_timeout``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from math import isclose
from pathlib import Path
from typing import Any

from experiments.errors import HmoeError

SYMBOLIC_TIMEOUT_S = 5.0
"""Seconds one symbolic comparison may take (its worker's start-up not counted)."""
STARTUP_TIMEOUT_S = 120.0
"""Seconds the worker may take to start and import sympy."""


def _parse(text: str) -> Any:
    from sympy.parsing.latex import parse_latex
    from sympy.parsing.sympy_parser import parse_expr

    for parser in (parse_latex, parse_expr):
        try:
            return parser(text)
        except Exception:
            continue
    return text


def symbolic_equal(a: str, b: str) -> bool:
    """The artifact's symbolic comparison, in this process and without a time limit."""
    from sympy import N, simplify

    left, right = _parse(a), _parse(b)
    try:
        if simplify(left - right) == 0:
            return True
    except Exception:
        pass
    try:
        return isclose(N(left), N(right), rel_tol=1e-3)
    except Exception:
        return False


def serve() -> None:
    """Worker loop: one JSON line [a, b] in on stdin, one JSON line true/false out."""
    import sympy  # noqa: F401 - imported once, before "ready"

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        a, b = json.loads(line)
        out.write(json.dumps(bool(symbolic_equal(a, b))) + "\n")
        out.flush()


class _Worker:
    """One worker process (``python -c ...serve()``), talked to through its stdin/stdout."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.buffer = b""
        if self._read_line(STARTUP_TIMEOUT_S) != b"ready":
            self.close()
            raise HmoeError(f"the sympy comparison worker ({sys.executable}) did not start")

    def _read_line(self, timeout_s: float) -> bytes | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def ask(self, a: str, b: str, timeout_s: float) -> bool | None:
        """The worker's answer, or None when it took longer than ``timeout_s`` (or died)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps([a, b]) + "\n").encode())
            self.process.stdin.flush()
        except OSError:
            return None
        line = self._read_line(timeout_s)
        return None if line is None else line == b"true"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_WORKER_CODE = "from experiments.accuracy_tasks.sympy_equal import serve; serve()"
_LOCK = threading.Lock()
_WORKER: list[_Worker] = []


def symbolic_equal_limited(a: str, b: str, timeout_s: float = SYMBOLIC_TIMEOUT_S) -> bool:
    """``symbolic_equal(a, b)`` in the worker; False when it takes longer than ``timeout_s``."""
    with _LOCK:
        if _WORKER and _WORKER[0].process.poll() is not None:
            _WORKER.pop().close()
        if not _WORKER:
            _WORKER.append(_Worker())
        answer = _WORKER[0].ask(a, b, timeout_s)
        if answer is None:  # too slow (or died): kill it; the next call starts a new one
            _WORKER.pop().close()
            return False
        return answer


def stop_worker() -> None:
    """Stop the worker process if one runs (a later call starts a new one)."""
    with _LOCK:
        while _WORKER:
            _WORKER.pop().close()

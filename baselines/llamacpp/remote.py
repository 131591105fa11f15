"""The harness's handle on a :mod:`baselines.llamacpp.worker` process, where llama.cpp runs.

:class:`LlamaCppWorker` starts ``python -m baselines.llamacpp.worker`` (a fresh interpreter:
it inherits nothing the harness imported), sends it requests over a socket pair and
raises its errors here as LlamaCppError, SystemUnavailable, ValueError or RuntimeError.
When the process dies (a segfault in llama.cpp, a kill), the request in flight and every
later one raise :class:`LlamaCppWorkerDied` saying how it ended; the harness lives on and
a new worker serves the next load.
"""

from __future__ import annotations

import socket
import subprocess
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from baselines.llamacpp.child_process import child_env, describe_exit, module_command
from baselines.llamacpp.placement import Placement
from baselines.llamacpp.runtime import LlamaCppError
from experiments.system_api import SystemUnavailable

WORKER_MODULE = "baselines.llamacpp.worker"
CLOSE_TIMEOUT_S = 5.0  # a worker that does not exit this long after close() is killed
_ERRORS: dict[str, type[Exception]] = {
    "LlamaCppError": LlamaCppError,
    "SystemUnavailable": SystemUnavailable,
    "ValueError": ValueError,
}


class LlamaCppWorkerDied(RuntimeError):
    """The llama.cpp worker process ended (crashed or was killed) before answering."""


class LlamaCppWorker:
    """One worker process holding at most one loaded model; see the module docstring."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                module_command(WORKER_MODULE, str(theirs.fileno())),
                pass_fds=(theirs.fileno(),),
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=2,  # llama.cpp's stray prints must not reach the harness's stdout
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.exit_reason: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.process.poll() is None

    def call(self, op: str, **kwargs: Any) -> Any:
        """Send request ``op`` and return its answer (raising the worker's error)."""
        if self.exit_reason is not None:
            raise LlamaCppWorkerDied(
                f"llama.cpp worker (pid {self.pid}) {self.exit_reason}; load the model again"
            )
        try:
            self.conn.send((op, kwargs))
            reply = self.conn.recv()
        except (EOFError, OSError):
            self._reap()
            raise LlamaCppWorkerDied(
                f"llama.cpp worker (pid {self.pid}) {self.exit_reason} during {op!r}; "
                "the next load starts a new worker"
            ) from None
        if reply[0] == "ok":
            return reply[1]
        _, kind, message = reply
        raise _ERRORS.get(kind, RuntimeError)(message)

    def _reap(self) -> None:
        """Wait for the process (killing it if it lingers) and note how it ended."""
        try:
            returncode = self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait()
        self.conn.close()
        if self.exit_reason is None:
            self.exit_reason = describe_exit(returncode)

    # -- requests ----------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        """version, gpu_offload, system_info and devices of the worker's llama.cpp."""
        return self.call("probe")

    def load(
        self,
        path: Path,
        placement: Placement,
        kv_type: str,
        flash_attn: bool | None,
        n_ubatch: int | None,
    ) -> None:
        self.call(
            "load",
            path=str(path),
            placement=placement,
            kv_type=kv_type,
            flash_attn=flash_attn,
            n_ubatch=n_ubatch,
        )

    def unload(self) -> None:
        self.call("unload")

    def prefill(self, ids: list[int], all_outputs: bool = False) -> float:
        return self.call("prefill", ids=list(ids), all_outputs=all_outputs)

    def decode(self, ids: list[int], n_tokens: int) -> tuple[float, float, list[int]]:
        return self.call("decode", ids=list(ids), n_tokens=n_tokens)

    def generate(
        self,
        text: str,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: tuple[str, ...],
    ) -> str:
        return self.call(
            "generate",
            text=text,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
        )

    def loglikelihood(self, context: str, continuations: list[str]) -> list[tuple[float, bool]]:
        return self.call("loglikelihood", context=context, continuations=list(continuations))

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.call("tokenize", text=text, add_special=add_special)

    @property
    def actual(self) -> dict[str, Any]:
        """The context parameters llama.cpp actually used last."""
        return self.call("actual")

    def facts(self) -> dict[str, Any]:
        return self.call("facts")

    def modules(self) -> list[str]:
        return self.call("modules")

    def close(self) -> None:
        """Ask the worker to free its model and exit; kill it if it has not within the timeout."""
        if self.exit_reason is not None:
            return
        try:
            self.conn.send(("close", {}))
            if self.conn.poll(CLOSE_TIMEOUT_S):
                self.conn.recv()
        except (EOFError, OSError):
            pass
        self._reap()

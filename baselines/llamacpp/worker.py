"""The torch-free process that runs llama.cpp for system ``llamacpp``: one model, served over a
connection.

llama.cpp's CUDA build crashes on load (a segfault in ``llama_model::print_info``) in a process
that imported numpy before llama_cpp (:mod:`baselines.llamacpp.load_order`), and the harness
has numpy and torch loaded long before, so everything that loads llama.cpp's libraries runs
here, where llama_cpp is imported first. Started by
:mod:`baselines.llamacpp.remote` as ``python -m baselines.llamacpp.worker FD``; FD is this
end of a socket pair carrying :class:`multiprocessing.connection.Connection` messages.
A request is ``(op, kwargs)``; the answer ``("ok", value)`` or ``("error", kind, message)``
with kind one of :data:`ERROR_KINDS` (anything else is sent as ``RuntimeError``). Values
are plain Python data. Timings are taken here around the llama.cpp calls, so IPC is not
timed. Ops: probe, load, unload, prefill, decode, generate, loglikelihood, tokenize,
actual, facts, modules, close (answers, then the process exits; so does end of input).

Nothing imported here may import torch (``modules`` lets a test check that).
"""

from __future__ import annotations

import math
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from baselines.llamacpp.load_order import load_llama_cpp_first

load_llama_cpp_first()  # before anything below loads numpy

import numpy as np  # noqa: E402

from baselines.llamacpp.placement import (  # noqa: E402
    Ggml,
    Placement,
    buffers_from_log,
    import_llama_cpp,
    overridden_tensors,
)
from baselines.llamacpp.runtime import LlamaCppError, LlamaCppModel  # noqa: E402
from experiments.system_api import SystemUnavailable, encode_pair  # noqa: E402

SCORING_UBATCH = 512  # micro-batch for untimed work (generate, loglikelihood): llama.cpp's default
ERROR_KINDS = ("LlamaCppError", "SystemUnavailable", "ValueError")  # most specific first


class Worker:
    """The requests one worker process serves (method ``op_NAME`` answers op ``NAME``)."""

    def __init__(self) -> None:
        self.model: LlamaCppModel | None = None
        self.n_ubatch: int | None = None  # the configured micro-batch (None: prompt length)

    def _ready(self) -> LlamaCppModel:
        if self.model is None:
            raise LlamaCppError("llamacpp: call load() before running the model")
        return self.model

    # -- the library and the model -----------------------------------------------------------
    def op_probe(self) -> dict[str, Any]:
        """What this llama.cpp build is: version, GPU offload, system info, ggml devices."""
        lib = import_llama_cpp()
        try:
            devices: Any = Ggml(lib).devices()
        except (SystemUnavailable, OSError, AttributeError) as exc:
            devices = f"unavailable: {exc}"
        return {
            "version": getattr(lib, "__version__", "unknown"),
            "gpu_offload": bool(lib.llama_supports_gpu_offload()),
            "system_info": lib.llama_print_system_info().decode(errors="replace"),
            "devices": devices,
        }

    def op_load(
        self,
        path: str,
        placement: Placement,
        kv_type: str,
        flash_attn: bool | None,
        n_ubatch: int | None,
    ) -> None:
        """Load ``path`` with ``placement`` (the previous model is freed first)."""
        self.op_unload()
        self.model = LlamaCppModel(Path(path), placement, kv_type, flash_attn)
        self.n_ubatch = n_ubatch

    def op_unload(self) -> None:
        if self.model is not None:
            self.model.close()
        self.model = None

    # -- measuring ---------------------------------------------------------------------------
    def op_prefill(self, ids: list[int], all_outputs: bool = False) -> float:
        """Seconds of one ``llama_decode`` of the whole prompt from an empty KV cache; with
        ``all_outputs`` every token's logits are computed (else the last one's)."""
        m, n = self._ready(), len(ids)
        ubatch = self.n_ubatch or max(1, n)
        m.ensure_context(n, ubatch, max(n, ubatch), n_outputs=n if all_outputs else 1)
        m.clear()
        m.prepare(ids, 0, all_logits=all_outputs)
        m.synchronize()
        t0 = time.perf_counter()
        m.run()
        m.synchronize()
        seconds = time.perf_counter() - t0
        m.clear()
        return seconds

    def op_decode(self, ids: list[int], n_tokens: int) -> tuple[float, float, list[int]]:
        """Prefill, then ``n_tokens`` greedy single-token steps: (prefill s, decode s, tokens)."""
        m, p = self._ready(), len(ids)
        ubatch = self.n_ubatch or max(1, p)
        m.ensure_context(p + n_tokens + 1, ubatch, max(p, ubatch))
        m.clear()
        m.prepare(ids, 0)
        m.synchronize()
        t0 = time.perf_counter()
        m.run()
        token = int(np.argmax(m.logits(-1)))
        t1 = time.perf_counter()
        tokens = []
        for i in range(n_tokens):
            tokens.append(token)
            m.prepare_one(token, p + i)
            m.run()
            token = int(np.argmax(m.logits(-1)))
        m.synchronize()
        t2 = time.perf_counter()
        m.clear()
        return t1 - t0, t2 - t1, tokens

    # -- text --------------------------------------------------------------------------------
    def op_generate(
        self,
        text: str,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: tuple[str, ...],
    ) -> str:
        """The sampled continuation, up to and including the first stop string (not cut)."""
        m = self._ready()
        prompt = m.tokenize(text)
        if not prompt:
            raise ValueError("llamacpp.generate: the prompt encodes to no tokens")
        budget = max(0, max_new_tokens)
        m.ensure_context(len(prompt) + budget + 1, self.n_ubatch or SCORING_UBATCH, 0)
        chain = m.sampler(temperature, top_p, seed)
        out: list[int] = []
        try:
            m.clear()
            m.forward(prompt, 0)
            while len(out) < budget:
                token = m.sample(chain)
                if m.is_eog(token):
                    break
                out.append(token)
                if stop and any(s in m.detokenize(out) for s in stop):
                    break
                m.prepare_one(token, len(prompt) + len(out) - 1)
                m.run()
        finally:
            m.lib.llama_sampler_free(chain)
            m.clear()
        return m.detokenize(out)

    def op_loglikelihood(self, context: str, continuations: list[str]) -> list[tuple[float, bool]]:
        """Summed log-probability of each continuation after ``context``, and if it is greedy."""
        m = self._ready()
        results: list[tuple[float, bool]] = []
        for continuation in continuations:
            ctx, cont = encode_pair(m.tokenize, context, continuation, m.eos())
            if not cont:
                results.append((0.0, True))
                continue
            tokens = ctx + cont
            total = len(tokens)
            m.ensure_context(total + 1, self.n_ubatch or SCORING_UBATCH, total, total)
            m.clear()
            m.prepare(tokens, 0, all_logits=True)
            m.run()
            logprob, greedy = 0.0, True
            for j, tok in enumerate(cont):
                row = m.logits(len(ctx) - 1 + j).astype(np.float64)
                top = float(row.max())
                logprob += float(row[tok]) - top - math.log(float(np.exp(row - top).sum()))
                greedy = greedy and int(np.argmax(row)) == tok
            m.clear()
            results.append((logprob, greedy))
        return results

    def op_tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self._ready().tokenize(text, add_special)

    # -- facts -------------------------------------------------------------------------------
    def op_actual(self) -> dict[str, Any]:
        """The context parameters llama.cpp actually used last (n_ctx, n_batch, n_ubatch...)."""
        return dict(self._ready().actual)

    def op_facts(self) -> dict[str, Any]:
        """The loaded model's description, buffers, overridden tensors and context."""
        m = self._ready()
        return {
            "model_desc": m.description(),
            "buffers_mib": buffers_from_log(m.load_log + m.context_log),
            "tensors_overridden": overridden_tensors(m.load_log),
            "context": {**m.actual, "flash_attn_type": m.flash_attn},
            "extra_buffers": {"used": m.extra_buffers, "why": m.extra_buffers_why},
        }

    def op_modules(self) -> list[str]:
        """The names of the modules this process has imported, in the order imported."""
        return list(sys.modules)


def error_reply(exc: BaseException) -> tuple[str, str, str]:
    """``("error", kind, message)`` for ``exc``; an unexpected type is named in the message."""
    for kind in ERROR_KINDS:
        if any(cls.__name__ == kind for cls in type(exc).__mro__):
            return ("error", kind, str(exc))
    return ("error", "RuntimeError", f"{type(exc).__name__}: {exc}")


def serve(conn: Connection) -> None:
    """Answer requests until ``close`` or the end of input; the model is freed either way."""
    worker = Worker()
    try:
        while True:
            try:
                op, kwargs = conn.recv()
            except EOFError:
                return
            if op == "close":
                worker.op_unload()
                conn.send(("ok", None))
                return
            handler = getattr(worker, f"op_{op}", None)
            try:
                if handler is None:
                    raise ValueError(f"unknown llama.cpp worker request {op!r}")
                reply: tuple[Any, ...] = ("ok", handler(**kwargs))
            except Exception as exc:  # noqa: BLE001 - every error goes back to the caller
                reply = error_reply(exc)
            conn.send(reply)
    finally:
        worker.op_unload()


def main(argv: list[str] | None = None) -> int:
    """``FD``: serve the connection on file descriptor FD (Ctrl-C is the parent's to handle)."""
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with Connection(int(args[0])) as conn:
        serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())

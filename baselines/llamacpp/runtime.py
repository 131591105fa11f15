"""A llama.cpp model driven through llama-cpp-python's C API, as llama-bench drives it.

Loads a GGUF with a :class:`~baselines.llamacpp.placement.Placement` (llama.cpp's log
captured, so a refusal carries its reason), keeps one context sized for the request at
hand (recreated when a prompt needs a larger context or another micro-batch size), and
runs ``llama_decode`` on a preallocated ``llama_batch`` so that timed regions contain
llama.cpp's work and not Python's: the batch is filled before the clock starts. Also
tokenizes, detokenizes and samples with llama.cpp's own vocabulary and samplers.

Runs in :mod:`baselines.llamacpp.worker`'s process, which imports llama_cpp before numpy
(:mod:`baselines.llamacpp.load_order`) and never torch: nothing imported here may import torch.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from baselines.llamacpp.log import LlamaCppLog
from baselines.llamacpp.placement import (
    Ggml,
    Placement,
    import_llama_cpp,
    model_params,
    resolve_extra_buffers,
)
from engine.errors import EngineError

_BACKEND_READY = False
KV_TYPES = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8}  # ggml_type of the KV cache (-ctk/-ctv)


class LlamaCppError(EngineError):
    """llama.cpp refused a model file, a context or a batch; the message carries its reason."""


class LlamaCppModel:
    """One GGUF loaded by llama.cpp with a placement, and the one context it runs in."""

    def __init__(
        self,
        path: Path,
        placement: Placement,
        kv_type: str = "f16",
        flash_attn: bool | None = None,
    ) -> None:
        """Load ``path``; ``kv_type`` is the KV cache type (-ctk/-ctv), ``flash_attn`` None
        leaves llama.cpp's choice (auto), True/False forces it (-fa on/off)."""
        global _BACKEND_READY
        if kv_type not in KV_TYPES:
            raise ValueError(f"kv_type must be one of {sorted(KV_TYPES)}, got {kv_type!r}")
        self.kv_type, self.flash_attn_wanted = kv_type, flash_attn
        self.lib = import_llama_cpp()
        if not _BACKEND_READY:
            self.lib.llama_backend_init()
            _BACKEND_READY = True
        self.ggml = Ggml(self.lib)
        self.path = Path(path)
        self.placement = placement
        if not self.path.is_file():
            raise LlamaCppError(f"{self.path}: GGUF file not found")
        system_info = self.lib.llama_print_system_info().decode(errors="replace")
        self.extra_buffers, self.extra_buffers_why = resolve_extra_buffers(placement, system_info)
        params, keep = model_params(self.lib, self.ggml, placement, self.extra_buffers)
        # llama.cpp logs to this capture for the model's lifetime (stderr stays quiet, and
        # every refusal can quote its reason); close() hands logging back.
        self.log = LlamaCppLog().__enter__()
        self.model: Any = self.lib.llama_model_load_from_file(str(self.path).encode(), params)
        self._keep = keep  # the override table must outlive the model
        if not self.model:
            reason = self.log.reason()
            self.log.__exit__()
            raise LlamaCppError(f"llama.cpp refused to load {self.path.name}: {reason}")
        self.load_log = self.log.text()
        self.context_log = ""
        self.vocab = self.lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(self.lib.llama_vocab_n_tokens(self.vocab))
        self.ctx: Any = None
        self._batch: Any = None
        self.n_ctx = self.n_batch = self.n_ubatch = self.n_outputs = 0
        self.actual: dict[str, Any] = {}
        self.flash_attn = "auto"
        self._views: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- context -----------------------------------------------------------------------------
    def ensure_context(
        self, n_ctx: int, n_ubatch: int, n_batch: int | None = None, n_outputs: int = 1
    ) -> None:
        """A context of at least ``n_ctx`` cells and ``n_batch`` batch, micro-batch ``n_ubatch``,
        room for ``n_outputs`` logits rows per batch (1 for prefill and decode: the logits
        buffer of n_batch x vocab floats would otherwise be gigabytes at long prompts).

        The current one is kept when it is large enough and has this micro-batch size.
        """
        n_batch = max(n_batch or n_ubatch, n_ubatch)
        n_ctx = max(n_ctx, n_batch)  # else llama.cpp would clamp n_batch to n_ctx
        n_outputs = min(max(1, n_outputs), n_batch)
        if (
            self.ctx is not None
            and self.n_ctx >= n_ctx
            and self.n_ubatch == n_ubatch
            and self.n_batch >= n_batch
            and self.n_outputs >= n_outputs
        ):
            return
        self._free_context()
        lib, p = self.lib, self.lib.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = n_ctx, n_batch, n_ubatch, 1
        p.n_threads = p.n_threads_batch = self.placement.threads
        if hasattr(p, "n_outputs_max"):  # older llama.cpp: always n_batch rows
            p.n_outputs_max = n_outputs
        p.offload_kqv = not self.placement.kv_on_cpu
        if hasattr(p, "op_offload"):
            p.op_offload = self.placement.op_offload
        elif not self.placement.op_offload:
            raise LlamaCppError(
                "this llama-cpp-python has no op_offload context parameter; "
                "op_offload: false needs a newer one"
            )
        p.type_k = p.type_v = KV_TYPES[self.kv_type]
        fa_field = "flash_attn_type" if hasattr(p, "flash_attn_type") else "flash_attn"
        if self.flash_attn_wanted is not None:
            want = self.flash_attn_wanted
            setattr(p, fa_field, (1 if want else 0) if fa_field == "flash_attn_type" else want)
        mark = len(self.log.lines)
        ctx = lib.llama_init_from_model(self.model, p)
        if not ctx:
            raise LlamaCppError(
                f"llama.cpp could not create a context (n_ctx={n_ctx}, n_batch={n_batch}, "
                f"n_ubatch={n_ubatch}): {self.log.reason(since=mark)}"
            )
        self.ctx, self.context_log = ctx, self.log.text(since=mark)
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        self.n_batch = min(n_batch, int(lib.llama_n_batch(ctx)))
        self.n_ubatch = n_ubatch
        self.n_outputs = n_outputs if hasattr(p, "n_outputs_max") else self.n_batch
        self.actual = {
            "n_ctx": self.n_ctx,
            "n_batch": int(lib.llama_n_batch(ctx)),
            "n_ubatch": int(lib.llama_n_ubatch(ctx)),
            "kv_type": self.kv_type,
            "n_outputs": self.n_outputs,
            "offload_kqv": bool(p.offload_kqv),
            "op_offload": bool(getattr(p, "op_offload", True)),
        }
        self.flash_attn = {-1: "auto", 0: "off", 1: "on"}.get(int(getattr(p, fa_field)), "?")
        batch = lib.llama_batch_init(self.n_batch, 0, 1)
        for i in range(self.n_batch):
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
        self._batch = batch
        self._views = (
            np.ctypeslib.as_array(batch.token, shape=(self.n_batch,)),
            np.ctypeslib.as_array(batch.pos, shape=(self.n_batch,)),
            np.ctypeslib.as_array(batch.logits, shape=(self.n_batch,)),
        )

    def _free_context(self) -> None:
        if self._batch is not None:
            self.lib.llama_batch_free(self._batch)
            self._batch, self._views = None, None
        if self.ctx is not None:
            self.lib.llama_free(self.ctx)
            self.ctx = None
        self.n_ctx = self.n_batch = self.n_ubatch = self.n_outputs = 0

    def clear(self) -> None:
        """Empty the KV cache (as llama-bench does before each repetition)."""
        lib = self.lib
        if hasattr(lib, "llama_memory_clear"):
            lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        elif hasattr(lib, "llama_kv_self_clear"):
            lib.llama_kv_self_clear(self.ctx)
        else:
            lib.llama_kv_cache_clear(self.ctx)

    # -- running -----------------------------------------------------------------------------
    def prepare(self, tokens: Sequence[int], start: int, all_logits: bool = False) -> None:
        """Fill the batch with ``tokens`` at positions ``start...`` (logits of the last, or all)."""
        n = len(tokens)
        if self._views is None or n > self.n_batch or n == 0:
            raise LlamaCppError(f"a batch of {n} tokens does not fit n_batch={self.n_batch}")
        if all_logits and n > self.n_outputs:
            raise LlamaCppError(f"{n} logits rows do not fit n_outputs={self.n_outputs}")
        tok, pos, out = self._views
        tok[:n] = tokens
        pos[:n] = np.arange(start, start + n, dtype=pos.dtype)
        out[:n] = 1 if all_logits else 0
        out[n - 1] = 1
        self._batch.n_tokens = n

    def prepare_one(self, token: int, position: int) -> None:
        """Fill the batch with one token (a decode step), its logits wanted."""
        assert self._views is not None
        tok, pos, out = self._views
        tok[0], pos[0], out[0] = token, position, 1
        self._batch.n_tokens = 1

    def run(self) -> None:
        """``llama_decode`` the prepared batch; a non-zero status raises with llama.cpp's reason."""
        mark = len(self.log.lines)
        rc = self.lib.llama_decode(self.ctx, self._batch)
        if rc != 0:
            why = {1: "no KV cache slot for the batch (context too small)", 2: "aborted"}
            raise LlamaCppError(
                f"llama_decode returned {rc} ({why.get(rc, 'error')}): "
                f"{self.log.reason(since=mark)}"
            )

    def synchronize(self) -> None:
        """Wait for the device work of the last decode (llama-bench does this before timing)."""
        self.lib.llama_synchronize(self.ctx)

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of output ``i`` of the last batch (a view; copy it to keep it)."""
        ptr = self.lib.llama_get_logits_ith(self.ctx, i)
        if not ptr:
            raise LlamaCppError(f"llama.cpp has no logits for output {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def forward(self, tokens: Sequence[int], start: int, all_logits: bool = False) -> None:
        """Decode ``tokens`` from position ``start`` in ``n_batch`` chunks (untimed helper)."""
        for at in range(0, len(tokens), self.n_batch):
            chunk = tokens[at : at + self.n_batch]
            self.prepare(chunk, start + at, all_logits)
            self.run()

    # -- text --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """llama.cpp's tokens for ``text`` (BOS if the vocabulary asks for it, specials parsed)."""
        raw = text.encode("utf-8")
        size = len(raw) + 16
        while True:
            buf = (ctypes.c_int32 * size)()
            n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, size, add_special, True)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def piece(self, token: int) -> bytes:
        """The bytes of one token (control tokens render as nothing)."""
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def eos(self) -> int | None:
        tok = int(self.lib.llama_vocab_eos(self.vocab))
        return tok if tok >= 0 else None

    def sampler(self, temperature: float, top_p: float, seed: int) -> Any:
        """llama.cpp's sampler chain: greedy at temperature 0, else top-p, temperature, seeded."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            if top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def sample(self, chain: Any) -> int:
        return int(self.lib.llama_sampler_sample(chain, self.ctx, -1))

    # -- facts -------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, 256)
        return buf.value.decode(errors="replace") if n >= 0 else None

    def description(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self.lib.llama_model_desc(self.model, buf, 256)
        return buf.value.decode(errors="replace")

    def close(self) -> None:
        """Free the context and the model, and hand llama.cpp's log back."""
        if getattr(self, "model", None) is None:
            return
        self._free_context()
        self.lib.llama_model_free(self.model)
        self.model = None
        self.log.__exit__()

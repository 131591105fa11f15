"""Greedy decode steps with static shapes: run eagerly, or captured once in a CUDA Graph (+c).

Every input of a step lives in a device buffer (the token, its position, the visibility
mask over the static KV cache), the step picks the next token by argmax on the device and
writes it back as the next input, and the experts' CPU work is submitted and synced by
host functions on the stream (engine.experts.stream_runner). So one step is a fixed
sequence of stream operations: captured once per expert split, it is replayed per token
with no Python work and no host synchronisation until the caller reads the tokens.
Eager mode runs exactly the same step without the graph (identical tokens).
"""

from __future__ import annotations

import torch

from engine.errors import EngineError
from engine.runtime.kv_cache import KVCache

MIN_WINDOW = 256  # smallest attention window of a static step (positions)


class StaticDecoder:
    """Greedy decoding from a prefilled cache, eager or through a CUDA Graph."""

    def __init__(self, model, cache: KVCache, use_graph: bool) -> None:  # noqa: ANN001
        if use_graph and model.device.type != "cuda":
            raise EngineError("CUDA Graph decode needs the model on a CUDA device")
        dev = model.device
        self.model, self.cache, self.use_graph = model, cache, use_graph
        self.token = torch.zeros(1, dtype=torch.long, device=dev)
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        self.step_index = torch.zeros(1, dtype=torch.long, device=dev)
        self.tokens = torch.zeros(cache.max_seq, dtype=torch.long, device=dev)
        self.keys = torch.arange(cache.max_seq, device=dev)
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.captures = 0
        self.window = MIN_WINDOW

    def _body(self) -> None:
        """One step: logits at ``position`` for ``token``; argmax becomes the next token."""
        visible = self.keys[: self.window] <= self.position
        logits = self.model.forward_step(self.token, self.position, self.cache, visible)
        nxt = torch.argmax(logits).reshape(1)
        self.tokens.index_copy_(0, self.step_index, nxt)
        self.token.copy_(nxt)
        self.position.add_(1)
        self.step_index.add_(1)

    def _graph(self) -> torch.cuda.CUDAGraph:
        key = (id(self.model.expert_runner), self.window)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph
        saved = (self.token.clone(), self.position.clone(), self.step_index.clone())
        side = torch.cuda.Stream(self.model.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body()  # warm-up outside the graph (allocations, kernel selection)
        torch.cuda.current_stream().wait_stream(side)
        for buf, value in zip((self.token, self.position, self.step_index), saved, strict=True):
            buf.copy_(value)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body()
        for buf, value in zip((self.token, self.position, self.step_index), saved, strict=True):
            buf.copy_(value)  # capture ran the body once more: restore the inputs
        self._graphs[key] = graph
        self.captures += 1
        return graph

    @torch.inference_mode()
    def greedy(self, first_token: int, n_tokens: int) -> torch.Tensor:
        """``n_tokens`` greedy steps after the cached prompt, starting by feeding
        ``first_token``; returns the device tensor of the ``n_tokens`` tokens produced
        (nothing is synchronised: read it when needed). Advances ``cache.length``."""
        start = self.cache.reserve(n_tokens)
        if n_tokens <= 0:
            return self.tokens[:0]
        # attend over a power-of-two window that holds the whole sequence, not all of
        # max_seq: one graph per window size, a few at most
        end = start + n_tokens
        self.window = min(self.cache.max_seq, max(MIN_WINDOW, 1 << (end - 1).bit_length()))
        self.token.fill_(first_token)
        self.position.fill_(start)
        self.step_index.zero_()
        if self.use_graph:
            graph = self._graph()
            for _ in range(n_tokens):
                graph.replay()
        else:
            for _ in range(n_tokens):
                self._body()
        self.cache.length = start + n_tokens
        return self.tokens[:n_tokens]

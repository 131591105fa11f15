"""The reference expert backend and the deferral hook: any split of the top-k, summed, equals
running all k, both at the backend and through a loaded model's expert_runner."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import VOCAB

from engine.errors import EngineError
from engine.experts import (
    ImmediateExpertRunner,
    ReferenceExpertBackend,
    StackedExperts,
    split_topk,
)


def random_layer(seed: int = 0, e: int = 6, h: int = 32, inter: int = 16):
    gen = torch.Generator().manual_seed(seed)
    gate = [torch.randn(inter, h, generator=gen) for _ in range(e)]
    up = [torch.randn(inter, h, generator=gen) for _ in range(e)]
    down = [torch.randn(h, inter, generator=gen) for _ in range(e)]
    return gate, up, down, gen


def test_reference_backend_matches_a_per_token_loop():
    gate, up, down, gen = random_layer()
    backend = ReferenceExpertBackend("fp32")
    backend.prepare(3, StackedExperts.from_lists(gate, up, down))
    hidden = torch.randn(5, 32, generator=gen)
    ids = torch.tensor([[0, 5, 2], [1, -1, 1], [4, 3, -1], [-1, -1, -1], [2, 2, 0]])
    weights = torch.rand(5, 3, generator=gen)
    out = backend.forward(3, hidden, ids, weights)
    expected = torch.zeros_like(hidden)
    for t in range(5):
        for j in range(3):
            e = int(ids[t, j])
            if e >= 0:
                y = F.silu(hidden[t] @ gate[e].T) * (hidden[t] @ up[e].T)
                expected[t] += weights[t, j] * (y @ down[e].T)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert backend.num_experts(3) == 6
    with pytest.raises(EngineError, match="expert id 6"):
        backend.forward(3, hidden, torch.full((5, 3), 6), weights)
    with pytest.raises(EngineError, match="no layer 0"):
        backend.forward(0, hidden, ids, weights)


def test_backend_returns_hidden_dtype():
    gate, up, down, gen = random_layer(1)
    backend = ReferenceExpertBackend("bf16")
    backend.prepare(0, StackedExperts.from_lists(gate, up, down))
    hidden = torch.randn(4, 32, generator=gen).to(torch.bfloat16)
    out = backend.forward(0, hidden, torch.tensor([[0, 1]] * 4), torch.rand(4, 2))
    assert out.dtype == torch.bfloat16 and out.shape == (4, 32)


@pytest.mark.parametrize("n_now", [0, 1, 2, 3])
def test_split_topk_sums_to_all(n_now):
    gate, up, down, gen = random_layer(2)
    backend = ReferenceExpertBackend("fp32")
    backend.prepare(0, StackedExperts.from_lists(gate, up, down))
    hidden = torch.randn(7, 32, generator=gen)
    ids = torch.stack([torch.randperm(6, generator=gen)[:3] for _ in range(7)])
    weights = torch.rand(7, 3, generator=gen)
    now, later = split_topk(ids, n_now)
    assert bool(((now >= 0).sum(1) == n_now).all())
    total = backend.forward(0, hidden, now, weights) + backend.forward(0, hidden, later, weights)
    torch.testing.assert_close(
        total, backend.forward(0, hidden, ids, weights), rtol=1e-5, atol=1e-4
    )


class SplitRunner:
    """A test runner: the first ``n_now`` of each token's top-k, then the rest, summed; it
    records the order of calls so the test can see the routed experts start before the
    shared expert runs and finish after it."""

    def __init__(self, backend, hidden_size: int, top_k: int, n_now: int) -> None:
        self.inner = ImmediateExpertRunner(backend, hidden_size, top_k)
        self.n_now = n_now
        self.layers: list[int] = []
        self.events: list[tuple[str, int]] = []
        self._now: dict[int, tuple] = {}

    def start_pass(self) -> None:
        self.inner.start_pass()

    def begin(self, layer_idx, hidden, expert_ids, weights):
        self.layers.append(layer_idx)
        self.events.append(("begin", layer_idx))
        self._now[layer_idx] = (hidden, expert_ids, weights)

    def finish(self, layer_idx):
        self.events.append(("finish", layer_idx))
        hidden, expert_ids, weights = self._now.pop(layer_idx)
        now, later = split_topk(expert_ids, self.n_now)
        self.inner.begin(layer_idx, hidden, now, weights)
        first = self.inner.finish(layer_idx).clone()  # valid only until the next begin
        self.inner.begin(layer_idx, hidden, later, weights)
        return first + self.inner.finish(layer_idx)


@pytest.mark.parametrize("name", ["qwen2_norm", "ds3_qlora_norm"])
def test_model_expert_runner_hook_defers_without_model_changes(name, checkpoint, load_engine):
    model = load_engine(checkpoint(name))
    ids = torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(6))
    expected = model.forward(ids, model.new_cache(24), all_logits=True)
    c = model.config
    runner = SplitRunner(model.expert_backend, c.hidden_size, c.top_k, n_now=1)
    model.expert_runner = runner
    got = model.forward(ids, model.new_cache(24), all_logits=True)
    moe_layers = [i for i in range(model.num_layers) if c.is_moe_layer(i)]
    assert runner.layers == moe_layers and moe_layers
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_moe_block_starts_routed_experts_before_the_shared_expert(checkpoint, load_engine):
    """The block submits the routed experts, computes the shared expert, then collects."""
    model = load_engine(checkpoint("qwen2_norm"))
    c = model.config
    runner = SplitRunner(model.expert_backend, c.hidden_size, c.top_k, n_now=c.top_k)
    block = next(layer.mlp for layer in model.layers if c.is_moe_layer(layer.mlp.layer_idx))
    assert block.shared is not None
    calls = []
    shared = block.shared

    def spy(x):
        calls.append(list(runner.events))
        return shared(x)

    block.shared = spy
    model.expert_runner = runner
    x = torch.randn(5, c.hidden_size, dtype=model.dtype)
    block(x, runner)
    assert calls == [[("begin", block.layer_idx)]]  # routed started, not yet collected
    assert runner.events[-1] == ("finish", block.layer_idx)


def test_submit_sync_writes_the_callers_buffer_and_checks_the_contract():
    gate, up, down, gen = random_layer(4)
    backend = ReferenceExpertBackend("fp32")
    backend.prepare(0, StackedExperts.from_lists(gate, up, down))
    hidden = torch.randn(4, 32, generator=gen)
    ids = torch.tensor([[0, 1], [2, 3], [4, 5], [1, -1]], dtype=torch.int32)
    weights = torch.rand(4, 2, generator=gen)
    out = torch.full((4, 32), float("nan"))
    ticket = backend.submit(0, hidden, ids, weights, out)
    backend.sync(ticket)
    torch.testing.assert_close(out, backend.forward(0, hidden, ids.long(), weights))
    with pytest.raises(EngineError, match="float32"):
        backend.submit(0, hidden, ids, weights.double(), out)
    with pytest.raises(EngineError, match="tokens"):
        backend.submit(0, hidden, ids, weights, out[:3])
    with pytest.raises(EngineError, match="ticket"):
        backend.sync(ticket + 5)


def test_stacked_experts_check_their_shapes():
    with pytest.raises(EngineError, match="down"):
        StackedExperts(torch.zeros(2, 8, 4), torch.zeros(2, 4, 3))
    stacked = StackedExperts.from_lists(
        [torch.ones(3, 4)], [2 * torch.ones(3, 4)], [torch.ones(4, 3)]
    )
    assert stacked.gate_up.shape == (1, 6, 4) and stacked.intermediate_size == 3
    assert torch.equal(stacked.gate_up[0, 3:], 2 * torch.ones(3, 4))

"""Expert deferral semantics: the lowest-ranked experts of MoE layer l are added after MoE layer
l+1; the last MoE layer runs everything now; no deferral = the immediate runner exactly; a
split is installed only for a block and the previous runner comes back."""

from __future__ import annotations

import pytest
import torch

from engine.errors import EngineError
from engine.experts.deferral import (
    DeferredExpertRunner,
    expert_split,
    make_runner,
    moe_layer_indices,
)
from engine.experts.runner import ImmediateExpertRunner, split_topk


def _ids(n: int = 24) -> torch.Tensor:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(3))


def _logits(model, ids):
    return model.forward(ids, model.new_cache(len(ids)), all_logits=True)


class Recorder:
    """Wraps a runner and records (layer, hidden, ids, weights, output) of every layer."""

    def __init__(self, inner):
        self.inner, self.calls, self._args = inner, [], {}

    def start_pass(self):
        self.inner.start_pass()

    def begin(self, layer_idx, hidden, ids, weights):
        self._args[layer_idx] = (hidden.clone(), ids.clone(), weights.clone())
        self.inner.begin(layer_idx, hidden, ids, weights)

    def finish(self, layer_idx):
        out = self.inner.finish(layer_idx)
        self.calls.append((layer_idx, *self._args.pop(layer_idx), out.clone()))
        return out


def test_no_deferral_is_the_immediate_runner(checkpoint, load_engine):
    model = load_engine(checkpoint("qwen2_nonorm"))
    ids = _ids()
    ref = _logits(model, ids)
    assert isinstance(make_runner(model, model.config.top_k), ImmediateExpertRunner)
    with expert_split(model, model.config.top_k, 0):
        assert torch.equal(_logits(model, ids), ref)


@pytest.mark.parametrize("case", ["qwen2_nonorm", "ds3_qlora_norm"])
def test_deferred_output_lands_one_moe_layer_later(checkpoint, load_engine, case):
    model = load_engine(checkpoint(case))
    k, c = model.config.top_k, model.config
    layers = moe_layer_indices(model)
    assert len(layers) >= 2
    backend = model.expert_backend
    rec = Recorder(DeferredExpertRunner(backend, 1, layers, c.hidden_size, k))
    before = model.expert_runner
    model.expert_runner = rec
    deferred_logits = _logits(model, _ids())
    model.expert_runner = before
    previous_later = None
    for layer_idx, hidden, ids, weights, out in rec.calls:
        now, later = split_topk(ids, 1)
        if layer_idx == layers[-1]:
            expected = backend.forward(layer_idx, hidden, ids, weights)  # nothing to defer to
        else:
            expected = backend.forward(layer_idx, hidden, now, weights)
        if previous_later is not None:
            expected = expected + previous_later
        torch.testing.assert_close(out, expected)
        previous_later = (
            None if layer_idx == layers[-1] else backend.forward(layer_idx, hidden, later, weights)
        )
    # Deferral changes the result (the deferred experts see an older hidden state) ...
    assert not torch.allclose(_logits(model, _ids()), deferred_logits)
    # ... and a second forward starts clean (no output leaks across forward passes).
    with expert_split(model, 1, k - 1):
        first, second = _logits(model, _ids()), _logits(model, _ids())
    assert torch.equal(first, second)
    torch.testing.assert_close(first, deferred_logits)


def test_last_moe_layer_never_defers(checkpoint, load_engine):
    model = load_engine(checkpoint("qwen2_nonorm"), num_layers=1)  # a one-MoE-layer slice
    assert moe_layer_indices(model) == [0]
    ref = _logits(model, _ids())
    assert isinstance(make_runner(model, 1, model.config.top_k - 1), DeferredExpertRunner)
    with expert_split(model, 1, model.config.top_k - 1):
        torch.testing.assert_close(_logits(model, _ids()), ref)


def test_split_is_scoped_and_restored_even_on_error(checkpoint, load_engine):
    model = load_engine(checkpoint("qwen2_nonorm"))
    k = model.config.top_k
    before = model.expert_runner
    with expert_split(model, 2, k - 2):
        assert isinstance(model.expert_runner, DeferredExpertRunner)
    assert model.expert_runner is before
    with pytest.raises(RuntimeError, match="boom"), expert_split(model, 2, k - 2):
        raise RuntimeError("boom")
    assert model.expert_runner is before


def test_bad_splits_are_refused(checkpoint, load_engine):
    model = load_engine(checkpoint("qwen2_nonorm"))
    k = model.config.top_k
    for immediate, deferred in ((0, k), (k + 1, 0), (-1, k + 1), (k - 1, 0), (1, k)):
        with pytest.raises(EngineError, match="top-k"):
            make_runner(model, immediate, deferred)

"""The one sampler and the one stop-string cut every system uses (engine.runtime.sampling,
engine.stops)."""

from __future__ import annotations

import pytest
import torch

from engine.runtime import Sampler
from engine.stops import cut_at_stop, find_stop


def test_sampler_rules():
    logits = torch.tensor([0.0, 5.0, 4.9, -1.0])
    assert Sampler()(logits) == 1
    nucleus = Sampler(temperature=1.0, top_p=1e-6, seed=0)
    assert {nucleus(logits) for _ in range(20)} == {1}
    wide = Sampler(temperature=1.0, top_p=0.9, seed=0)
    assert {wide(logits) for _ in range(200)} == {1, 2}
    first = [Sampler(temperature=1.0, top_p=0.9, seed=7)(logits) for _ in range(3)]
    assert len(set(first)) == 1
    with pytest.raises(ValueError, match="top_p"):
        Sampler(temperature=1.0, top_p=0.0)


def test_stops():
    assert cut_at_stop("a\n\nb END c", ("END", "\n\n")) == "a"
    assert find_stop("a\n\nb END c", ("END", "\n\n")) == 1
    assert cut_at_stop("abc", ("x", "")) == "abc" and find_stop("abc", ("x", "")) == -1
    assert cut_at_stop("abc", ()) == "abc"

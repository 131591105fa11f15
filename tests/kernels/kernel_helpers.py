"""Shared helpers of the kernel tests: the float64 reference and call builders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine import kernels
from engine.quant.int4 import dequantize_int4, quantize_int4
from engine.quant.int8 import dequantize_int8, quantize_int8

needs_ext = pytest.mark.skipif(
    not kernels.available(), reason=f"kernel extension unavailable: {kernels.build_error()}"
)

# (precision, group size): every stored format
FORMATS = [("bf16", 32), ("int8", 32), ("int4", 32), ("int4", 64)]


def skip_unless_method(method: str, precision: str, int8_w8a8: bool = False) -> None:
    """Skip naming the missing ISA when ``method`` cannot run ``precision`` here."""
    if not kernels.available():
        pytest.skip(f"kernel extension unavailable: {kernels.build_error()}")
    missing = kernels.missing_for(method, precision, int8_w8a8)
    if missing:
        pytest.skip(f"{method} {precision} needs {missing} (not on this CPU)")


def dequant(w: torch.Tensor, precision: str, group: int) -> torch.Tensor:
    """The float64 ``[N, K]`` weights the kernels compute with (engine/quant rules)."""
    w = w.to(torch.bfloat16)
    if precision == "bf16":
        return w.double()
    if precision == "int8":
        return dequantize_int8(*quantize_int8(w)).double()
    return dequantize_int4(*quantize_int4(w, group), group).double()


def reference(
    gate_up: torch.Tensor,
    down: torch.Tensor,
    x: torch.Tensor,
    ids: torch.Tensor,
    w: torch.Tensor,
    precision: str,
    group: int,
) -> torch.Tensor:
    """float64 ``sum_j w[t,j] * down_e(silu(gate_e x) * up_e x)`` from dequantized weights."""
    e, two_i, h = gate_up.shape
    i = two_i // 2
    g = dequant(gate_up.reshape(-1, h), precision, group).reshape(e, two_i, h)
    d = dequant(down.reshape(-1, i), precision, group).reshape(e, h, i)
    xs = x.double()
    out = torch.zeros(x.shape[0], h, dtype=torch.float64)
    for ex in ids[ids >= 0].unique().tolist():
        t, j = (ids == ex).nonzero(as_tuple=True)
        hh = xs[t] @ g[ex].T
        a = F.silu(hh[:, :i]) * hh[:, i:]
        out.index_add_(0, t, (a @ d[ex].T) * w[t, j].double()[:, None])
    return out


def check_close(out: torch.Tensor, ref: torch.Tensor, tol: float = 1e-2) -> float:
    """Relative error ||out - ref|| / ||ref|| <= tol, and per element within atol + rtol|ref|."""
    assert torch.isfinite(out.float()).all(), "non-finite output"
    o = out.double()
    den = ref.norm().item()
    rel = (o - ref).norm().item() / (den if den > 0 else 1.0)
    assert rel <= tol, f"relative error {rel:.3g} > {tol}"
    atol = 2 * tol * ref.abs().max().item()
    bad = ((o - ref).abs() > atol + 2 * tol * ref.abs()).sum().item()
    assert bad == 0, f"{bad} elements outside atol {atol:.3g} + rtol {2 * tol}"
    return rel


def make_weights(e: int, h: int, i: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    gate_up = (torch.randn(e, 2 * i, h, generator=gen) / h**0.5).to(torch.bfloat16)
    down = (torch.randn(e, h, i, generator=gen) / i**0.5).to(torch.bfloat16)
    return gate_up, down


def make_call(
    t: int, k: int, e: int, h: int, seed: int = 0, ids_dtype: torch.dtype = torch.int32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden, ids (distinct per token, never the last expert) and weights for one call."""
    gen = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(t, h, generator=gen).to(torch.bfloat16)
    scores = torch.rand(t, e - 1, generator=gen)
    ids = scores.topk(k, dim=1).indices.to(ids_dtype).contiguous()
    w = torch.rand(t, k, generator=gen).contiguous()
    return x, ids, w

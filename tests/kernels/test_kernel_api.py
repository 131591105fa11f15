"""Engine API: quantizers, async submit/sync, slots through C function pointers, errors, the
KernelExpertBackend contract and the feature report."""

from __future__ import annotations

import ctypes

import pytest
import torch
from kernel_helpers import check_close, make_call, make_weights, needs_ext, reference

from engine import kernels
from engine.errors import EngineError
from engine.experts.backend import StackedExperts
from engine.quant.int4 import quantize_int4
from engine.quant.int8 import quantize_int8

pytestmark = needs_ext

E, H, I = 8, 256, 128  # noqa: E741 - experts, hidden, intermediate


def _method() -> str:
    return "avx512" if not kernels.missing_for("avx512", "int4") else "portable"


def _bf16_rows(n: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=gen) * torch.rand(n, 1, generator=gen) * 3).to(torch.bfloat16)
    w[0] = 0  # all-zero row: scale 1
    w[1, :] = torch.tensor(
        [127.0, 2.5, 3.5, -2.5, -0.5, 0.5, 1.5, 126.5] * (k // 8), dtype=torch.bfloat16
    )  # scale exactly 1: ties round half to even
    w[2, : k // 2] = 0  # a zero int4 group
    return w


def test_feature_report() -> None:
    feats = kernels.cpu_features()
    for name in (
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_bf16",
        "avx512_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "amx_os_permitted",
    ):
        assert isinstance(feats[name], bool)
    assert kernels.build_error() is None
    assert kernels.cpu_model()
    assert kernels.stale_build() is None, kernels.stale_build()


@pytest.mark.parametrize("k", [64, 192])
def test_cpp_quantizers_bit_identical(k: int) -> None:
    from engine import _hmoe_cpu as ext

    w = _bf16_rows(37, k, seed=k)
    q, s = quantize_int8(w)
    q2, s2 = torch.empty_like(q), torch.empty_like(s)
    ext.quantize_int8(w.data_ptr(), w.shape[0], k, q2.data_ptr(), s2.data_ptr())
    assert torch.equal(q, q2) and torch.equal(s, s2)
    for g in (32, 64):
        p, sc = quantize_int4(w, g)
        p2, sc2 = torch.empty_like(p), torch.empty_like(sc)
        ext.quantize_int4(w.data_ptr(), w.shape[0], k, g, p2.data_ptr(), sc2.data_ptr())
        assert torch.equal(p, p2) and torch.equal(sc, sc2), g


@pytest.mark.parametrize("precision,group", [("int8", 32), ("int4", 32), ("int4", 64)])
def test_prequantized_equals_bf16_source(precision: str, group: int) -> None:
    gate_up, down = make_weights(E, H, I, seed=1)
    eng = kernels.MoEEngine(threads=2, method=_method())
    eng.add_layer(0, precision, gate_up, down, group)
    if precision == "int8":
        gq, gs = quantize_int8(gate_up.reshape(-1, H))
        dq, ds = quantize_int8(down.reshape(-1, I))
        gq, gs = gq.reshape(E, 2 * I, H), gs.reshape(E, 2 * I)
        dq, ds = dq.reshape(E, H, I), ds.reshape(E, H)
    else:
        gq, gs = quantize_int4(gate_up.reshape(-1, H), group)
        dq, ds = quantize_int4(down.reshape(-1, I), group)
        gq, gs = gq.reshape(E, 2 * I, H // 2), gs.reshape(E, 2 * I, H // group)
        dq, ds = dq.reshape(E, H, I // 2), ds.reshape(E, H, I // group)
    eng.add_layer_quantized(1, precision, gq, gs, dq, ds, group)
    assert eng.packed_bytes(0) == eng.packed_bytes(1)
    x, ids, w = make_call(9, 3, E, H)
    assert torch.equal(eng.forward(0, x, ids, w), eng.forward(1, x, ids, w))


def test_async_submits_then_one_sync() -> None:
    gate_up, down = make_weights(E, H, I, seed=2)
    eng = kernels.MoEEngine(threads=2, method=_method(), scheduler="dynamic")
    eng.add_layer(0, "bf16", gate_up, down)
    eng.add_layer(1, "bf16", gate_up.flip(0).contiguous(), down.flip(0).contiguous())
    calls = [make_call(t, 2, E, H, seed=t) for t in (1, 5, 20, 64)]
    sync_outs = [eng.forward(n % 2, *c) for n, c in enumerate(calls)]
    outs = [torch.full_like(c[0], float("nan")) for c in calls]
    tickets = [eng.submit(n % 2, *c, outs[n]) for n, c in enumerate(calls)]
    assert tickets == sorted(tickets)
    eng.sync()
    for a, b in zip(outs, sync_outs, strict=True):
        assert torch.equal(a, b)
    # sync of one ticket waits for it (and those before it)
    outs2 = [torch.full_like(c[0], float("nan")) for c in calls]
    tickets = [eng.submit(n % 2, *c, outs2[n]) for n, c in enumerate(calls)]
    eng.sync(tickets[1])
    assert torch.equal(outs2[0], sync_outs[0]) and torch.equal(outs2[1], sync_outs[1])
    eng.sync(tickets[-1])
    stats = eng.stats()
    assert stats["forwards"] >= 12 and stats["busy_ns"] > 0 and stats["wall_ns"] > 0
    assert 0.0 < stats["utilization"] <= 1.5


def test_slot_through_c_function_pointers() -> None:
    from engine import _hmoe_cpu as ext

    gate_up, down = make_weights(E, H, I, seed=6)
    eng = kernels.MoEEngine(threads=2, method=_method())
    eng.add_layer(0, "int8", gate_up, down)
    max_t, k = 16, 3
    x, ids, w = make_call(max_t, k, E, H, seed=11)
    out = torch.full_like(x, float("nan"))
    tokens = torch.zeros(1, dtype=torch.int32)
    slot = eng.make_slot(0, k, x, ids, w, out, tokens)
    fn_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    submit = fn_type(ext.slot_submit_addr)
    sync = fn_type(ext.slot_sync_addr)
    assert slot.submit_fn == ext.slot_submit_addr and slot.sync_fn == ext.slot_sync_addr
    tokens[0] = 7  # read when the task starts
    submit(slot.address)
    sync(slot.address)
    assert slot.take_error() is None
    want = eng.forward(0, x[:7].contiguous(), ids[:7].contiguous(), w[:7].contiguous())
    assert torch.equal(out[:7], want)
    assert torch.isnan(out[7:].float()).all(), "rows past the token count are untouched"
    tokens[0] = max_t
    slot.submit()
    slot.sync()
    assert torch.equal(out, eng.forward(0, x, ids, w))
    tokens[0] = max_t + 1  # more than the buffers hold: reported, nothing written
    submit(slot.address)
    sync(slot.address)
    assert "outside" in (slot.take_error() or "")


def test_bad_ids_and_shapes_raise() -> None:
    gate_up, down = make_weights(E, H, I, seed=7)
    eng = kernels.MoEEngine(threads=2, method="portable")
    eng.add_layer(0, "bf16", gate_up, down)
    x, ids, w = make_call(4, 2, E, H)
    bad = ids.clone()
    bad[2, 1] = E
    with pytest.raises(EngineError, match=r"expert id 8 at \[2, 1\] is outside \[0, 8\)"):
        eng.forward(0, x, bad, w)
    bad[2, 1] = -3
    with pytest.raises(EngineError, match="outside"):
        eng.forward(0, x, bad, w)
    ticket = eng.submit(0, x, bad, w, torch.empty_like(x))  # async: reported at sync
    with pytest.raises(EngineError, match="outside"):
        eng.sync(ticket)
    eng.forward(0, x, ids, w)  # the engine keeps working
    with pytest.raises(EngineError, match="no layer"):
        eng.forward(5, x, ids, w)
    with pytest.raises(EngineError):
        eng.forward(0, x.float(), ids, w)
    with pytest.raises(EngineError):
        eng.forward(0, x, ids, w[:, :1].contiguous())


def test_missing_method_names_the_isa() -> None:
    if not kernels.missing_for("amx", "bf16"):
        pytest.skip("this CPU has AMX: nothing is missing")
    with pytest.raises(EngineError, match="amx"):
        kernels.MoEEngine(threads=1, method="amx")


# ---- the ExpertBackend contract ----


@pytest.mark.parametrize("precision", ["bf16", "int8", "int4"])
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
def test_kernel_backend_contract(precision: str, ids_dtype: torch.dtype) -> None:
    from engine.experts.kernel_backend import KernelExpertBackend

    gate_up, down = make_weights(E, H, I, seed=8)
    be = KernelExpertBackend(precision=precision, threads=2, scheduler="dynamic")
    be.prepare(0, StackedExperts(gate_up.float(), down.float()))  # any float dtype in
    assert be.num_experts(0) == E
    x, ids, w = make_call(21, 4, E, H, seed=3, ids_dtype=ids_dtype)
    ref = reference(gate_up, down, x, ids, w, precision, 32)
    out = be.forward(0, x, ids, w)
    check_close(out, ref)
    # submit returns at once; sync(ticket) and sync(None)
    outs = [torch.full_like(x, float("nan")) for _ in range(3)]
    tickets = [be.submit(0, x, ids, w, o) for o in outs]
    be.sync(tickets[0])
    be.sync()
    for o in outs:
        assert torch.equal(o, out)
    # float32 hidden/out are converted by the adapter
    out32 = torch.empty(x.shape, dtype=torch.float32)
    be.sync(be.submit(0, x.float(), ids, w, out32))
    assert torch.equal(out32, out.float())
    info = be.describe()
    for key in (
        "expert_backend",
        "expert_precision",
        "kernel_method_decode",
        "kernel_method_prefill",
        "kernel_isa",
        "kernel_threads",
        "kernel_numa_nodes",
        "kernel_numa_simulated",
        "kernel_scheduler",
        "expert_bytes",
    ):
        assert key in info, key
    assert info["expert_backend"] == "kernel" and info["expert_precision"] == precision
    assert info["expert_bytes"] > 0
    assert be.cpu_stats()["forwards"] >= 5
    be.close()


def test_kernel_backend_rejects_bad_options() -> None:
    from engine.experts.kernel_backend import KernelExpertBackend

    with pytest.raises(EngineError):
        KernelExpertBackend(precision="fp8")
    with pytest.raises(EngineError):
        KernelExpertBackend(precision="int4", group_size=16)
    with pytest.raises(EngineError):
        KernelExpertBackend(scheduler="lifo")
    with pytest.raises(EngineError):
        KernelExpertBackend(threads=1, numa_nodes=2)

"""The hybrid runtime: static decode steps (eager and CUDA Graph), stream-ordered CPU experts
with deferral, against the engine's reference path. CPU parts run everywhere; the GPU parts
(host functions, graphs) skip without a CUDA GPU and the C++ kernels."""

from __future__ import annotations

import pytest
import torch

from engine.api import EngineOptions, HybridEngine
from engine.errors import EngineUnavailable
from engine.experts.deferral import DeferredExpertRunner, expert_split, make_runner
from engine.runtime import Sampler, generate_ids
from engine.runtime.static_decode import StaticDecoder

CASES = ["qwen2_norm", "ds3_qlora_norm", "ds2_qnull_group_yarn"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _kernels_built() -> bool:
    try:
        from engine import kernels
    except ImportError:
        return False
    return kernels.available()


needs_kernels = pytest.mark.skipif(not _kernels_built(), reason="the C++ kernels are not built")


def _prompt(n: int = 20, seed: int = 5) -> list[int]:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("max_seq", [64, 1024])
@pytest.mark.parametrize("case", CASES)
def test_static_step_equals_the_dynamic_step_on_cpu(checkpoint, load_engine, case, max_seq):
    """decode_at (fixed shapes, device positions, a masked window of the cache: all of a
    64-token cache, the first 256 positions of a 1024-token one) gives the same greedy
    tokens as the ordinary decode step, for GQA and MLA attention."""
    model = load_engine(checkpoint(case))
    prompt = _prompt()
    expected = generate_ids(model, prompt, 13, model.new_cache(64), Sampler(), chunk_size=64)
    cache = model.new_cache(max_seq)
    cache.reserve(len(prompt) + 12)
    logits = model.forward(torch.tensor(prompt), cache)
    first = int(logits.argmax())
    decoder = StaticDecoder(model, cache, use_graph=False)
    got = decoder.greedy(first, 12).tolist()
    assert [first, *got] == expected
    assert decoder.window == min(max_seq, 256)
    assert cache.length == len(prompt) + 12


def test_graph_decode_needs_a_gpu(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(EngineUnavailable, match="CUDA Graph"):
        HybridEngine.load(checkpoint("qwen2_norm"), EngineOptions(device="cpu", cuda_graph=True))


def _engine(path, **options) -> HybridEngine:
    base = {"device": "cuda", "dtype": "bfloat16", "max_seq": 256, "prefill_chunk": 64}
    return HybridEngine.load(path, EngineOptions(**{**base, **options}))


def _greedy(eng: HybridEngine, prompt: list[int], n: int, split=(None, 0)) -> list[int]:
    with eng.expert_split(*split):
        first = int(eng.prefill(prompt, reserve=n).argmax())
        out = eng.decode_greedy(first, n).tolist()
        eng.synchronize()
    eng.cache.reset()
    return [first, *out]


@needs_gpu
@needs_kernels
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_hybrid_matches_the_reference_path(checkpoint, case):
    """Kernels + stream host functions vs the PyTorch reference experts (same bf16 weights):
    prefill logits within bf16 tolerance."""
    path = checkpoint(case)
    ref = _engine(path, cpu_kernel="reference")
    hyb = _engine(path, cpu_kernel="auto")
    from engine.experts.stream_runner import StreamExpertRunner

    assert isinstance(hyb.model.expert_runner, StreamExpertRunner)
    prompt = _prompt(40)
    a = ref.prefill(prompt)
    b = hyb.prefill(prompt)
    hyb.synchronize()
    scale = a.abs().max()
    assert (a - b).abs().max() <= 0.05 * scale
    ref.close(), hyb.close()


@needs_gpu
@needs_kernels
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_graph_tokens_equal_eager_tokens_and_survive_a_new_prompt_length(checkpoint, case):
    path = checkpoint(case)
    eager = _engine(path, cpu_kernel="auto", cuda_graph=False)
    graph = _engine(path, cpu_kernel="auto", cuda_graph=True)
    for n_prompt in (20, 7, 33):  # a replay after a prompt of another length still matches
        prompt = _prompt(n_prompt, seed=n_prompt)
        assert _greedy(graph, prompt, 64) == _greedy(eager, prompt, 64)
    assert graph._static is not None and graph._static.captures == 1
    eager.close(), graph.close()


@needs_gpu
@needs_kernels
@pytest.mark.gpu
def test_k_plus_0_is_bit_identical_to_no_deferral(checkpoint):
    eng = _engine(checkpoint("qwen2_norm"), cpu_kernel="auto", cuda_graph=True)
    k = eng.config.top_k
    prompt = _prompt(24)
    plain = eng.prefill(prompt).clone()
    with eng.expert_split(k, 0):
        same = eng.prefill(prompt)
    assert torch.equal(plain, same)
    assert _greedy(eng, prompt, 32) == _greedy(eng, prompt, 32, (k, 0))
    eng.close()


@needs_gpu
@needs_kernels
@pytest.mark.gpu
@pytest.mark.parametrize("case", ["qwen2_nonorm", "ds3_qlora_norm"])
def test_deferral_on_the_stream_equals_the_explicit_reference(checkpoint, case):
    """k'+d' through stream host functions (deferred slots synced one MoE layer later)
    equals the synchronous reference runner that adds layer l's deferred output after layer
    l+1's MoE (bf16 tolerance); the last layer defers nothing."""
    path = checkpoint(case)
    hyb = _engine(path, cpu_kernel="auto")
    ref = _engine(path, cpu_kernel="reference")
    k = hyb.config.top_k
    prompt = _prompt(30)
    with hyb.expert_split(1, k - 1):
        b = hyb.prefill(prompt)
        hyb.synchronize()
    assert isinstance(make_runner(ref.model, 1, k - 1), DeferredExpertRunner)
    with expert_split(ref.model, 1, k - 1):
        a = ref.prefill(prompt)
    assert (a - b).abs().max() <= 0.05 * a.abs().max()
    plain = ref.prefill(prompt)
    assert (plain - a).abs().max() > 0  # deferral did change something
    hyb.close(), ref.close()

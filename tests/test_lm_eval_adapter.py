"""The lm-eval backend ``hmoe``: registry, generate_until -> System.generate with the request's
stops/budget/sampling and the expert split, loglikelihood -> System.loglikelihood (equal to a
manual logsumexp over the model's logits), and the systems' refusals of deferral."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from engine.errors import EngineError  # noqa: E402
from engine.synthetic import SyntheticRequest, ensure_synthetic_model  # noqa: E402
from experiments.engine_system import EngineSystem  # noqa: E402
from experiments.errors import HmoeError  # noqa: E402
from experiments.lm_eval_adapter import HmoeLM, sample_seed  # noqa: E402
from experiments.system_api import (  # noqa: E402
    ModelSpec,
    Sampling,
    SystemUnavailable,
    encode_pair,
)

# One torch thread: on a shared 2-core machine, 2 OpenMP threads can be 100x slower.
ENGINE_CFG = {
    "device": "cpu",
    "dtype": "float32",
    "max_seq": 2048,
    "prefill_chunk": 5,
    "threads": 1,
}


def tiny_spec(path: Path) -> ModelSpec:
    return ModelSpec(
        key="tiny_qwen2_moe",
        paper_model="qw2",
        name="tiny Qwen2-MoE",
        architecture="qwen2_moe",
        path=path,
        source="synthetic-tiny",
        synthetic=True,
        layers_run=0,
        layers_total=4,
    )


@pytest.fixture(scope="module")
def tiny_dir(model_cache) -> Path:
    return ensure_synthetic_model(SyntheticRequest("qwen2_moe", "tiny"), model_cache, False)


@pytest.fixture(scope="module")
def engine(tiny_dir):
    threads = torch.get_num_threads()
    system = EngineSystem(ENGINE_CFG)
    system.load(tiny_spec(tiny_dir), "fp32")
    yield system
    system.close()
    torch.set_num_threads(threads)


def assert_scores_close(got, want, tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for (lp, greedy), (lp_ref, greedy_ref) in zip(got, want, strict=True):
        assert lp == pytest.approx(lp_ref, rel=tol, abs=tol) and greedy == greedy_ref


def request(kind: str, args: tuple, doc_id: int = 0) -> Instance:
    return Instance(kind, doc={}, arguments=args, idx=0, metadata=("t", doc_id, 1))


def manual_loglikelihood(system: EngineSystem, context: str, cont: str) -> tuple[float, bool]:
    """One full forward over context+continuation tokens; sum of logit - logsumexp(logits)."""
    tok = system.engine.tokenizer
    ctx_ids = tok.encode(context).ids
    cont_ids = tok.encode(context + cont).ids[len(ctx_ids) :]
    assert cont_ids, "continuation must add tokens"
    cache = system.model.new_cache(len(ctx_ids) + len(cont_ids))
    ids = torch.tensor(ctx_ids + cont_ids)
    logits = system.model.forward(ids, cache, all_logits=True).double()
    total, greedy = 0.0, True
    for i, token in enumerate(cont_ids):
        row = logits[len(ctx_ids) - 1 + i]
        total += float(row[token] - torch.logsumexp(row, dim=-1))
        greedy &= int(row.argmax()) == token
    return total, greedy


def test_registered_under_hmoe():
    assert get_model("hmoe") is HmoeLM


def test_loglikelihood_equals_manual_logsumexp(engine):
    tok = engine.engine.tokenizer
    context = "Question: which planet is the largest?\nAnswer:"
    # A continuation that is the model's greedy next token (its text re-encodes to it).
    cache = engine.model.new_cache(64)
    ids = tok.encode(context).ids
    best = int(engine.model.forward(torch.tensor(ids), cache).argmax())
    greedy_text = tok.decode([best])
    assert tok.encode(context + greedy_text).ids[len(ids) :] == [best]
    continuations = [" Jupiter", " the one with the red spot", greedy_text, " A"]
    lm = HmoeLM(engine)
    got = lm.loglikelihood([request("loglikelihood", (context, c)) for c in continuations])
    assert_scores_close(got, [manual_loglikelihood(engine, context, c) for c in continuations])
    assert all(lp < 0 for lp, _ in got)
    assert got[2][1] is True and got[1][1] is False
    # Trailing whitespace of the context moves into the continuation (lm-eval's convention).
    spaced = engine.loglikelihood(context + " ", ["Jupiter"])[0]
    assert spaced[0] == pytest.approx(got[0][0], rel=1e-6)


def test_encode_pair_follows_lm_eval():
    def words(text: str) -> list[int]:  # one id per character, "ab" merged into one token
        return [ord(c) for c in text.replace("ab", "\x01")]

    # The continuation's ids are the whole text's ids after the context's (lm-eval's split).
    assert encode_pair(words, "xy", "ab") == ([ord("x"), ord("y")], [1])
    assert encode_pair(words, "xa", "bc") == ([ord("x"), ord("a")], [ord("c")])
    assert encode_pair(words, "q ", "z") == ([ord("q")], [ord(" "), ord("z")])
    assert encode_pair(words, "", "hi", prefix_id=0) == ([0], [ord("h"), ord("i")])
    assert encode_pair(words, "  ", "hi", prefix_id=0) == ([0], [32, 32, ord("h"), ord("i")])
    with pytest.raises(ValueError, match="prefix"):
        encode_pair(words, "", "hi")


def test_empty_context_is_scored_after_an_end_of_text_token(engine):
    ((lp, _),) = engine.loglikelihood("", [" hello"])
    eos = engine.engine.eos_ids[0]
    ids = engine.engine.tokenizer.encode(" hello").ids
    cache = engine.model.new_cache(len(ids) + 1)
    logits = engine.model.forward(torch.tensor([eos, *ids]), cache, all_logits=True).double()
    want = sum(float(torch.log_softmax(logits[i], -1)[t]) for i, t in enumerate(ids))
    assert lp == pytest.approx(want, rel=1e-5)


def test_loglikelihood_after_other_work_is_unchanged(engine):
    """The context cache is rewound between continuations and reset afterwards."""
    context, conts = "def add(a, b):\n    return", [" a + b", " b", " a - b  # no"]
    first = engine.loglikelihood(context, conts)
    engine.generate("something else entirely", Sampling(max_new_tokens=5))
    again = engine.loglikelihood(context, list(reversed(conts)))
    assert_scores_close(list(reversed(again)), first)


@dataclass
class RecordingSystem:
    """A System double that records what the adapter asks for."""

    name: str = "recording"
    generated: list[tuple[str, Sampling]] = field(default_factory=list)
    scored: list[tuple[str, list[str], int | None, int]] = field(default_factory=list)

    def generate(self, text: str, sampling: Sampling) -> str:
        self.generated.append((text, sampling))
        return f"out{len(self.generated)}"

    def loglikelihood(self, context, continuations, immediate_experts=None, deferred_experts=0):
        self.scored.append((context, list(continuations), immediate_experts, deferred_experts))
        return [(-float(len(c)), i == 0) for i, c in enumerate(continuations)]


def test_generate_until_maps_request_to_sampling():
    system = RecordingSystem()
    lm = HmoeLM(system, immediate_experts=4, deferred_experts=4, seed=7, max_new_tokens_cap=16)
    greedy = request("generate_until", ("p1", {"until": ["[DONE]", "\n\n"], "max_gen_toks": 512}))
    single = request("generate_until", ("p2", {"until": "STOP", "max_gen_toks": 8}), doc_id=3)
    sampled = request(
        "generate_until", ("p3", {"do_sample": True, "temperature": 0.3, "until": []}), doc_id=5
    )
    off = request("generate_until", ("p4", {"do_sample": False, "temperature": 0.8}))
    out = lm.generate_until([greedy, single, sampled, sampled, off])
    assert out == ["out1", "out2", "out3", "out4", "out5"]
    s = [sampling for _, sampling in system.generated]
    assert [t for t, _ in system.generated] == ["p1", "p2", "p3", "p3", "p4"]
    assert s[0].stop == ("[DONE]", "\n\n") and s[0].max_new_tokens == 16  # capped
    assert s[1].stop == ("STOP",) and s[1].max_new_tokens == 8
    assert s[0].temperature == 0.0 and s[3].temperature == 0.3 and s[4].temperature == 0.0
    assert s[2].max_new_tokens == 16  # no max_gen_toks: the default (256), capped
    # Two samples of one problem: distinct, reproducible seeds.
    assert s[2].seed == sample_seed(7, 5, 0) and s[3].seed == sample_seed(7, 5, 1)
    assert s[2].seed != s[3].seed
    assert all(x.immediate_experts == 4 and x.deferred_experts == 4 for x in s)


def test_generate_until_rejects_unknown_generation_kwargs():
    lm = HmoeLM(RecordingSystem())
    with pytest.raises(HmoeError, match="top_k"):
        lm.generate_until([request("generate_until", ("p", {"top_k": 5}))])


def test_loglikelihood_groups_requests_by_context():
    system = RecordingSystem()
    lm = HmoeLM(system, immediate_experts=2, deferred_experts=6)
    reqs = [request("loglikelihood", (ctx, c)) for ctx in ("q1", "q2") for c in (" A", " BB")]
    reqs.insert(1, request("loglikelihood", ("q2", " CCC")))
    got = lm.loglikelihood(reqs)
    assert system.scored == [("q1", [" A", " BB"], 2, 6), ("q2", [" CCC", " A", " BB"], 2, 6)]
    assert got == [(-2.0, True), (-4.0, True), (-3.0, False), (-2.0, False), (-3.0, False)]


def test_loglikelihood_rolling_is_refused_clearly():
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        HmoeLM(RecordingSystem()).loglikelihood_rolling([])


def test_built_from_lm_eval_model_args(tiny_dir, engine):
    lm = get_model("hmoe").create_from_arg_string(
        f"system=engine,model_path={tiny_dir},precision=fp32,device=cpu,dtype=float32,"
        "max_seq=512,threads=1,deferred_experts=0"
    )
    try:
        assert isinstance(lm.system, EngineSystem) and lm.deferred_experts == 0
        ctx, conts = "Hello there", [" world", " friend"]
        assert_scores_close(lm.system.loglikelihood(ctx, conts), engine.loglikelihood(ctx, conts))
    finally:
        lm.system.close()
    with pytest.raises(HmoeError, match="unknown system"):
        HmoeLM("nosuch", model_path=str(tiny_dir))


def test_engine_routes_the_expert_split(engine):
    top_k = engine.model.config.top_k
    plain = engine.generate("abc", Sampling(max_new_tokens=6))
    assert engine.generate("abc", Sampling(max_new_tokens=6, immediate_experts=top_k)) == plain
    with pytest.raises(EngineError, match="must equal"):
        engine.generate("abc", Sampling(max_new_tokens=2, immediate_experts=3, deferred_experts=3))
    ctx, conts = "def f(x):\n    return", [" x * 2", " None"]
    full = engine.loglikelihood(ctx, conts)
    half = {"immediate_experts": top_k // 2, "deferred_experts": top_k - top_k // 2}
    deferred = engine.loglikelihood(ctx, conts, **half)
    assert abs(deferred[0][0] - full[0][0]) > 1e-6  # deferral changes the computation
    lm = HmoeLM(engine, **half)
    assert lm.loglikelihood([request("loglikelihood", (ctx, c)) for c in conts]) == deferred
    assert isinstance(engine.generate("abc", Sampling(max_new_tokens=3, **half)), str)
    # The previous runner is back in place after a split or a refused split.
    assert engine.generate("abc", Sampling(max_new_tokens=6)) == plain
    assert_scores_close(engine.loglikelihood(ctx, conts), full)


def test_fiddler_refuses_deferral_and_scores_like_the_engine(tiny_dir, engine):
    from baselines.fiddler import FiddlerSystem

    fiddler = FiddlerSystem({"device": "cpu", "threads": 1})
    fiddler.load(tiny_spec(tiny_dir), "fp32")
    try:
        top_k = fiddler._model.config.num_experts_per_tok
        with pytest.raises(SystemUnavailable, match="deferral"):
            fiddler.generate("abc", Sampling(max_new_tokens=2, deferred_experts=2))
        with pytest.raises(SystemUnavailable, match="deferral"):
            fiddler.loglikelihood("abc", [" d"], immediate_experts=top_k - 2, deferred_experts=2)
        with pytest.raises(SystemUnavailable, match="top-"):
            fiddler.loglikelihood("abc", [" d"], immediate_experts=top_k - 1)
        ctx, conts = "The answer is", [" 42", " yes", " no, it is not"]
        got = HmoeLM(fiddler).loglikelihood([request("loglikelihood", (ctx, c)) for c in conts])
        assert_scores_close(got, engine.loglikelihood(ctx, conts), tol=1e-3)
    finally:
        fiddler.close()


def test_hmoe_lm_eval_runs_lm_evals_cli_with_the_hmoe_model(hmoe, tiny_dir, tmp_path):
    """lm-eval users' habit: `hmoe lm-eval --model hmoe ...` registers the model and the
    task folder, so lm-eval's own CLI runs a project task on a tiny model."""
    from experiments.accuracy_tasks import resolve_data_dir

    data = resolve_data_dir(None)
    if data is None:
        pytest.skip("needs the evaluation data (HMOE_DATA_DIR)")
    args = f"system=engine,model_path={tiny_dir},dtype=float32,threads=1,max_new_tokens_cap=8"
    proc = hmoe(
        "lm-eval",
        "--model",
        "hmoe",
        "--model_args",
        args,
        "--device",
        "cpu",
        "--tasks",
        "hmoe_strategy_qa",
        "--limit",
        "2",
        "--output_path",
        str(tmp_path / "out"),
        env={"HMOE_DATA_DIR": str(data)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hmoe_strategy_qa" in proc.stdout and "score" in proc.stdout
    assert list((tmp_path / "out").rglob("results_*.json"))
    bad = hmoe(
        "lm-eval", "--model", "hmoe", "--model_args", "system=nope,model_path=x",
        "--tasks", "hmoe_strategy_qa", env={"HMOE_DATA_DIR": str(data)},
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown system 'nope'" in bad.stdout + bad.stderr

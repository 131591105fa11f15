"""EngineSystem as the harness sees it: load, prefill, decode, generate with stops and seeds,
describe, close, and the clear refusals (deferral, unknown precision)."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import VOCAB
from tokenizers import Tokenizer, models, pre_tokenizers

from engine.errors import EngineError
from engine.runtime import Sampler, generate_ids
from engine.stops import cut_at_stop
from experiments.engine_system import EngineSystem
from experiments.system_api import ModelSpec, Sampling, System, SystemUnavailable

CFG = {"device": "cpu", "dtype": "float32", "prefill_chunk": 7, "max_seq": 96, "threads": None}


@pytest.fixture(scope="module")
def model_dir(checkpoint, tmp_path_factory):
    """A tiny DeepSeek-V3 checkpoint with a word-level tokenizer.json (words w0..w255)."""
    path = tmp_path_factory.mktemp("system") / "ds3"
    shutil.copytree(checkpoint("ds3_qlora_norm"), path)
    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path / "tokenizer.json"))
    return path


def spec(path, layers_run: int = 3) -> ModelSpec:
    return ModelSpec(
        key="tiny-ds3",
        paper_model="ds3",
        name="tiny DeepSeek-V3",
        architecture="deepseek_v3",
        path=path,
        source="test",
        synthetic=True,
        layers_run=layers_run,
        layers_total=3,
    )


@pytest.fixture
def system(model_dir):
    engine = EngineSystem(CFG)
    engine.load(spec(model_dir), "fp32")
    yield engine
    engine.close()


def test_is_a_system_and_describes_itself(system):
    assert isinstance(system, System) and system.name == "engine"
    info = system.describe()
    assert info["device"] == "cpu" and info["expert_device"] == "cpu"
    assert info["expert_backend"] == "reference" and info["precision"] == "fp32"
    assert info["prefill_chunk"] == 7 and info["max_seq"] == 96 and info["layers_loaded"] == 3
    assert info["threads"] >= 1 and info["dtype"] == "float32"


def test_prefill_and_decode(system):
    prompt = list(range(10, 30))
    timing = system.prefill(prompt)
    assert timing.tokens == 20 and timing.seconds > 0
    run = system.decode(prompt, 8)
    assert run.prompt_tokens == 20 and run.decode_tokens == 8 and len(run.token_ids) == 8
    assert run.prefill_seconds > 0 and run.decode_seconds > 0
    model = system.model
    expected = generate_ids(model, prompt, 9, model.new_cache(32), Sampler(), chunk_size=64)
    assert list(run.token_ids) == expected[:8]
    assert system.decode(prompt, 8).token_ids == run.token_ids  # the cache was reset


def test_decode_with_expert_deferral(system):
    k = system.model.config.top_k
    prompt = list(range(10, 30))
    plain = system.decode(prompt, 8)
    deferred = system.decode(prompt, 8, immediate_experts=1, deferred_experts=k - 1)
    assert deferred.decode_tokens == 8 and deferred.decode_seconds > 0
    assert system.decode(prompt, 8, immediate_experts=k).token_ids == plain.token_ids


def test_refusals(system, model_dir):
    k = system.model.config.top_k
    with pytest.raises(EngineError, match="top-k"):
        system.decode([1, 2, 3], 2, immediate_experts=1, deferred_experts=k)
    with pytest.raises(EngineError, match="top-k"):
        system.decode([1, 2, 3], 2, immediate_experts=k - 1)
    with pytest.raises(EngineError, match="max_seq"):
        system.decode(list(range(90)), 10)
    with pytest.raises(SystemUnavailable, match="fp16"):
        EngineSystem(CFG).load(spec(model_dir), "fp16")


def test_generate_greedy_stops_and_seeds(system):
    text = "w5 w17 w99 w3"
    full = system.generate(text, Sampling(max_new_tokens=6))
    words = full.split()
    assert len(words) == 6
    prompt_ids = [5, 17, 99, 3]
    model = system.model
    greedy = generate_ids(model, prompt_ids, 6, model.new_cache(16), Sampler(), chunk_size=64)
    assert words == [f"w{i}" for i in greedy]
    stop = " " + words[2]
    assert system.generate(text, Sampling(max_new_tokens=6, stop=(stop,))) == cut_at_stop(
        full, (stop,)
    )
    hot = Sampling(max_new_tokens=12, temperature=1.5, top_p=0.9, seed=11)
    assert system.generate(text, hot) == system.generate(text, hot)


def test_layer_slice_and_close(model_dir):
    engine = EngineSystem(CFG)
    engine.load(spec(model_dir, layers_run=2), "int8")
    assert engine.describe()["layers_loaded"] == 2
    assert engine.describe()["expert_precision"] == "int8"
    engine.close()
    with pytest.raises(EngineError, match="load"):
        engine.prefill([1, 2])


def test_sampler_top_p_keeps_the_nucleus():
    logits = torch.tensor([5.0, 4.0, -10.0, -10.0])
    sampler = Sampler(temperature=1.0, top_p=0.5, seed=0)
    assert {sampler(logits) for _ in range(50)} == {0}
    assert Sampler()(logits) == 0

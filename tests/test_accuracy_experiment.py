"""The accuracy experiment end to end: lm-eval task YAMLs -> HmoeLM -> System, a score in
[0, 1] equal to re-scoring the written generations (paper format and layout) under the
configured scoring rules, MMLU through System.loglikelihood, right answers scored right
under both rule sets, the runner's rows (with their scoring rules), and NOT RUN reasons."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("lm_eval")

import yaml  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from engine.synthetic import SyntheticRequest, ensure_synthetic_model  # noqa: E402
from experiments import accuracy  # noqa: E402
from experiments.accuracy_run import EvalSettings, run_task  # noqa: E402
from experiments.accuracy_tasks import TASKS, get_task  # noqa: E402
from experiments.engine_system import EngineSystem  # noqa: E402
from experiments.errors import HmoeError  # noqa: E402
from experiments.lm_eval_tasks import TASKS_DIR, lm_eval_name  # noqa: E402
from experiments.points import Point  # noqa: E402
from experiments.run_all import compose_config  # noqa: E402
from experiments.runner import JobRunner  # noqa: E402
from experiments.scoring import score_file  # noqa: E402
from experiments.system_api import ModelSpec, Sampling  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HMOE_DATA_DIR") or REPO.parent / "shared" / "datasets")
LIMIT = 2
needs_data = pytest.mark.skipif(
    not (DATA / "mbpp" / "test.jsonl").is_file(), reason=f"no accuracy datasets at {DATA}"
)
LETTERS = "ABCD"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Never reach for the Hugging Face Hub."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def engine(model_cache):
    threads = torch.get_num_threads()
    path = ensure_synthetic_model(SyntheticRequest("qwen2_moe", "tiny"), model_cache, False)
    spec = ModelSpec(
        "tiny_qwen2_moe", "qw2", "tiny", "qwen2_moe", path, "synthetic-tiny", True, 0, 4
    )
    system = EngineSystem({"device": "cpu", "dtype": "float32", "max_seq": 4096, "threads": 1})
    system.load(spec, "fp32")
    yield system
    system.close()
    torch.set_num_threads(threads)


def overrides(tmp_path: Path, model_cache: Path, *extra: str, system: str = "engine") -> list[str]:
    """A small accuracy job: tiny model, 2 problems, 8 new tokens, one torch thread."""
    engine_only = ["system.options.dtype=float32"] if system == "engine" else []
    return [
        "experiment=accuracy",
        "model=tiny_qwen2_moe",
        f"system={system}",
        "profile=cpu",
        f"data.dir={DATA}",
        f"experiment.limit={LIMIT}",
        "experiment.max_new_tokens=8",
        "system.options.threads=1",
        *engine_only,
        f"paths.cache_dir={model_cache}",
        f"results_root={tmp_path}",
        "run=acc",
        "progress=false",
        *extra,
    ]


def read_generations(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def rescore(task_name: str, generations: list[dict], rules: str) -> float:
    """The score of a generations file, computed without lm-eval: mean over problems of the
    mean over that problem's samples (pass@1 averaged)."""
    task = get_task(task_name)
    docs = {d["idx"]: d for d in task.load_docs(DATA, limit=LIMIT)}
    by_idx: dict[int, list[float]] = defaultdict(list)
    for g in generations:
        doc = docs[g["idx"]]
        if task.kind == "multiple_choice":
            by_idx[g["idx"]].append(float(g["completion"] == LETTERS[task.gold(doc)]))
        else:
            by_idx[g["idx"]].append(task.score(doc, g["completion"], rules))
    return sum(sum(v) / len(v) for v in by_idx.values()) / len(by_idx)


def test_lm_eval_yamls_declare_the_project_tasks():
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(manager.all_tasks) == {lm_eval_name(name) for name in TASKS}
    for name, task in TASKS.items():
        config = yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text().replace("!function", ""))
        assert config["dataset_kwargs"]["task"] == name
        if task.kind == "multiple_choice":
            assert config["output_type"] == "multiple_choice"
        else:
            gen = config["generation_kwargs"]
            assert tuple(gen["until"]) == task.stop and gen["max_gen_toks"] == task.max_new_tokens


class SpySystem:
    """Delegates to a real system and records every loglikelihood call."""

    def __init__(self, inner: EngineSystem) -> None:
        self.inner, self.name, self.calls = inner, inner.name, []

    def generate(self, text: str, sampling: Sampling) -> str:
        return self.inner.generate(text, sampling)

    def loglikelihood(self, context, continuations, immediate_experts=None, deferred_experts=0):
        self.calls.append((context, list(continuations), immediate_experts, deferred_experts))
        return self.inner.loglikelihood(context, continuations, immediate_experts, deferred_experts)


@needs_data
@pytest.mark.parametrize("task_name", ["mbpp", "human_eval", "gsm8k", "strategy_qa", "mmlu"])
def test_measure_on_the_tiny_engine(task_name, engine, tmp_path, model_cache):
    cfg = compose_config(
        overrides(
            tmp_path, model_cache, "experiment.human_eval_samples=2", "experiment.temperature=0.3"
        )
    )
    point = Point("accuracy", "accuracy", "fp32", immediate_experts=8, task=task_name)
    spy = SpySystem(engine)
    out = accuracy.measure(spy, point, cfg, tmp_path / "acc", "pid123")
    assert 0.0 <= out["score"] <= 1.0 and out["n"] == LIMIT and out["seconds"] > 0
    assert out["scoring_rules"] == "paper"  # the default
    generations = read_generations(tmp_path / "acc" / "generations" / "pid123.jsonl")
    samples = 2 if task_name == "human_eval" else 1
    assert len(generations) == LIMIT * samples
    assert all(set(g) == {"idx", "completion"} for g in generations)
    # The artifact's layout: round 0 of every problem, then round 1, ...
    assert [g["idx"] for g in generations] == list(range(LIMIT)) * samples
    assert rescore(task_name, generations, "paper") == pytest.approx(out["score"])
    summary = json.loads((tmp_path / "acc" / "generations" / "pid123.json").read_text())
    assert summary["n"] == LIMIT and summary["score"] == out["score"]
    assert summary["scoring_rules"] == "paper"
    assert summary["settings"]["samples"] == samples
    assert summary["settings"]["temperature"] == (0.3 if task_name == "human_eval" else 0.0)
    task = get_task(task_name)
    if task.kind == "multiple_choice":
        # One System.loglikelihood call per question: its prompt, the 4 choices; the written
        # answer is the argmax of a direct call on the same system.
        docs = task.load_docs(DATA, limit=LIMIT)
        assert [c[0] for c in spy.calls] == [task.prompt(d) for d in docs]
        assert all(c[1] == [" A", " B", " C", " D"] and c[2:] == (8, 0) for c in spy.calls)
        for doc, g in zip(docs, generations, strict=True):
            direct = engine.loglikelihood(task.prompt(doc), task.choices(doc))
            best = max(range(4), key=lambda i: direct[i][0])
            assert g["completion"] == LETTERS[best]
        assert set(summary["per_subject"]) == {d["subject"] for d in docs}
    else:
        assert spy.calls == []
        # `hmoe score` re-scores the file to the same number (paper rules: by position).
        path = tmp_path / "acc" / "generations" / "pid123.jsonl"
        again = score_file(task_name, path, DATA, limit=LIMIT, workers=1)
        assert again["score"] == pytest.approx(out["score"]) and again["rules"] == "paper"


class OracleSystem:
    """Answers problems with an even idx right and odd ones wrong; for sampled problems only
    the first sample is right (so pass@1 averaging over samples is visible)."""

    name = "oracle"

    def __init__(self, task_name: str) -> None:
        self.task = get_task(task_name)
        self.docs = {self.task.prompt(d): d for d in self.task.load_docs(DATA, limit=4)}
        self.seen: dict[str, int] = defaultdict(int)
        self.samplings: list[Sampling] = []

    def _right(self, doc: dict) -> str:
        name = self.task.name
        if name == "mbpp":
            return doc["code"]
        if name == "human_eval":
            return doc["canonical_solution"]
        return f" Let me think. So the answer is {doc['label']}."

    def generate(self, text: str, sampling: Sampling) -> str:
        self.samplings.append(sampling)
        doc = self.docs[text]
        first = self.seen[text] == 0
        self.seen[text] += 1
        right = doc["idx"] % 2 == 0 and first
        return self._right(doc) if right else " So the answer is 12345678."

    def loglikelihood(self, context, continuations, immediate_experts=None, deferred_experts=0):
        doc = self.docs[context]
        gold = self.task.gold(doc) if doc["idx"] % 2 == 0 else (self.task.gold(doc) + 1) % 4
        return [(-1.0 if i == gold else -5.0, i == gold) for i in range(len(continuations))]


@needs_data
@pytest.mark.parametrize("task_name", ["mbpp", "human_eval", "gsm8k", "strategy_qa", "mmlu"])
def test_right_answers_score_through_lm_eval(task_name):
    oracle = OracleSystem(task_name)
    sampled = task_name == "human_eval"
    settings = EvalSettings(
        task=task_name,
        data_dir=str(DATA),
        limit=4,
        samples=2 if sampled else 1,
        temperature=0.3 if sampled else 0.0,
        immediate_experts=4,
        deferred_experts=4,
        rules="strict",
    )
    outcome = run_task(oracle, settings)
    # idx 0 and 2 right (human_eval: only their first of 2 samples), 1 and 3 wrong.
    assert outcome.score == pytest.approx(0.25 if sampled else 0.5)
    assert [p["score"] for p in outcome.problem_scores] == (
        [0.5, 0.0, 0.5, 0.0] if sampled else [1.0, 0.0, 1.0, 0.0]
    )
    if task_name != "mmlu":
        s = oracle.samplings
        assert all(x.stop == get_task(task_name).stop for x in s)
        assert all(x.immediate_experts == 4 and x.deferred_experts == 4 for x in s)
        assert all(x.temperature == settings.temperature for x in s)
        if sampled:
            assert len({x.seed for x in s}) == len(s) == 8  # 4 problems x 2 samples
    with pytest.raises(HmoeError, match="no such directory"):
        run_task(oracle, replace(settings, data_dir=str(REPO / "no-such-dir")))


@needs_data
@pytest.mark.parametrize("task_name", ["mbpp", "strategy_qa"])
def test_lm_eval_scores_under_the_rules_asked_for(task_name):
    """The same completions, scored by lm-eval under each rule set: the paper rules drop
    MBPP's imports (problem 2's reference solution needs one) and read StrategyQA's
    " So the answer is 12345678." as "no" (right where the label is no)."""
    settings = EvalSettings(task=task_name, data_dir=str(DATA), limit=4)
    strict = run_task(OracleSystem(task_name), replace(settings, rules="strict"))
    paper = run_task(OracleSystem(task_name), replace(settings, rules="paper"))
    assert strict.rules == "strict" and paper.rules == "paper"
    assert strict.score == pytest.approx(0.5)
    if task_name == "mbpp":
        assert [p["score"] for p in paper.problem_scores] == [1.0, 0.0, 0.0, 0.0]
    else:
        labels = [d["label"] for d in get_task(task_name).load_problems(DATA, limit=4)]
        wrong_but_no = sum(labels[i] == "no" for i in (1, 3))
        assert paper.score == pytest.approx((2 + wrong_but_no) / 4)
    with pytest.raises(HmoeError, match="unknown scoring rules"):
        run_task(OracleSystem(task_name), replace(settings, rules="lenient"))


@needs_data
def test_runner_records_scores_and_generations(tmp_path, model_cache):
    cfg = compose_config(overrides(tmp_path, model_cache, "experiment.tasks=[gsm8k,mmlu]"))
    summary = JobRunner(cfg).run()
    assert summary.planned == 4 and summary.ok == 4, summary
    df = pd.read_csv(tmp_path / "acc" / "results.csv")
    assert (df["status"] == "ok").all() and len(df) == 4
    assert (df["scoring_rules"] == "paper").all()
    assert df["score"].between(0, 1).all() and (df["seconds"] > 0).all()
    assert df["tokens_per_s"].isna().all()
    assert set(zip(df["immediate_experts"], df["deferred_experts"], strict=True)) == {
        (8, 0),
        (4, 4),
    }
    for pid in df["point_id"]:
        assert len(read_generations(tmp_path / "acc" / "generations" / f"{pid}.jsonl")) == LIMIT
    assert JobRunner(cfg).run().skipped == 4  # measured points are not measured again


@needs_data
def test_fiddler_deferral_points_are_not_run(tmp_path, model_cache):
    cfg = compose_config(
        overrides(
            tmp_path,
            model_cache,
            "model.accuracy_configs=[bf16:8+0,bf16:4+4]",
            "experiment.tasks=[strategy_qa]",
            system="fiddler",
        )
    )
    summary = JobRunner(cfg).run()
    df = pd.read_csv(tmp_path / "acc" / "results.csv").set_index("deferred_experts")
    assert summary.ok == 1 and summary.not_run == 1
    assert df.loc[0, "status"] == "ok" and 0 <= df.loc[0, "score"] <= 1
    assert df.loc[4, "status"] == "not_run" and "deferral" in df.loc[4, "error"]


def test_scoring_rules_come_from_the_config(tmp_path, model_cache):
    point = Point("accuracy", "accuracy", "fp32", immediate_experts=8, task="gsm8k")
    cfg = compose_config(overrides(tmp_path, model_cache))
    assert cfg.experiment.scoring_rules == "paper"
    assert accuracy.settings_for(point, cfg).rules == "paper"
    cfg = compose_config(overrides(tmp_path, model_cache, "experiment.scoring_rules=strict"))
    assert accuracy.settings_for(point, cfg).rules == "strict"
    cfg = compose_config(overrides(tmp_path, model_cache, "experiment.scoring_rules=lenient"))
    with pytest.raises(HmoeError, match="unknown scoring rules 'lenient'"):
        accuracy.plan(cfg)


def test_missing_data_is_not_run_before_any_model_work(tmp_path, model_cache):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    fresh_cache = tmp_path / "fresh-cache"  # a synthetic model would be written here
    cfg = compose_config(
        [
            *overrides(tmp_path, model_cache, "experiment.tasks=[gsm8k]"),
            f"data.dir={empty}",
            f"paths.cache_dir={fresh_cache}",
        ]
    )
    summary = JobRunner(cfg).run()
    assert summary.not_run == summary.planned > 0 and summary.failed == 0
    assert not fresh_cache.exists() or not any(fresh_cache.iterdir())  # no model made
    df = pd.read_csv(tmp_path / "acc" / "results.csv")
    assert (df["status"] == "not_run").all()
    assert df["error"].str.contains("gsm8k").all() and not df["error"].str.contains("\n").any()
    assert df["error"].str.contains(str(empty / "gsm8k")).all()  # where it looked


def test_missing_lm_eval_says_how_to_install(monkeypatch, tmp_path, model_cache):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    cfg = compose_config(overrides(tmp_path, model_cache))
    reason = accuracy.unavailable_reason(cfg, "mbpp")
    assert reason and "pip install -e .[eval]" in reason and "lm_eval" in reason
    point = Point("accuracy", "accuracy", "int8", immediate_experts=8, task="mbpp")
    with pytest.raises(accuracy.AccuracyNotRun, match=r"pip install -e \.\[eval\]"):
        accuracy.measure(UnusedSystem(), point, cfg, tmp_path, "p")


class UnusedSystem:
    """A system that must not be asked for anything."""

    name = "unused"

    def generate(self, text: str, sampling: Sampling) -> str:
        raise AssertionError("generate called")

    def loglikelihood(self, *args, **kwargs):
        raise AssertionError("loglikelihood called")

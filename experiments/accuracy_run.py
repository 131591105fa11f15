"""Run one accuracy task through lm-eval on a loaded System; return the score and generations.

The task is the project's lm-eval YAML (experiments/lm_eval_tasks/) with this run's
settings applied to the loaded lm-eval Task: samples per problem (``repeats``), the stop
strings and token budget of the task, the sampling temperature, and the scoring rules
(``paper`` or ``strict``, see experiments.accuracy_tasks.rules) each completion is scored
by. lm-eval drives the requests through :class:`~experiments.lm_eval_adapter.HmoeLM` and
aggregates the scores; its logged samples give every completion for the generations file,
written in the artifact's layout: round r of the samples of every problem, in test order,
before round r + 1 (HumanEval: 10 rounds of 164 lines), so that pairing line j with
problem j % N, as the paper rules do, finds each completion's problem.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from experiments.accuracy_tasks.rules import DEFAULT_RULES, check_rules
from experiments.errors import HmoeError
from experiments.system_api import System

MULTIPLE_CHOICE = "multiple_choice"


@dataclass(frozen=True)
class EvalSettings:
    """What one accuracy evaluation runs: task, data, subset, sampling and expert split.

    ``samples`` completions per problem at ``temperature`` (greedy at 0; the score is the
    mean over samples); ``max_new_tokens`` caps the task's own token budget (None = none);
    ``rules`` names the scoring rules ("paper" | "strict").
    """

    task: str
    data_dir: str | None = None
    limit: int | None = None
    samples: int = 1
    temperature: float = 0.0
    seed: int = 2025
    max_new_tokens: int | None = None
    immediate_experts: int | None = None
    deferred_experts: int = 0
    progress: bool = False
    rules: str = DEFAULT_RULES


@dataclass(frozen=True)
class EvalOutcome:
    """One task's result: the aggregate score, per problem scores and every completion."""

    task: str
    score: float
    n: int  # problems scored
    seconds: float  # wall time of the lm-eval run (generation + scoring)
    generations: list[dict[str, Any]]  # {"idx", "completion"}: round 0 of every problem, ...
    problem_scores: list[dict[str, Any]]  # {"idx", "score"} (+ "subject" when the doc has one)
    lm_eval_version: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    rules: str = DEFAULT_RULES


def score_under(rules: str, row: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """lm-eval ``process_results`` under ``rules``: the mean score of a problem's samples.

    (hooks.process_results with the rules named; bound with functools.partial.)
    """
    from experiments.accuracy_tasks import get_task
    from experiments.lm_eval_tasks.hooks import task_doc

    completions = results[0]
    if isinstance(completions, str):
        completions = [completions]
    task, doc = get_task(row["task"]), task_doc(row)
    scores = [float(task.score(doc, text, rules)) for text in completions]
    return {"score": sum(scores) / len(scores)}


def _lm_eval_task(settings: EvalSettings) -> tuple[Any, Any, Any]:
    """(TaskManager, lm-eval Task, project Task) with the run's settings applied."""
    from lm_eval.tasks import TaskManager

    from experiments.accuracy_tasks import get_task
    from experiments.lm_eval_tasks import TASKS_DIR, lm_eval_name

    task = get_task(settings.task)
    check_rules(settings.rules)
    manager = TaskManager(
        include_path=str(TASKS_DIR),
        include_defaults=False,
        metadata={"data_dir": settings.data_dir, "doc_limit": settings.limit},
    )
    name = lm_eval_name(settings.task)
    if name not in manager.all_tasks:
        raise HmoeError(f"no lm-eval task {name!r} in {TASKS_DIR}")
    lm_task = manager.load([name])["tasks"][name]
    if task.kind != MULTIPLE_CHOICE:
        if settings.samples < 1:
            raise HmoeError(f"samples per problem must be >= 1, got {settings.samples}")
        sampled = settings.temperature > 0
        lm_task.set_config("repeats", settings.samples)
        lm_task.set_config(
            "generation_kwargs",
            {
                "until": list(task.stop),
                "max_gen_toks": int(task.max_new_tokens),
                "do_sample": sampled,
                "temperature": float(settings.temperature) if sampled else 0.0,
            },
        )
        lm_task.set_config("process_results", functools.partial(score_under, settings.rules))
    return manager, lm_task, task


def run_task(system: System, settings: EvalSettings) -> EvalOutcome:
    """Evaluate ``system`` (loaded) on ``settings.task`` with lm-eval's ``simple_evaluate``."""
    import lm_eval

    from experiments.lm_eval_adapter import HmoeLM

    quiet = logging.getLogger("lm_eval")  # lm-eval's INFO/WARNING chatter per task
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        manager, lm_task, task = _lm_eval_task(settings)
        name = lm_task.config.task
        lm = HmoeLM(
            system,
            immediate_experts=settings.immediate_experts,
            deferred_experts=settings.deferred_experts,
            seed=settings.seed,
            max_new_tokens=int(task.max_new_tokens),
            max_new_tokens_cap=settings.max_new_tokens,
            progress=settings.progress,
        )
        start = time.perf_counter()
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[lm_task],
            task_manager=manager,
            limit=settings.limit,
            bootstrap_iters=0,
            log_samples=True,
            confirm_run_unsafe_code=True,  # generated code runs in experiments.sandbox
            random_seed=settings.seed,
        )
        seconds = time.perf_counter() - start
    finally:
        quiet.setLevel(level)
    if not results:
        raise HmoeError(f"lm-eval returned no results for {name}")
    outcome = _outcome(settings.task, task, results, name, seconds, lm_eval.__version__)
    return replace(outcome, rules=settings.rules)


def _outcome(
    task_name: str,
    task: Any,
    results: dict[str, Any],
    name: str,
    seconds: float,
    version: str,
) -> EvalOutcome:
    from experiments.lm_eval_tasks.hooks import task_doc

    metric = "acc,none" if task.kind == MULTIPLE_CHOICE else "score,all_samples"
    try:
        score = float(results["results"][name][metric])
    except KeyError as exc:
        raise HmoeError(f"lm-eval results for {name} lack {metric!r}") from exc
    samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    rounds: list[list[dict[str, Any]]] = []  # rounds[r]: the r-th sample of every problem
    problems: list[dict[str, Any]] = []
    for sample in samples:
        doc = task_doc(sample["doc"])
        idx = int(doc["idx"])
        if task.kind == MULTIPLE_CHOICE:
            choices = list(task.choices(doc))
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            pick = max(range(len(lls)), key=lls.__getitem__)
            completions = [choices[pick].strip()]
            problem = {"idx": idx, "score": float(sample["acc"])}
        else:
            completions = list(sample["resps"][0])
            problem = {"idx": idx, "score": float(sample["score"])}
        for r, completion in enumerate(completions):
            if r == len(rounds):
                rounds.append([])
            rounds[r].append({"idx": idx, "completion": completion})
        if "subject" in doc:
            problem["subject"] = doc["subject"]
        problems.append(problem)
    return EvalOutcome(
        task=task_name,
        score=score,
        n=len(problems),
        seconds=seconds,
        generations=[line for lines in rounds for line in lines],
        problem_scores=problems,
        lm_eval_version=version,
        details=_per_subject(problems),
    )


def _per_subject(problems: list[dict[str, Any]]) -> dict[str, Any]:
    """MMLU-style accuracy per subject (empty when the problems carry no subject)."""
    by: dict[str, list[float]] = {}
    for p in problems:
        if "subject" in p:
            by.setdefault(str(p["subject"]), []).append(p["score"])
    if not by:
        return {}
    return {"per_subject": {s: sum(v) / len(v) for s, v in sorted(by.items())}}

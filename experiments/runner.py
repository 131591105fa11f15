"""The shared runner: plan a job's points, skip measured ones, measure the rest, record rows.

One job = one experiment x model x system (one Hydra job). Every planned point ends up in
the results table: ``ok`` rows (one per trial), or one ``not_run`` row (the system or
experiment cannot run here, with the reason) or one ``failed`` row (the error text), and
the job goes on with the next point. Only Ctrl-C stops a job; it loses the point in flight.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from experiments import accuracy, provenance, stages
from experiments.accuracy import AccuracyNotRun
from experiments.errors import HmoeError
from experiments.model_resolution import resolve_model
from experiments.points import Point, experiment, point_id
from experiments.results_store import ResultsStore
from experiments.run_identity import check_identity, model_source
from experiments.schema import STATUS_FAILED, STATUS_NOT_RUN, STATUS_OK
from experiments.stages import MeasureContext
from experiments.statistics import summarize
from experiments.system_api import ModelSpec, System, SystemUnavailable, system_class
from experiments.workload import PromptSource


@dataclass
class JobSummary:
    """How a job's points ended."""

    planned: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    not_run: int = 0
    noisy: int = 0
    lines: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # "NOT RUN: why" -> points


def _err_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    name = type(exc).__name__
    if "out of memory" in first.lower() or name == "OutOfMemoryError":
        return f"out of memory: {first}"[:500]
    return (first if isinstance(exc, HmoeError | SystemUnavailable) else f"{name}: {first}")[:500]


class JobRunner:
    """Runs one Hydra job's points and appends their rows to ``results/<run>/``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.results_root) / cfg.run
        self.store = ResultsStore(self.run_dir)
        self.options: dict[str, Any] = OmegaConf.to_container(cfg.system.options, resolve=True)
        self.summary = JobSummary()
        self.job_name = f"{cfg.experiment.name}/{cfg.model.key}/{cfg.system.name}"
        self.run_id = str(cfg.run_id or provenance.new_run_id())
        self.system_facts: dict[str, Any] = {}

    # -- identity ----------------------------------------------------------------------------
    def _identity(self, point: Point) -> dict[str, Any]:
        cfg = self.cfg
        model = OmegaConf.to_container(cfg.model, resolve=True)
        model_id = {
            "key": model["key"],
            "path": model["path"],
            "synthetic": None if model["path"] else model["synthetic"],
        }
        if point.stage == "accuracy":
            model_id["data_dir"] = cfg.data.dir
            model_id["limit"] = cfg.experiment.limit
            for key in (
                "human_eval_samples",
                "temperature",
                "seed",
                "max_new_tokens",
                "scoring_rules",
            ):
                model_id[key] = cfg.experiment[key]
        return {
            "model": model_id,
            "system": {
                "name": cfg.system.name,
                "options": {**self.options, **point.system_options},
            },
            "trials": cfg.experiment.trials,
            "warmup": cfg.experiment.warmup,
            **(
                {"max_trials": cfg.experiment.max_trials, "cv": cfg.experiment.cv_threshold}
                if cfg.experiment.max_trials
                else {}
            ),
            "workload": OmegaConf.to_container(cfg.workload, resolve=True),
        }

    def _precision_label(self, point: Point) -> str:
        """The precision name results carry for ``point`` (the system's ``precision_names``)."""
        names = OmegaConf.to_container(self.cfg.system.precision_names, resolve=True)
        return str(names.get(point.precision, point.precision))

    def _describe(self, point: Point) -> str:
        return point.describe(self._precision_label(point))

    def _base_row(self, point: Point, pid: str, spec: ModelSpec | None) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "run": cfg.run,
            "run_id": self.run_id,
            "point_id": pid,
            "experiment": point.experiment,
            "stage": point.stage,
            "model": cfg.model.key,
            "paper_model": cfg.model.paper_model,
            "model_name": cfg.model.name,
            "model_source": spec.source if spec else (cfg.model.path or "synthetic"),
            "synthetic": spec.synthetic if spec else not bool(cfg.model.path),
            "layers_run": spec.layers_run if spec else None,
            "layers_total": spec.layers_total if spec else cfg.model.layers_total,
            "system": cfg.system.name,
            "precision": self._precision_label(point),
            "variant": point.variant,
            "immediate_experts": point.immediate_experts,
            "deferred_experts": point.deferred_experts if point.immediate_experts else None,
            "prompt_tokens": point.prompt_tokens or None,
            "decode_tokens": point.decode_tokens or None,
            "task": point.task,
            "profile": cfg.profile.name,
            "device": {**self.options, **point.system_options}.get("device", ""),
        }

    # -- recording ---------------------------------------------------------------------------
    def _record_status(
        self,
        todo: list[tuple[Point, str]],
        status: str,
        error: str,
        spec: ModelSpec | None,
        bar: tqdm | None = None,
    ) -> None:
        stamp = provenance.utc_now()
        for point, pid in todo:
            row = self._base_row(point, pid, spec)
            row.update(status=status, error=error, trial=-1, timestamp=stamp)
            self.store.append_point([row])
            if status == STATUS_NOT_RUN:
                self.summary.not_run += 1
            else:
                self.summary.failed += 1
            if bar is not None:
                bar.update(1)
        if todo:
            label = "NOT RUN" if status == STATUS_NOT_RUN else "FAILED"
            key = f"{label}: {error}"
            self.summary.reasons[key] = self.summary.reasons.get(key, 0) + len(todo)

    def _throughput_line(self, point: Point, trials: list[dict[str, Any]]) -> str:
        """``label  mean ± sd tokens/s (n, CV)``, flagged NOISY above the CV threshold."""
        s = summarize(t["tokens_per_s"] for t in trials)
        threshold = float(self.cfg.experiment.cv_threshold)
        spread = f" ± {s.sd:.2f}" if s.n > 1 else ""
        cv = f", CV {s.cv:.1%}" if s.n > 1 else ""
        flag = f"  NOISY (CV > {threshold:.0%})" if s.noisy(threshold) else ""
        self.summary.noisy += bool(flag)
        return f"{self._describe(point):<36} {s.mean:>12.2f}{spread} tokens/s (n={s.n}{cv}){flag}"

    def _run_group(
        self,
        group: list[tuple[Point, str]],
        spec: ModelSpec,
        prompts: PromptSource | None,
        bar: tqdm,
    ) -> None:
        point0 = group[0][0]
        options = {**self.options, **point0.system_options}
        try:
            cls = system_class(self.cfg.system.name)
            system: System = cls(options)
        except SystemUnavailable as exc:
            self._record_status(group, STATUS_NOT_RUN, _err_text(exc), spec, bar)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a bad option: recorded, run goes on
            self._record_status(group, STATUS_FAILED, f"system: {_err_text(exc)}", spec, bar)
            return
        try:
            try:
                system.load(spec, point0.precision)
            except SystemUnavailable as exc:
                self._record_status(group, STATUS_NOT_RUN, _err_text(exc), spec, bar)
                return
            except Exception as exc:  # noqa: BLE001 - any load error is recorded, run goes on
                self._record_status(group, STATUS_FAILED, f"load: {_err_text(exc)}", spec, bar)
                return
            for point, pid in group:
                bar.set_postfix_str(self._describe(point))
                ctx = MeasureContext(self.cfg, prompts, self.run_dir, pid)
                try:
                    trials = stages.measure(system, point, ctx)
                except (SystemUnavailable, AccuracyNotRun) as exc:
                    self._record_status([(point, pid)], STATUS_NOT_RUN, _err_text(exc), spec, bar)
                    continue
                except Exception as exc:  # noqa: BLE001 - recorded as a failed point
                    self._record_status([(point, pid)], STATUS_FAILED, _err_text(exc), spec, bar)
                    continue
                stamp = provenance.utc_now()
                rows = []
                for trial in trials:
                    row = self._base_row(point, pid, spec)
                    row.update(trial, status=STATUS_OK, error="", timestamp=stamp)
                    row["corpus"] = prompts.corpus_name if prompts else ""
                    rows.append(row)
                self.store.append_point(rows)
                self.summary.ok += 1
                if point.stage == "accuracy":
                    score = trials[0]["score"]
                    self.summary.lines.append(f"{self._describe(point):<36} {score:>12.4f} score")
                else:
                    self.summary.lines.append(self._throughput_line(point, trials))
                bar.update(1)
            # one entry per load (precision, variant): a later group must not overwrite
            # what an earlier one reported
            parts = (self.job_name, self._precision_label(point0), point0.variant)
            key = "/".join(part for part in parts if part)
            try:
                self.system_facts[key] = system.describe()
            except Exception as exc:  # noqa: BLE001
                self.system_facts[key] = {"describe_error": _err_text(exc)}
        finally:
            system.close()

    def run(self) -> JobSummary:
        """Plan, skip what is measured, measure the rest; returns how the points ended."""
        cfg = self.cfg
        points = experiment(cfg.experiment.name).plan(cfg)
        self.summary.planned = len(points)
        done = self.store.completed_points()
        todo = []
        for point in points:
            pid = point_id(point, self._identity(point))
            if pid in done and not cfg.rerun:
                self.summary.skipped += 1
            else:
                todo.append((point, pid))
        if not todo:
            return self.summary
        self._record_start()
        try:
            self._run_points(todo)
        finally:
            self.store.compact()
            provenance.record_job_end(self.run_dir, self.job_name, self.run_id, self.system_facts)
        return self.summary

    def _runnable_accuracy_points(self, todo: list[tuple[Point, str]]) -> list[tuple[Point, str]]:
        """Record NOT RUN (no lm-eval, no data) before loading the model; return the rest."""
        reasons: dict[str, tuple[str, str] | None] = {}
        runnable = []
        for point, pid in todo:
            if point.task not in reasons:
                try:
                    why = accuracy.unavailable_reason(self.cfg, point.task)
                    reasons[point.task] = (STATUS_NOT_RUN, why) if why else None
                except Exception as exc:  # noqa: BLE001 - e.g. an unknown task: recorded
                    reasons[point.task] = (STATUS_FAILED, _err_text(exc))
            verdict = reasons[point.task]
            if verdict is None:
                runnable.append((point, pid))
            else:
                self._record_status([(point, pid)], verdict[0], verdict[1], None)
        return runnable

    def _record_start(self) -> None:
        """Refuse a job that would mix configurations in this directory, then record it."""
        cfg = self.cfg
        identity = check_identity(
            provenance.read_provenance(self.run_dir).get("identity"),
            self.run_dir,
            str(cfg.profile.name),
            str(cfg.model.key),
            model_source(cfg.model),
        )
        provenance.record_job_start(
            self.run_dir,
            run=cfg.run,
            run_id=self.run_id,
            mode=cfg.mode.name,
            profile=cfg.profile.name,
            job=self.job_name,
            config=OmegaConf.to_container(cfg, resolve=True),
            identity=identity,
        )

    def _run_points(self, todo: list[tuple[Point, str]]) -> None:
        cfg = self.cfg
        is_accuracy = todo[0][0].stage == "accuracy"
        if is_accuracy:
            todo = self._runnable_accuracy_points(todo)
            if not todo:
                return
        try:
            spec = resolve_model(cfg.model, Path(cfg.paths.cache_dir), progress=cfg.progress)
            prompts = None
            if not is_accuracy:
                prompts = PromptSource(
                    spec.path, cfg.workload.corpus, cfg.workload.corpus_file, cfg.workload.seed
                )
        except Exception as exc:  # noqa: BLE001 - a bad model fails its points, run goes on
            self._record_status(todo, STATUS_FAILED, f"model: {_err_text(exc)}", None)
            return
        groups: dict[str, list[tuple[Point, str]]] = {}
        for point, pid in todo:
            key = f"{point.precision}|{sorted(point.system_options.items())}"
            groups.setdefault(key, []).append((point, pid))
        desc = f"{cfg.experiment.name} {cfg.system.name} {cfg.model.key}"
        with tqdm(
            total=len(todo),
            desc=desc,
            unit="pt",
            disable=not cfg.progress,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            start = time.perf_counter()
            for group in groups.values():
                self._run_group(group, spec, prompts, bar)
            bar.set_postfix_str(f"done in {time.perf_counter() - start:.1f}s")

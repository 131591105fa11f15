"""Re-score saved generations: ``hmoe score --task TASK FILE.jsonl``.

Each line of FILE is {"idx": i, "completion": text} (the paper artifact's format), idx being
the 0-based problem position in test order; a problem may have several lines (sampled
HumanEval): its score is the mean over its samples (pass@1), and the file's score the mean
over the problems it covers. Code is run in the sandbox by a pool of worker processes.
The score is printed and one JSON line {"task", "file", "n_problems", "n_samples", "score",
"timestamp"} is appended to --out (default: FILE with the suffix .score.jsonl).
Bad input (missing file, bad line, idx out of range, unknown task) exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from experiments.accuracy_tasks import get_task, resolve_data_dir
from experiments.errors import HmoeError

SCORABLE = ("mbpp", "human_eval", "gsm8k", "strategy_qa")
CODE_TASKS = ("mbpp", "human_eval")


def read_generations(path: Path, n_docs: int) -> list[tuple[int, str]]:
    """(idx, completion) pairs of a generations file, checked line by line."""
    if not path.is_file():
        raise HmoeError(f"{path}: no such file")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HmoeError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "idx" not in row or "completion" not in row:
                raise HmoeError(f'{where}: expected an object with "idx" and "completion"')
            idx, completion = row["idx"], row["completion"]
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise HmoeError(f"{where}: idx must be an integer, got {idx!r}")
            if not 0 <= idx < n_docs:
                raise HmoeError(f"{where}: idx {idx} out of range (the task has {n_docs} problems)")
            if not isinstance(completion, str):
                raise HmoeError(f"{where}: completion must be a string")
            pairs.append((idx, completion))
    if not pairs:
        raise HmoeError(f"{path}: no generations in the file")
    return pairs


def _score_one(task: str, doc: dict[str, Any], completion: str) -> float:
    return get_task(task).score(doc, completion)


def _scores(task: str, jobs: list[tuple[dict[str, Any], str]], workers: int) -> Iterator[float]:
    if task not in CODE_TASKS or workers <= 1 or len(jobs) <= 1:
        for doc, completion in jobs:
            yield _score_one(task, doc, completion)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(
            _score_one,
            [task] * len(jobs),
            [doc for doc, _ in jobs],
            [completion for _, completion in jobs],
            chunksize=4,
        )


def default_workers() -> int:
    """min(4, CPU count)."""
    return max(1, min(4, os.cpu_count() or 1))


def score_file(
    task: str,
    path: Path,
    data_dir: Path | None,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score one generations file; the record written by ``hmoe score`` plus "solved"."""
    task_obj = get_task(task)
    if task not in SCORABLE:
        raise HmoeError(f"{task} is not scored from generations (scorable: {', '.join(SCORABLE)})")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise HmoeError(f"--workers must be at least 1, got {workers}")
    if not path.is_file():
        raise HmoeError(f"{path}: no such file")
    docs = task_obj.load_docs(data_dir)
    pairs = read_generations(path, len(docs))
    jobs = [(docs[idx], completion) for idx, completion in pairs]
    per_problem: dict[int, list[float]] = defaultdict(list)
    results = tqdm(
        _scores(task, jobs, workers),
        total=len(jobs),
        desc=f"scoring {task}",
        unit="sample",
        disable=not progress or None,
        file=sys.stderr,
    )
    for (idx, _), value in zip(pairs, results, strict=True):
        per_problem[idx].append(value)
    fractions = [sum(values) / len(values) for values in per_problem.values()]
    return {
        "task": task,
        "file": str(path),
        "n_problems": len(per_problem),
        "n_samples": len(pairs),
        "score": sum(fractions) / len(fractions),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "solved": sum(fractions),
    }


RECORD_KEYS = ("task", "file", "n_problems", "n_samples", "score", "timestamp")


def main(argv: list[str]) -> int:
    """``hmoe score``: 0 when scored, 2 on unusable input."""
    parser = argparse.ArgumentParser(
        prog="hmoe score", description="Score saved generations ({idx, completion} lines)."
    )
    parser.add_argument("--task", required=True, help=" | ".join(SCORABLE))
    parser.add_argument("file", type=Path, help="generations, one JSON object per line")
    parser.add_argument("--data-dir", help="local data directory (else $HMOE_DATA_DIR, the Hub)")
    parser.add_argument("--out", type=Path, help="JSON-lines file the score is appended to")
    parser.add_argument("--workers", type=int, help="code-execution processes (default 4)")
    args = parser.parse_args(argv)
    try:
        result = score_file(
            args.task,
            args.file,
            resolve_data_dir(args.data_dir),
            workers=args.workers,
            progress=True,
        )
        out = args.out or args.file.with_suffix(".score.jsonl")
        record = {key: result[key] for key in RECORD_KEYS}
        try:
            with out.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise HmoeError(f"cannot write {out}: {exc.strerror or exc}") from None
    except HmoeError as exc:
        print(f"hmoe score: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result['task']}: score {result['score']:.4f} "
        f"({result['solved']:g}/{result['n_problems']} problems, "
        f"{result['n_samples']} samples) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

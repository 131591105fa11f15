"""Re-score saved generations: ``hmoe score --task TASK [--rules paper|strict] FILE.jsonl``.

FILE holds JSON lines {"idx": i, "completion": text}, the paper artifact's format (files it
published are accepted unchanged). Two rule sets (experiments.accuracy_tasks.rules):

- ``paper`` (default): as the artifact's scorer. Line j is scored against problem j % N
  (N = the task's problem count, or --limit), ignoring ``idx``; the line count must be a
  multiple of N (HumanEval: 10 rounds of 164 = 1640 lines). Each completion is
  post-processed by the artifact's rules; the score is the mean over all lines (pass@1
  averaged over samples for HumanEval).
- ``strict``: each line is scored against problem ``idx``; the score is the mean over the
  problems present of the mean over each problem's lines.

Code is run in the sandbox (experiments.sandbox) by a pool of worker processes. The score
and the number of lines scored are printed, and one JSON line {"task", "file", "rules",
"n_lines", "n_problems", "score", "timestamp"} is appended to --out (default: FILE with
the suffix .score.jsonl). Only the problems are needed, never the few-shot file. Unusable
input (missing or unreadable file, not UTF-8, not JSON, missing fields, a line count that
does not fit the task, unknown task, data not found) exits 2 with one line, no traceback.
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
from typing import Any, NoReturn

from tqdm import tqdm

from experiments.accuracy_tasks import get_task, resolve_data_dir
from experiments.accuracy_tasks.rules import DEFAULT_RULES, PAPER, RULES, check_rules
from experiments.errors import HmoeError

SCORABLE = ("mbpp", "human_eval", "gsm8k", "strategy_qa")
CODE_TASKS = ("mbpp", "human_eval")
RECORD_KEYS = ("task", "file", "rules", "n_lines", "n_problems", "score", "timestamp")


def read_lines(path: Path) -> list[tuple[int, Any, str]]:
    """(line number, idx, completion) of every non-blank line, each checked."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HmoeError(f"{path}: no such file") from None
    except OSError as exc:
        raise HmoeError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise HmoeError(
            f"{path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); expected JSON lines {{idx, completion}}"
        ) from None
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HmoeError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "idx" not in row or "completion" not in row:
            raise HmoeError(f'{where}: expected an object with "idx" and "completion"')
        if not isinstance(row["completion"], str):
            raise HmoeError(f"{where}: completion must be a string")
        rows.append((number, row["idx"], row["completion"]))
    if not rows:
        raise HmoeError(f"{path}: no generations in the file")
    return rows


def pair_by_idx(
    path: Path, lines: list[tuple[int, Any, str]], n_docs: int
) -> list[tuple[int, str]]:
    """(problem, completion) pairs by the strict rules: each line's ``idx``, checked."""
    pairs = []
    for number, idx, completion in lines:
        where = f"{path} line {number}"
        if isinstance(idx, bool) or not isinstance(idx, int):
            raise HmoeError(f"{where}: idx must be an integer, got {idx!r}")
        if not 0 <= idx < n_docs:
            raise HmoeError(f"{where}: idx {idx} out of range (the task has {n_docs} problems)")
        pairs.append((idx, completion))
    return pairs


def pair_by_position(
    path: Path, lines: list[tuple[int, Any, str]], task: str, n_docs: int
) -> list[tuple[int, str]]:
    """(problem, completion) pairs by the paper rules: line j -> problem j % n_docs."""
    if len(lines) % n_docs:
        raise HmoeError(
            f"{path}: {len(lines)} lines is not a multiple of the {n_docs} problems of "
            f"{task} (paper rules pair line j with problem j % {n_docs}); for a file that "
            "covers only the first problems give --limit"
        )
    return [(j % n_docs, completion) for j, (_, _, completion) in enumerate(lines)]


def _score_one(task: str, doc: dict[str, Any], completion: str, rules: str) -> float:
    return get_task(task).score(doc, completion, rules)


def _scores(
    task: str, jobs: list[tuple[dict[str, Any], str]], rules: str, workers: int
) -> Iterator[float]:
    if task not in CODE_TASKS or workers <= 1 or len(jobs) <= 1:
        for doc, completion in jobs:
            yield _score_one(task, doc, completion, rules)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(
            _score_one,
            [task] * len(jobs),
            [doc for doc, _ in jobs],
            [completion for _, completion in jobs],
            [rules] * len(jobs),
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
    rules: str = DEFAULT_RULES,
    limit: int | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score one generations file; the record written by ``hmoe score`` plus "solved"
    (the number of lines (paper) or problems (strict) scored right)."""
    task_obj = get_task(task)
    check_rules(rules)
    if task not in SCORABLE:
        raise HmoeError(f"{task} is not scored from generations (scorable: {', '.join(SCORABLE)})")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise HmoeError(f"--workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise HmoeError(f"--limit must be at least 1, got {limit}")
    lines = read_lines(path)  # a broken file fails before any data is fetched
    docs = task_obj.load_problems(data_dir, limit)
    if limit is not None and len(docs) < limit:
        raise HmoeError(f"--limit {limit}: {task} has only {len(docs)} problems")
    if rules == PAPER:
        pairs = pair_by_position(path, lines, task, len(docs))
    else:
        pairs = pair_by_idx(path, lines, len(docs))
    jobs = [(docs[idx], completion) for idx, completion in pairs]
    values = list(
        tqdm(
            _scores(task, jobs, rules, workers),
            total=len(jobs),
            desc=f"scoring {task} ({rules} rules)",
            unit="line",
            disable=not progress or None,
            file=sys.stderr,
        )
    )
    if rules == PAPER:
        n_problems, solved, score = len(docs), sum(values), sum(values) / len(values)
    else:
        per_problem: dict[int, list[float]] = defaultdict(list)
        for (idx, _), value in zip(pairs, values, strict=True):
            per_problem[idx].append(value)
        fractions = [sum(v) / len(v) for v in per_problem.values()]
        n_problems, solved = len(per_problem), sum(fractions)
        score = solved / n_problems
    return {
        "task": task,
        "file": str(path),
        "rules": rules,
        "n_lines": len(pairs),
        "n_problems": n_problems,
        "score": score,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "solved": solved,
    }


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (exit 2) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``hmoe score`` command line."""
    parser = _Parser(
        prog="hmoe score",
        description=(
            "Score saved generations (JSON lines {idx, completion}, the paper artifact's "
            "format). Prints the score and the number of lines scored; exits 2 on unusable "
            "input."
        ),
    )
    parser.add_argument("--task", required=True, help=" | ".join(SCORABLE))
    parser.add_argument("file", type=Path, help="generations, one JSON object per line")
    parser.add_argument(
        "--rules",
        choices=RULES,
        default=DEFAULT_RULES,
        help="paper: the artifact's scorer, lines paired with problems by position "
        "(default); strict: the harness's clean rules, lines paired by idx",
    )
    parser.add_argument(
        "--limit",
        type=int,
        help="the file covers only the first LIMIT problems (a run with experiment.limit)",
    )
    parser.add_argument(
        "--data-dir",
        help="local data directory holding <task>/test.jsonl (else $HMOE_DATA_DIR, else the "
        "Hugging Face Hub)",
    )
    parser.add_argument("--out", type=Path, help="JSON-lines file the score is appended to")
    parser.add_argument("--workers", type=int, help="code-execution processes (default 4)")
    return parser


def main(argv: list[str]) -> int:
    """``hmoe score``: 0 when scored, 2 on unusable input (``--help``: 0)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = score_file(
            args.task,
            args.file,
            resolve_data_dir(args.data_dir),
            rules=args.rules,
            limit=args.limit,
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
    unit = "lines" if result["rules"] == PAPER else "problems"
    print(
        f"{result['task']}: score {result['score']:.4f} ({result['rules']} rules; "
        f"{result['n_lines']} lines scored, {result['n_problems']} problems; "
        f"{result['solved']:g} {unit} right) -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

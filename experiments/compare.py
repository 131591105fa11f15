"""The regression gate ``hmoe compare BASE NEW``: did a change cost accuracy or throughput?

Points of two results directories are matched by what defines them (experiment, stage,
model, system, precision, variant, expert split, token counts, task); each side of a point
is its ok trials (tokens/s, or the accuracy score), shown as mean +- sd (n).

A throughput point is SLOWER (or FASTER) only when both hold:

- its mean changed by more than ``--max-slowdown`` percent, and
- the change is statistically significant: Welch's t-test on the two sides' trial values,
  p-values adjusted with Benjamini-Hochberg over all tested points, at most ``--alpha``.

Otherwise it is "no significant change", with the reason (within the threshold, not
significant, or too few trials for a test: fewer than two on a side). The adjustment keeps
a rerun of identical code passing with probability at least 1 - alpha, however many
points are compared. Exit 1 when any point is SLOWER or the average accuracy drop over the
matched accuracy points exceeds ``--max-accuracy-drop`` percentage points; exit 0
otherwise, 2 on unusable input.

Each side is one results directory (its cluster shards included) or a set of them read as
one table (``DIR,DIR``, or a folder holding them: results brought back from several
hosts); a side whose shards mix configurations is unusable input (experiments/shards.py).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.errors import HmoeError
from experiments.markdown import DASH, md_table
from experiments.results_store import load_result_set
from experiments.schema import MEASUREMENT_KEYS, STATUS_OK
from experiments.statistics import (
    DEFAULT_ALPHA,
    DEFAULT_CV_THRESHOLD,
    adjust_p_values,
    is_noisy,
    summarize,
    welch_test,
)

# Points of two runs match on what was measured (the model by its key, as run).
MATCH_KEYS: tuple[str, ...] = ("experiment", "stage", "model", *MEASUREMENT_KEYS)
HEADERS = ["point", "metric", "base mean ± sd (n)", "new mean ± sd (n)", "change", "p", "verdict"]
EPS = 1e-9  # a value exactly at a bound passes, whatever float rounding says
SLOWER = "SLOWER"
FASTER = "FASTER"
NO_CHANGE = "no significant change"
WITHIN = "within threshold"
NOT_SIGNIFICANT = "not significant"
TOO_FEW = "too few trials"


@dataclass(frozen=True)
class GateResult:
    """The matched points (one row each) and the gate's verdict."""

    # MATCH_KEYS + kind; base/new (means), base_sd/new_sd, base_n/new_n, base_cv/new_cv,
    # change_pct, p_value, p_adjusted (NaN where no test), verdict, why
    table: pd.DataFrame
    accuracy_drop_pp: float | None  # mean (base - new) * 100 over accuracy points
    slow_points: list[str]  # throughput points significantly slower than the bound
    passed: bool
    alpha: float = DEFAULT_ALPHA
    only_base: int = 0  # points of BASE without a match in NEW (not compared)
    only_new: int = 0


def side_paths(text: str | Path | Sequence[Path]) -> list[Path]:
    """One side's results directories: a path, ``DIR,DIR,...`` (unless a directory of that
    very name exists), or a list of paths."""
    if isinstance(text, str | Path):
        if Path(text).exists() or "," not in str(text):
            return [Path(text)]
        return [Path(part) for part in str(text).split(",") if part]
    return [Path(p) for p in text]


def _side_name(paths: list[Path]) -> str:
    return ",".join(str(p) for p in paths)


def point_trials(results_dir: str | Path | Sequence[Path]) -> pd.DataFrame:
    """One row per measured point of ``results_dir`` (a results directory, with its shards,
    or several read as one table): MATCH_KEYS, kind, values (trial list)."""
    paths = side_paths(results_dir)
    results_dir = _side_name(paths)
    df = load_result_set(paths)
    ok = df[df["status"] == STATUS_OK].copy()
    if ok.empty:
        raise HmoeError(f"{results_dir}: no measured (ok) results")
    ok["kind"] = ["accuracy" if s == "accuracy" else "throughput" for s in ok["stage"]]
    ok["value"] = ok["score"].where(ok["kind"] == "accuracy", ok["tokens_per_s"])
    ok = ok.dropna(subset=["value"])
    if ok.empty:
        raise HmoeError(f"{results_dir}: no measured (ok) results with a value")
    for key in MATCH_KEYS:  # NaN never equals NaN: compare as text
        ok[key] = ok[key].map(_key_text)
    grouped = ok.groupby([*MATCH_KEYS, "kind"], as_index=False)["value"]
    return grouped.agg(list).rename(columns={"value": "values"})


def _key_text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _summaries(table: pd.DataFrame, side: str) -> None:
    stats = [summarize(values) for values in table[f"{side}_values"]]
    table[side] = [s.mean for s in stats]
    table[f"{side}_sd"] = [s.sd for s in stats]
    table[f"{side}_n"] = [s.n for s in stats]
    table[f"{side}_cv"] = [s.cv for s in stats]


def _judge_throughput(table: pd.DataFrame, max_slowdown: float, alpha: float) -> None:
    """Fill change_pct, p_value, p_adjusted, verdict and why of the throughput rows."""
    thr = table.index[table["kind"] == "throughput"]
    tests = {i: welch_test(table.at[i, "base_values"], table.at[i, "new_values"]) for i in thr}
    tested = [i for i in thr if tests[i].p_value is not None]
    adjusted = dict(zip(tested, adjust_p_values([tests[i].p_value for i in tested]), strict=True))
    for i in thr:
        base, new = table.at[i, "base"], table.at[i, "new"]
        change = (new - base) / base * 100 if base > 0 else math.nan
        table.at[i, "change_pct"] = change
        p_value = tests[i].p_value
        table.at[i, "p_value"] = math.nan if p_value is None else p_value
        table.at[i, "p_adjusted"] = adjusted.get(i, math.nan)
        if math.isnan(change) or abs(change) <= max_slowdown + EPS:
            verdict, why = NO_CHANGE, f"{WITHIN} (±{max_slowdown:g} %)"
        elif p_value is None:
            verdict, why = NO_CHANGE, tests[i].reason  # "too few trials (n=...)"
        elif adjusted[i] > alpha:
            verdict, why = NO_CHANGE, f"{NOT_SIGNIFICANT} ({_p_text(p_value, adjusted[i])})"
        else:
            verdict = SLOWER if change < 0 else FASTER
            why = f"significant ({_p_text(p_value, adjusted[i])} <= alpha {alpha:g})"
        table.at[i, "verdict"] = verdict
        table.at[i, "why"] = why


def _p_text(p_value: float, adjusted: float) -> str:
    text = f"p={p_value:.3g}"
    return text if adjusted == p_value else f"{text}, adjusted {adjusted:.3g}"


def compare(
    base_dir: str | Path | Sequence[Path],
    new_dir: str | Path | Sequence[Path],
    max_accuracy_drop: float,
    max_slowdown: float,
    alpha: float = DEFAULT_ALPHA,
) -> GateResult:
    """Match the points of two runs and judge them (raises HmoeError on unusable input)."""
    base = point_trials(base_dir).rename(columns={"values": "base_values"})
    new = point_trials(new_dir).rename(columns={"values": "new_values"})
    keys = [*MATCH_KEYS, "kind"]
    table = base.merge(new, on=keys, how="inner")
    if table.empty:
        raise HmoeError(
            f"no points of {_side_name(side_paths(new_dir))} match a point of "
            f"{_side_name(side_paths(base_dir))}"
        )
    table = table.sort_values([*MATCH_KEYS]).reset_index(drop=True)
    _summaries(table, "base")
    _summaries(table, "new")
    for column in ("change_pct", "p_value", "p_adjusted"):
        table[column] = math.nan
    table["verdict"] = ""
    table["why"] = ""
    _judge_throughput(table, max_slowdown, alpha)
    acc = table[table["kind"] == "accuracy"]
    drop = float(((acc["base"] - acc["new"]) * 100).mean()) if len(acc) else None
    slow = [label(row) for _, row in table[table["verdict"] == SLOWER].iterrows()]
    passed = not slow and (drop is None or drop <= max_accuracy_drop + EPS)
    return GateResult(
        table,
        drop,
        slow,
        passed,
        alpha,
        only_base=len(base) - len(table),
        only_new=len(new) - len(table),
    )


def label(row: pd.Series) -> str:
    """Short description of a matched point."""
    parts = [row["experiment"], row["model"], row["system"], row["precision"]]
    if row["stage"] not in (row["experiment"], ""):
        parts.insert(1, row["stage"])
    if row["variant"]:
        parts.append(row["variant"])
    if row["immediate_experts"]:
        parts.append(f"{row['immediate_experts']}+{row['deferred_experts'] or 0}")
    if row["prompt_tokens"]:
        parts.append(f"p{row['prompt_tokens']}")
    if row["decode_tokens"]:
        parts.append(f"n{row['decode_tokens']}")
    if row["task"]:
        parts.append(row["task"])
    return " ".join(parts)


def _side_text(row: pd.Series, side: str, scale: float) -> str:
    mean, sd, n, cv = (row[side], row[f"{side}_sd"], row[f"{side}_n"], row[f"{side}_cv"])
    text = f"{mean * scale:.2f}"
    if not math.isnan(sd):
        text += f" ± {sd * scale:.2f}"
    notes = [f"n={int(n)}"]
    if is_noisy(cv):
        notes.append(f"CV {cv:.0%} > {DEFAULT_CV_THRESHOLD:.0%}")
    return f"{text} ({', '.join(notes)})"


def _p_cell(row: pd.Series) -> str:
    if math.isnan(row["p_value"]):
        return DASH
    return _p_text(row["p_value"], row["p_adjusted"])


def _table_rows(table: pd.DataFrame) -> list[list[object]]:
    rows: list[list[object]] = []
    for _, row in table.iterrows():
        if row["kind"] == "accuracy":
            metric, scale = "score %", 100.0
            change = f"{(row['new'] - row['base']) * 100:+.2f} pp"
            verdict = ""
        else:
            metric, scale = "tokens/s", 1.0
            change = DASH if math.isnan(row["change_pct"]) else f"{row['change_pct']:+.2f} %"
            verdict = row["verdict"] if row["verdict"] != NO_CHANGE else f"{NO_CHANGE}: "
            verdict += row["why"] if row["verdict"] == NO_CHANGE else ""
        rows.append(
            [
                label(row),
                metric,
                _side_text(row, "base", scale),
                _side_text(row, "new", scale),
                change,
                _p_cell(row),
                verdict,
            ]
        )
    return rows


def _throughput_summary(result: GateResult, max_slowdown: float) -> list[str]:
    thr = result.table[result.table["kind"] == "throughput"]
    if thr.empty:
        return []
    same = thr[thr["verdict"] == NO_CHANGE]["why"]
    reasons = {
        WITHIN: int(same.str.startswith(WITHIN).sum()),
        NOT_SIGNIFICANT: int(same.str.startswith(NOT_SIGNIFICANT).sum()),
        TOO_FEW: int(same.str.startswith(TOO_FEW).sum()),
    }
    tested = int(thr["p_value"].notna().sum())
    lines = [
        f"throughput: {len(result.slow_points)} of {len(thr)} point(s) significantly slower "
        f"by more than {max_slowdown:g} %, {int((thr['verdict'] == FASTER).sum())} faster, "
        f"{len(same)} no significant change ("
        + ", ".join(f"{count} {why}" for why, count in reasons.items())
        + f"); Welch's t-test at alpha {result.alpha:g}, Benjamini-Hochberg adjusted over "
        f"{tested} tested point(s)"
    ]
    noisy = int((thr["base_cv"].map(is_noisy) | thr["new_cv"].map(is_noisy)).sum())
    if noisy:
        lines.append(
            f"{noisy} point(s) have CV > {DEFAULT_CV_THRESHOLD:.0%} on a side: noisy trials, "
            "so only large changes can be called significant (more trials sharpen the verdict)"
        )
    return lines


def render(result: GateResult, max_accuracy_drop: float, max_slowdown: float) -> str:
    """The per-point table and the verdict lines."""
    lines = [md_table(HEADERS, _table_rows(result.table))]
    if result.accuracy_drop_pp is not None:
        ok = result.accuracy_drop_pp <= max_accuracy_drop + EPS
        lines.append(
            f"accuracy: average drop {result.accuracy_drop_pp:.2f} pp over "
            f"{int((result.table['kind'] == 'accuracy').sum())} point(s) "
            f"({'<=' if ok else '>'} {max_accuracy_drop:g} pp)"
        )
    lines += _throughput_summary(result, max_slowdown)
    if result.only_base or result.only_new:
        lines.append(
            f"not compared: {result.only_base} point(s) only in BASE, {result.only_new} only in NEW"
        )
    lines.append("PASS" if result.passed else "FAIL")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmoe compare",
        description=(
            "Compare two results directories; exit 1 on an accuracy regression or a "
            "throughput point that is significantly slower beyond the threshold."
        ),
    )
    parser.add_argument(
        "base",
        help="results directory of the baseline run (DIR,DIR,... or a folder of results "
        "directories: shards from several hosts, read as one table)",
    )
    parser.add_argument("new", help="results directory of the run to check (same forms)")
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        help="largest allowed average accuracy drop, percentage points (default 1.0)",
    )
    parser.add_argument(
        "--max-slowdown",
        type=float,
        default=5.0,
        help="a throughput change within this many percent is never a regression (default 5)",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help="significance level of the Welch's t-tests, Benjamini-Hochberg adjusted over "
        f"the compared points (default {DEFAULT_ALPHA:g})",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hmoe compare``: 0 pass, 1 regression, 2 unusable input."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.max_accuracy_drop < 0 or args.max_slowdown < 0:
        print("error: --max-accuracy-drop and --max-slowdown must be >= 0", file=sys.stderr)
        return 2
    if not 0 < args.alpha < 1:
        print("error: --alpha must be between 0 and 1", file=sys.stderr)
        return 2
    try:
        result = compare(args.base, args.new, args.max_accuracy_drop, args.max_slowdown, args.alpha)
    except HmoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(result, args.max_accuracy_drop, args.max_slowdown))
    return 0 if result.passed else 1

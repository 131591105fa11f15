"""The regression gate ``hmoe compare BASE NEW``: did a change cost accuracy or throughput?

Points of two results directories are matched by what defines them (experiment, stage,
model, system, precision, variant, expert split, token counts, task); each side's value is
the mean over its ok trials (tokens/s, or the accuracy score). The gate fails (exit 1) when
the average accuracy drop over the matched accuracy points exceeds ``--max-accuracy-drop``
percentage points, or any matched throughput point is slower by more than
``--max-slowdown`` percent; exit 0 otherwise, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from experiments.errors import HmoeError
from experiments.results_store import load_results
from experiments.schema import STATUS_OK
from plots.markdown import md_table

MATCH_KEYS: tuple[str, ...] = (
    "experiment",
    "stage",
    "model",
    "system",
    "precision",
    "variant",
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "task",
)
HEADERS = ["point", "metric", "base", "new", "change", "verdict"]
EPS = 1e-9  # a value exactly at a bound passes, whatever float rounding says


@dataclass(frozen=True)
class GateResult:
    """The matched points (one row each) and the gate's verdict."""

    table: pd.DataFrame  # MATCH_KEYS + kind, base, new
    accuracy_drop_pp: float | None  # mean (base - new) * 100 over accuracy points
    slow_points: list[str]  # throughput points slower than the bound
    passed: bool


def point_means(results_dir: Path) -> pd.DataFrame:
    """One row per measured point of ``results_dir``: MATCH_KEYS, kind, value (mean)."""
    df = load_results(Path(results_dir))
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
    return ok.groupby([*MATCH_KEYS, "kind"], as_index=False)["value"].mean()


def _key_text(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def compare(
    base_dir: Path, new_dir: Path, max_accuracy_drop: float, max_slowdown: float
) -> GateResult:
    """Match the points of two runs and judge them (raises HmoeError on unusable input)."""
    base = point_means(base_dir).rename(columns={"value": "base"})
    new = point_means(new_dir).rename(columns={"value": "new"})
    table = base.merge(new, on=[*MATCH_KEYS, "kind"], how="inner")
    if table.empty:
        raise HmoeError(f"no points of {new_dir} match a point of {base_dir}")
    table = table.sort_values([*MATCH_KEYS]).reset_index(drop=True)
    acc = table[table["kind"] == "accuracy"]
    drop = float(((acc["base"] - acc["new"]) * 100).mean()) if len(acc) else None
    thr = table[table["kind"] == "throughput"]
    slowdown = (thr["base"] - thr["new"]) / thr["base"] * 100
    slow = [label(row) for _, row in thr[slowdown > max_slowdown + EPS].iterrows()]
    passed = not slow and (drop is None or drop <= max_accuracy_drop + EPS)
    return GateResult(table, drop, slow, passed)


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


def render(result: GateResult, max_accuracy_drop: float, max_slowdown: float) -> str:
    """The per-point table and the verdict lines."""
    rows = []
    for _, row in result.table.iterrows():
        if row["kind"] == "accuracy":
            change_pp = (row["new"] - row["base"]) * 100
            rows.append(
                [
                    label(row),
                    "score %",
                    f"{row['base'] * 100:.2f}",
                    f"{row['new'] * 100:.2f}",
                    f"{change_pp:+.2f} pp",
                    "",
                ]
            )
        else:
            change = (row["new"] - row["base"]) / row["base"] * 100
            verdict = "SLOWER" if -change > max_slowdown + EPS else ""
            rows.append(
                [
                    label(row),
                    "tokens/s",
                    f"{row['base']:.2f}",
                    f"{row['new']:.2f}",
                    f"{change:+.2f} %",
                    verdict,
                ]
            )
    lines = [md_table(HEADERS, rows)]
    if result.accuracy_drop_pp is not None:
        ok = result.accuracy_drop_pp <= max_accuracy_drop + EPS
        lines.append(
            f"accuracy: average drop {result.accuracy_drop_pp:.2f} pp over "
            f"{int((result.table['kind'] == 'accuracy').sum())} point(s) "
            f"({'<=' if ok else '>'} {max_accuracy_drop:g} pp)"
        )
    n_thr = int((result.table["kind"] == "throughput").sum())
    if n_thr:
        lines.append(
            f"throughput: {len(result.slow_points)} of {n_thr} point(s) slower than "
            f"{max_slowdown:g} %"
        )
    lines.append("PASS" if result.passed else "FAIL")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmoe compare",
        description="Compare two results directories; exit 1 on an accuracy or speed regression.",
    )
    parser.add_argument("base", type=Path, help="results directory of the baseline run")
    parser.add_argument("new", type=Path, help="results directory of the run to check")
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
        help="largest allowed throughput loss of any point, percent (default 5)",
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
    try:
        result = compare(args.base, args.new, args.max_accuracy_drop, args.max_slowdown)
    except HmoeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(result, args.max_accuracy_drop, args.max_slowdown))
    return 0 if result.passed else 1

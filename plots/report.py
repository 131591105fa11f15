"""Build report.md for one results directory: header, figures, tables, claims, gaps.

``build_report(results_dir)`` reads results.csv + provenance.json, regenerates the four
figures/tables under ``<out>/figures/`` and writes ``<out>/report.md`` (``<out>`` defaults
to the results directory). A results directory's shards (cluster jobs) and a set of
directories (results brought back from several hosts) read as one table
(experiments/shards.py). Everything is a pure function of the results, the reference
numbers and the provenance, so a report can be rebuilt without rerunning anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.atomic_write import atomic_write_text
from experiments.errors import HmoeError
from experiments.markdown import md_table
from experiments.provenance import read_provenance_set
from experiments.schema import POINT_KEYS, STATUS_OK
from experiments.statistics import DEFAULT_ALPHA, DEFAULT_CV_THRESHOLD
from plots.claims import ClaimResult, evaluate_claims
from plots.compare_tables import (
    NOISY_FLAG,
    breakdown_table,
    decode_table,
    placement_table,
    prefill_table,
)
from plots.describe import comparability_statement, hardware_line, model_lines
from plots.figure11_prefill import plot_figure11
from plots.figure12_decode import plot_figure12
from plots.figure13_breakdown import plot_figure13
from plots.point_means import point_means, unmeasured_points
from plots.references import load_references, reference_points
from plots.results_io import ResultsInputError, report_results, result_paths
from plots.table2_accuracy import table2_markdown, write_table2

__all__ = ["ResultsInputError", "build_report", "render_report"]

REPORT_NAME = "report.md"
FIGURES_DIR = "figures"
EXAMPLES_PER_REASON = 3
NOISY_LISTED = 10  # noisy points named in the Statistics section (the rest counted)
THROUGHPUT_EXPERIMENTS = ("prefill", "decode", "breakdown")
Plotter = Callable[[pd.DataFrame, pd.DataFrame, dict[str, Any], Path], list[Path]]
FIGURES: tuple[tuple[str, Plotter], ...] = (
    ("Figure 11 - prefill throughput vs prompt length", plot_figure11),
    ("Figure 12 - decode throughput", plot_figure12),
    ("Figure 13 - performance breakdown", plot_figure13),
)


def _runs_lines(results: pd.DataFrame, provenance: dict[str, Any]) -> list[str]:
    """One line per invocation whose rows the report covers (from the rows' run ids)."""
    runs = provenance.get("runs") if isinstance(provenance.get("runs"), dict) else {}
    ids = [r for r in results.get("run_id", pd.Series(dtype=str)).unique() if str(r)]
    lines = []
    for run_id in sorted(ids):
        info = runs.get(run_id) if isinstance(runs.get(run_id), dict) else {}
        git = info.get("git") if isinstance(info.get("git"), dict) else {}
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        rows = int((results["run_id"] == run_id).sum())
        hosts = info.get("hosts") if isinstance(info.get("hosts"), list) else []
        on = f" on {', '.join(map(str, hosts))}" if len(hosts) > 1 else ""
        lines.append(
            f"  - `{run_id}`: {rows} rows{on}; started {info.get('started') or 'unknown'}, "
            f"finished {info.get('finished') or 'not recorded (interrupted?)'}; "
            f"git {git.get('commit') or 'unknown'}{dirty}"
        )
    if not ids:
        lines.append("  - rows carry no run id (written by an older version)")
    return lines


def _shard_lines(provenance: dict[str, Any]) -> list[str]:
    """Where a merged table's rows come from: its shards and hosts (hardware per host when
    the hosts differ)."""
    merged = provenance.get("shards") if isinstance(provenance.get("shards"), list) else []
    hosts = provenance.get("hosts") if isinstance(provenance.get("hosts"), dict) else {}
    if len(merged) < 2:
        return []
    lines = [
        f"- Merged from {len(merged)} shards written on {len(hosts)} host(s) "
        f"({', '.join(sorted(hosts))}); one configuration (profile and model sources)"
    ]
    machines = {
        json.dumps({k: v for k, v in hw.items() if k != "hostname"}, sort_keys=True, default=str)
        for hw in hosts.values()
        if isinstance(hw, dict)
    }
    if len(machines) > 1:
        lines.append("- The hosts' hardware differs:")
        lines += [
            f"  - {host}: {hardware_line({'hardware': hw})}" for host, hw in sorted(hosts.items())
        ]
    return lines


def _header(results: pd.DataFrame, provenance: dict[str, Any]) -> list[str]:
    run = provenance.get("run") or next(iter(results["run"].unique()), "") or "unknown"
    statuses = results["status"].value_counts()
    identity = provenance.get("identity") if isinstance(provenance.get("identity"), dict) else {}
    profile = identity.get("profile") or provenance.get("profile", "unknown")
    n_runs = len([r for r in results.get("run_id", pd.Series(dtype=str)).unique() if str(r)])
    lines = [
        f"# hybrid-moe-ae report: {run}",
        "",
        f"- Results directory `{run}`; mode: {provenance.get('mode', 'unknown')}; "
        f"profile: {profile}; the rows come from {n_runs or 'unknown'} invocation(s):",
        *_runs_lines(results, provenance),
        *_shard_lines(provenance),
        f"- {hardware_line(provenance)}",
        f"- Rows: {len(results)} ({int(statuses.get('ok', 0))} ok trials, "
        f"{int(statuses.get('not_run', 0))} not run, {int(statuses.get('failed', 0))} failed)",
    ]
    if not provenance:
        lines.append("- provenance.json is missing or unreadable: hardware and config unknown")
    lines += ["", "## Models", ""]
    lines += [f"- {line}" for line in model_lines(results)]
    lines += ["", f"**{comparability_statement(results, provenance)}**", ""]
    return lines


def _statistics(results: pd.DataFrame) -> list[str]:
    """What the tables' and figures' numbers are, and this run's noisy points."""
    points = point_means(results)
    points = points[points["experiment"].isin(THROUGHPUT_EXPERIMENTS)]
    threshold = f"{DEFAULT_CV_THRESHOLD:.0%}"
    lines = [
        "## Statistics",
        "",
        "Each measured value is the mean of the point's ok trials, shown as mean ± sd (n, CV): "
        "sd is the sample standard deviation across the trials (ddof = 1), n their number, "
        "CV = sd / mean. A single trial has no sd. Figures draw ±1 sd as error bars. A point "
        f"whose CV exceeds {threshold} is flagged ({NOISY_FLAG} in the tables, a black ring in "
        "the figures): its trials disagree too much to resolve small differences, so rerun it "
        "with more trials before reading much into it. `hmoe compare BASE NEW` calls a point "
        "SLOWER or FASTER only when its mean changed by more than `--max-slowdown` (default "
        "5 %) *and* Welch's t-test on the two runs' trials, Benjamini-Hochberg adjusted over "
        f"the compared points, is significant at `--alpha` (default {DEFAULT_ALPHA:g}); "
        "otherwise it reports no significant change, so a rerun of identical code passes. "
        "See the README's Statistics section.",
        "",
    ]
    if points.empty:
        return [*lines, "This run has no measured throughput points.", ""]
    noisy = points[points["noisy"].astype(bool)].sort_values("cv", ascending=False)
    spread = int((points["trials"] >= 2).sum())
    lines.append(
        f"This run: {len(points)} measured throughput point(s), {spread} with n >= 2 "
        f"trials; {len(noisy)} flagged with CV > {threshold}" + (":" if len(noisy) else ".")
    )
    if len(noisy):
        lines.append("")
        lines += [
            f"- {_point_label(p)}: CV {p['cv']:.0%} ({p['tokens_per_s']:.2f} ± {p['sd']:.2f}, "
            f"n={int(p['trials'])})"
            for _, p in noisy.head(NOISY_LISTED).iterrows()
        ]
        if len(noisy) > NOISY_LISTED:
            lines.append(f"- … and {len(noisy) - NOISY_LISTED} more (see the tables)")
    return [*lines, ""]


def _ratio_text(ratios: dict[str, float]) -> str:
    return "; ".join(f"{name} = {value:.3g}" for name, value in ratios.items()) or "—"


def _claims(claims: list[ClaimResult], paper: list[ClaimResult]) -> list[str]:
    rows = [
        [c.number, c.title, f"**{c.status}**", c.explanation, p.status]
        for c, p in zip(claims, paper, strict=True)
    ]
    lines = [
        "## Claims",
        "",
        "Judged only on ratios measured within this run (mean over ok trials of each point). "
        "Throughput claims (1-4) are judged on real checkpoints and on synthetic layer slices "
        "of the real shapes (ratios between systems on the same slice); on tiny synthetic "
        "stand-ins they are NOT MEANINGFUL, as accuracy is on synthetic weights. "
        "The last column applies the same code to the paper's own numbers as a sanity check.",
        "",
        md_table(["#", "claim", "status", "why", "on the paper's numbers"], rows),
        "Measured ratios:",
        "",
    ]
    lines += [f"- Claim {c.number}: {_ratio_text(c.ratios)}" for c in claims]
    return [*lines, ""]


def _point_label(point: pd.Series) -> str:
    parts = [point["experiment"], point["model"], point["system"], point["precision"]]
    if point["variant"]:
        parts.append(f"{point['stage']} {point['variant']}")
    if point["task"]:
        parts.append(point["task"])
    if pd.notna(point["prompt_tokens"]) and point["experiment"] != "accuracy":
        parts.append(f"prompt {int(point['prompt_tokens'])}")
    if pd.notna(point["deferred_experts"]) and point["deferred_experts"] > 0:
        parts.append(f"{int(point['immediate_experts'])}+{int(point['deferred_experts'])}")
    return " ".join(str(p) for p in parts if str(p))


def _partial_failures(results: pd.DataFrame) -> pd.DataFrame:
    """Failed trial rows of points that still have ok trials."""
    keys = list(POINT_KEYS)
    ok_keys = results.loc[results["status"] == STATUS_OK, keys].drop_duplicates()
    failed = results[results["status"] == "failed"]
    if failed.empty or ok_keys.empty:
        return failed.iloc[0:0]
    return failed.merge(ok_keys, on=keys, how="inner")


def _gaps(results: pd.DataFrame) -> list[str]:
    points = unmeasured_points(results)
    partial = _partial_failures(results)
    lines = ["## NOT RUN and failed points", ""]
    if points.empty and partial.empty:
        return [*lines, "Every point of this run has ok trials.", ""]
    rows = []
    for (status, error), group in points.groupby(["status", "error"], sort=True):
        examples = [_point_label(p) for _, p in group.head(EXAMPLES_PER_REASON).iterrows()]
        more = f" (+{len(group) - len(examples)} more)" if len(group) > len(examples) else ""
        rows.append(
            [
                status.replace("_", " "),
                error,
                len(group),
                ", ".join(sorted(group["experiment"].unique())),
                ", ".join(sorted(group["system"].unique())),
                "; ".join(examples) + more,
            ]
        )
    for error, group in partial.groupby("error", sort=True):
        rows.append(
            [
                "failed trials (point measured from its ok trials)",
                error or "(no reason)",
                len(group),
                ", ".join(sorted(group["experiment"].unique())),
                ", ".join(sorted(group["system"].unique())),
                _point_label(group.iloc[0]),
            ]
        )
    lines.append(
        f"{len(points)} point(s) without any ok trial, grouped by reason "
        "(points counts distinct points; NOT RUN / failed points are never plotted):"
    )
    lines += ["", md_table(["status", "reason", "points", "experiments", "systems", "e.g."], rows)]
    return lines


def render_report(
    results: pd.DataFrame,
    references: pd.DataFrame,
    provenance: dict[str, Any],
    figures: dict[str, list[Path]],
    base_dir: Path,
) -> str:
    """report.md text; ``figures`` maps a title to its written files (paths under base_dir)."""
    claims = evaluate_claims(results)
    paper_claims = evaluate_claims(reference_points(references))
    verdicts = ", ".join(f"{c.number} {c.status}" for c in claims)
    lines = _header(results, provenance)
    lines += [f"Claims at a glance: {verdicts} (details below).", "", "## Figures", ""]
    for title, paths in figures.items():
        png = next((p for p in paths if p.suffix == ".png"), None)
        pdf = next((p for p in paths if p.suffix == ".pdf"), None)
        if png is not None:
            lines.append(f"![{title}]({os.path.relpath(png, base_dir)})")
        if pdf is not None:
            lines.append(f"\n[{title} (PDF)]({os.path.relpath(pdf, base_dir)})")
        lines.append("")
    lines += _statistics(results)
    lines += [
        "## Measured vs paper",
        "",
        "Absolute numbers come from different hardware (the paper: dual Xeon 8452Y + "
        "A100 / RTX 4080); read them side by side, judge only ratios.",
        "",
        "### Prefill (Figure 11)",
        "",
        prefill_table(results, references),
        *_placement_section(results),
        "### Decode (Figure 12)",
        "",
        decode_table(results, references),
        "### Breakdown (Figure 13)",
        "",
        breakdown_table(results, references),
        "## Table 2 - accuracy with expert deferral",
        "",
        table2_markdown(results, references, provenance),
    ]
    lines += _claims(claims, paper_claims)
    lines += _gaps(results)
    return "\n".join(lines).rstrip() + "\n"


def _placement_section(results: pd.DataFrame) -> list[str]:
    """The engine's prefill placements beside llama.cpp's two settings (when measured)."""
    table = placement_table(results)
    if not table:
        return []
    return [
        "#### Prefill placements vs llama.cpp (same run)",
        "",
        "Tokens/s. The engine's own setting is the series the claims use; the placement "
        "columns are its other prefill placements (engine.runtime.placement: cpu = routed "
        "experts on the CPU as in the paper, gpu_stream = copied to the GPU and computed "
        "there, split = shared by both, auto = the cost model's choice per layer); "
        "llama.cpp with the artifact's flags and at its best settings.",
        "",
        table,
    ]


def build_report(results_dir: Path | Sequence[Path], out_dir: Path | None = None) -> Path:
    """Write figures to ``<out>/figures/`` and ``<out>/report.md``; return the report path.

    ``results_dir`` is one results directory (its shards included) or several, read as one
    table. ``<out>`` is ``out_dir`` or, by default, the (one) results directory. Raises
    ResultsInputError (a ValueError) when a results directory is missing, empty or its CSV
    unreadable, or when the shards mix configurations.
    """
    paths = result_paths(results_dir)
    if out_dir is None and len(paths) > 1:
        raise ResultsInputError(
            f"{len(paths)} results directories: say where their report goes (--out DIR)"
        )
    results = report_results(paths)
    try:
        provenance = read_provenance_set(paths)
    except HmoeError as exc:
        raise ResultsInputError(str(exc)) from exc
    references = load_references()
    out = Path(out_dir) if out_dir is not None else paths[0]
    figure_dir = out / FIGURES_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = {title: plot(results, references, provenance, figure_dir) for title, plot in FIGURES}
    write_table2(results, references, provenance, figure_dir)
    report = out / REPORT_NAME
    atomic_write_text(report, render_report(results, references, provenance, figures, out))
    return report


USAGE = "usage: hmoe report RESULTS_DIR [RESULTS_DIR ...] [--out DIR]"


def _parse(argv: list[str]) -> tuple[list[Path], Path | None] | None:
    """The results directories and --out of ``argv``; None when the arguments are unusable."""
    dirs: list[Path] = []
    out: Path | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--out" or arg.startswith("--out="):
            value = arg.split("=", 1)[1] if "=" in arg else next(args, "")
            if not value or out is not None:
                return None
            out = Path(value)
        elif arg.startswith("-"):
            return None
        else:
            dirs.append(Path(arg))
    return (dirs, out) if dirs else None


def main(argv: list[str] | None = None) -> int:
    """``hmoe report RESULTS_DIR [RESULTS_DIR ...] [--out DIR]`` (also ``python -m
    plots.report``): regenerate the figures and report.md from the results, no rerun. Several
    directories (or a parent folder of them) read as one table: shards from several hosts.
    Exit 2 on an unusable directory or shards that mix configurations."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(f"{USAGE}   (figures + report.md from the results)")
        print(
            "  several directories, or a folder holding them, read as one table (results "
            "shards from several hosts); the report goes to --out DIR (default: the one "
            "RESULTS_DIR)"
        )
        return 0
    parsed = _parse(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    dirs, out = parsed
    try:
        path = build_report(dirs, out)
    except ResultsInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build report.md for one results directory: header, figures, tables, claims, gaps.

``build_report(results_dir)`` reads results.csv + provenance.json, regenerates the four
figures/tables under ``<out>/figures/`` and writes ``<out>/report.md`` (``<out>`` defaults
to the results directory). Everything is a pure function of the results, the reference
numbers and the provenance, so a report can be rebuilt without rerunning anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.atomic_write import atomic_write_text
from experiments.schema import STATUS_OK
from plots.claims import ClaimResult, evaluate_claims
from plots.compare_tables import breakdown_table, decode_table, prefill_table
from plots.describe import comparability_statement, hardware_line, model_lines
from plots.figure11_prefill import plot_figure11
from plots.figure12_decode import plot_figure12
from plots.figure13_breakdown import plot_figure13
from plots.markdown import md_table
from plots.points import POINT_KEYS, unmeasured_points
from plots.references import load_references, reference_points
from plots.results_io import ResultsInputError, load_provenance, load_results
from plots.table2_accuracy import table2_markdown, write_table2

__all__ = ["ResultsInputError", "build_report", "render_report"]

REPORT_NAME = "report.md"
FIGURES_DIR = "figures"
EXAMPLES_PER_REASON = 3
Plotter = Callable[[pd.DataFrame, pd.DataFrame, dict[str, Any], Path], list[Path]]
FIGURES: tuple[tuple[str, Plotter], ...] = (
    ("Figure 11 - prefill throughput vs prompt length", plot_figure11),
    ("Figure 12 - decode throughput", plot_figure12),
    ("Figure 13 - performance breakdown", plot_figure13),
)


def _header(results: pd.DataFrame, provenance: dict[str, Any]) -> list[str]:
    run = provenance.get("run") or next(iter(results["run"].unique()), "") or "unknown"
    git = provenance.get("git") if isinstance(provenance.get("git"), dict) else {}
    commit = git.get("commit") or "unknown"
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    statuses = results["status"].value_counts()
    lines = [
        f"# hybrid-moe-ae report: {run}",
        "",
        f"- Run: `{run}`; mode: {provenance.get('mode', 'unknown')}; "
        f"profile: {provenance.get('profile', 'unknown')}; "
        f"started {provenance.get('started') or 'unknown'}, "
        f"finished {provenance.get('finished') or 'not recorded'}; git {commit}{dirty}",
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
    lines += [
        "## Measured vs paper",
        "",
        "Absolute numbers come from different hardware (the paper: dual Xeon 8452Y + "
        "A100 / RTX 4080); read them side by side, judge only ratios.",
        "",
        "### Prefill (Figure 11)",
        "",
        prefill_table(results, references),
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


def build_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Write figures to ``<out>/figures/`` and ``<out>/report.md``; return the report path.

    ``<out>`` is ``out_dir`` or, by default, ``results_dir``. Raises ResultsInputError (a
    ValueError) when the results directory is missing, empty or its CSV unreadable.
    """
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    provenance = load_provenance(results_dir)
    references = load_references()
    out = Path(out_dir) if out_dir is not None else results_dir
    figure_dir = out / FIGURES_DIR
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = {title: plot(results, references, provenance, figure_dir) for title, plot in FIGURES}
    write_table2(results, references, provenance, figure_dir)
    report = out / REPORT_NAME
    atomic_write_text(report, render_report(results, references, provenance, figures, out))
    return report

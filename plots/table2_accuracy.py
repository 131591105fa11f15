"""Table 2: accuracy with and without expert deferral, measured beside the paper, in Markdown.

One row per paper model x expert configuration x task (scores in %), then the average
drop per model in percentage points between k+0 and the deferral configuration. Rows from
synthetic models are marked "not meaningful (synthetic weights)".

Scores come from one rule set (the ``scoring_rules`` column; experiments.accuracy_tasks.rules):
``paper`` by default, the rules the paper's own numbers were scored with, so the two columns
compare like with like. When a run holds no ``paper``-scored rows its ``strict`` rows are
shown instead, and the text says they are not comparable with the paper's. Rows written
before the rules were recorded (empty ``scoring_rules``) were scored by what is now
``strict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from experiments.accuracy_tasks.rules import DEFAULT_RULES, PAPER, RULES, STRICT
from experiments.atomic_write import atomic_write_text
from experiments.markdown import DASH, md_table, number, percent
from experiments.schema import PAPER_MODELS, STATUS_OK
from plots.accuracy_drop import average_drops
from plots.describe import experts_label, run_model_label
from plots.point_means import point_means, unmeasured_points
from plots.references import reference_points

STEM = "table2_accuracy"
SYNTHETIC_NOTE = "not meaningful (synthetic weights)"
MATCH = ["paper_model", "immediate_experts", "deferred_experts", "task"]
SCORE_HEADERS = [
    "paper model",
    "run model",
    "precision (run / paper)",
    "experts (N+D)",
    "task",
    "measured (%)",
    "paper (%)",
    "note",
]
DROP_HEADERS = [
    "paper model",
    "run model",
    "precision (run / paper)",
    "k+0 -> N+D",
    "tasks (run / paper)",
    "measured avg drop (pp)",
    "paper avg drop (pp)",
    "note",
]


def recorded_rules(results: pd.DataFrame) -> pd.Series:
    """Each row's scoring rules ("strict" where none was recorded: rows from before)."""
    if "scoring_rules" not in results:
        return pd.Series(STRICT, index=results.index, dtype="object")
    rules = results["scoring_rules"].fillna("").astype(str).str.strip()
    return rules.where(rules != "", STRICT)


def select_rules(
    results: pd.DataFrame, preferred: str = DEFAULT_RULES
) -> tuple[pd.DataFrame, str, int]:
    """(results with the ok accuracy rows of one rule set only, that rule set, ok accuracy
    rows left out). ``preferred`` when any ok accuracy row has it, else the other one that
    has rows. Other experiments' rows and accuracy rows that did not run ok are kept."""
    if preferred not in RULES:
        raise ValueError(f"unknown scoring rules {preferred!r}")
    ok_accuracy = (results["experiment"] == "accuracy") & (results["status"] == STATUS_OK)
    rules = recorded_rules(results)
    present = set(rules[ok_accuracy])
    chosen = preferred
    if preferred not in present:
        chosen = next((r for r in RULES if r in present), preferred)
    drop = ok_accuracy & (rules != chosen)
    return results[~drop], chosen, int(drop.sum())


def rules_note(chosen: str, left_out: int) -> str:
    """One paragraph saying which rules scored the measured column."""
    if chosen == PAPER:
        text = (
            "Measured scores use the `paper` scoring rules (the artifact's own scorer, the "
            "rules of the paper's numbers)."
        )
    else:
        text = (
            f"Measured scores use the `{chosen}` scoring rules, NOT the rules of the paper's "
            "numbers (`paper`): the two columns differ by several points from the rules "
            "alone. Re-score the saved generations with `hmoe score --rules paper`."
        )
    if left_out:
        text += f" {left_out} accuracy row(s) scored with other rules are not shown."
    return text


def _model_rank(paper_model: str) -> int:
    keys = list(PAPER_MODELS)
    return keys.index(paper_model) if paper_model in keys else len(keys)


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    deferred = row["deferred_experts"]
    return (
        _model_rank(row["paper_model"]),
        row["paper_model"],
        row["run_model"],
        0 if pd.isna(deferred) else deferred,
        row["task"],
    )


def _precision(ref: pd.Series | None) -> str:
    return str(ref["precision"]) if ref is not None else DASH


def _measured_rows(results: pd.DataFrame) -> pd.DataFrame:
    rows = results[results["experiment"] == "accuracy"]
    ok = point_means(rows).assign(status="ok")
    missing = unmeasured_points(rows).assign(score=float("nan"))
    return pd.concat([ok, missing], ignore_index=True)


def _score_rows(measured: pd.DataFrame, paper: pd.DataFrame) -> list[list[object]]:
    rows: list[dict[str, Any]] = []
    matched: set[int] = set()
    for _, point in measured.iterrows():
        same = paper
        for column in MATCH:
            same = same[same[column] == point[column]]
        ref = same.iloc[0] if not same.empty else None
        if ref is not None:
            matched.add(int(same.index[0]))
        status = point["status"]
        shown = percent(point["score"]) if status == "ok" else status.replace("_", " ")
        rows.append(
            {
                **{c: point[c] for c in MATCH},
                "run_model": run_model_label(
                    point["model"],
                    bool(point["synthetic"]),
                    point["layers_run"],
                    point["layers_total"],
                ),
                "precision": f"{point['precision']} / {_precision(ref)}",
                "measured": shown,
                "paper": percent(ref["score"]) if ref is not None else DASH,
                "note": SYNTHETIC_NOTE if point["synthetic"] else "",
            }
        )
    for index, ref in paper.iterrows():
        if index in matched:
            continue
        rows.append(
            {
                **{c: ref[c] for c in MATCH},
                "run_model": DASH,
                "precision": f"{DASH} / {ref['precision']}",
                "measured": "not measured",
                "paper": percent(ref["score"]),
                "note": "",
            }
        )
    rows.sort(key=_sort_key)
    return [
        [
            r["paper_model"],
            r["run_model"],
            r["precision"],
            experts_label(r["immediate_experts"], r["deferred_experts"]),
            r["task"],
            r["measured"],
            r["paper"],
            r["note"],
        ]
        for r in rows
    ]


def _drop_rows(measured: pd.DataFrame, paper: pd.DataFrame) -> list[list[object]]:
    mine = average_drops(measured[measured["status"] == "ok"])
    theirs = average_drops(paper)
    keys = ["paper_model", "immediate_experts", "deferred_experts"]
    rows: list[dict[str, Any]] = []
    used: set[int] = set()
    for _, drop in mine.iterrows():
        same = theirs
        for column in keys:
            same = same[same[column] == drop[column]]
        ref = same.iloc[0] if not same.empty else None
        if ref is not None:
            used.add(int(same.index[0]))
        rows.append(
            {
                "paper_model": drop["paper_model"],
                "run_model": drop["model"],
                "precision": f"{drop['precision']} / {_precision(ref)}",
                "immediate_experts": drop["immediate_experts"],
                "deferred_experts": drop["deferred_experts"],
                "task": "",
                "top_k": drop["top_k"],
                "tasks": f"{int(drop['tasks'])} / {int(ref['tasks']) if ref is not None else DASH}",
                "measured": number(drop["avg_drop_pp"]),
                "paper": number(ref["avg_drop_pp"]) if ref is not None else DASH,
                "note": SYNTHETIC_NOTE if drop["synthetic"] else "",
            }
        )
    for index, ref in theirs.iterrows():
        if index in used:
            continue
        rows.append(
            {
                "paper_model": ref["paper_model"],
                "run_model": DASH,
                "precision": f"{DASH} / {ref['precision']}",
                "immediate_experts": ref["immediate_experts"],
                "deferred_experts": ref["deferred_experts"],
                "task": "",
                "top_k": ref["top_k"],
                "tasks": f"{DASH} / {int(ref['tasks'])}",
                "measured": "not measured",
                "paper": number(ref["avg_drop_pp"]),
                "note": "",
            }
        )
    rows.sort(key=_sort_key)
    return [
        [
            r["paper_model"],
            r["run_model"],
            r["precision"],
            f"{int(r['top_k'])}+0 -> "
            + experts_label(r["immediate_experts"], r["deferred_experts"]),
            r["tasks"],
            r["measured"],
            r["paper"],
            r["note"],
        ]
        for r in rows
    ]


def table2_markdown(
    results: pd.DataFrame,
    references: pd.DataFrame,
    provenance: dict[str, Any],
    rules: str = DEFAULT_RULES,
) -> str:
    """Table 2 as Markdown (scores, then average drops) from results and references,
    measured scores from the ``rules`` rule set (see ``select_rules``)."""
    results, chosen, left_out = select_rules(results, rules)
    measured = _measured_rows(results)
    paper = reference_points(references[references["experiment"] == "accuracy"])
    run = provenance.get("run", "this run")
    parts = [
        f"Scores in % (mean over ok trials; run `{run}`) beside the paper's "
        "(KTransformers SOSP'25, Table 2). Experts N+D: N routed experts computed at once, "
        f"D deferred to the next layer. {rules_note(chosen, left_out)}\n",
        md_table(SCORE_HEADERS, _score_rows(measured, paper)),
        "\nAverage accuracy drop over the tasks scored in both configurations, in percentage "
        "points (k+0 score minus N+D score; negative = deferral scored higher).\n",
        md_table(DROP_HEADERS, _drop_rows(measured, paper)),
    ]
    return "\n".join(parts)


def write_table2(
    results: pd.DataFrame,
    references: pd.DataFrame,
    provenance: dict[str, Any],
    out_dir: Path,
    rules: str = DEFAULT_RULES,
) -> Path:
    """Write table2_accuracy.md into ``out_dir`` atomically; return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{STEM}.md"
    text = "# Table 2 - accuracy with expert deferral\n\n" + table2_markdown(
        results, references, provenance, rules
    )
    return atomic_write_text(target, text)

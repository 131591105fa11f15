"""Carry the paper's numbers from the artifact's reference CSVs into the project's schema.

Reads ``figure11_prefill.csv``, ``figure12_decode.csv``, ``figure13_breakdown.csv`` and
``table2_accuracy.csv`` (the layout of ``../shared/reference/``) and writes one CSV per
figure/table with :data:`experiments.schema.REFERENCE_COLUMNS` into ``reference_results/``.
Numbers are copied as the source's text, never re-formatted, so nothing is rounded.

Run ``python -m plots.reference_import SRC_DIR [DEST_DIR]`` to regenerate the files.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from experiments.atomic_write import atomic_write
from experiments.schema import PAPER_SYSTEM_TO_PROJECT, REFERENCE_COLUMNS

SOURCE_PREFIX = "KTransformers SOSP'25"
SOURCE_SUFFIX = "(artifact reference data)"

# Accuracy rows carry no system column in the artifact: expert deferral is a feature of
# the paper's engine (KTransformers), so every Table 2 score was measured on it.
ACCURACY_SYSTEM = "ktransformers"

Row = dict[str, str]


def _source(where: str) -> str:
    return f"{SOURCE_PREFIX}, {where} {SOURCE_SUFFIX}"


def _blank_row() -> Row:
    return dict.fromkeys(REFERENCE_COLUMNS, "")


def _prefill(src: Row) -> Row:
    row = _blank_row()
    row.update(
        experiment="prefill",
        stage="prefill",
        paper_model=src["model_key"],
        model_name=src["model"],
        system=PAPER_SYSTEM_TO_PROJECT[src["system"]],
        precision=src["precision"],
        prompt_tokens=src["prompt_tokens"],
        decode_tokens="0",
        tokens_per_s=src["prefill_tokens_per_s"],
        source=_source("Figure 11"),
    )
    return row


def _decode(src: Row) -> Row:
    row = _blank_row()
    row.update(
        experiment="decode",
        stage="decode",
        paper_model=src["model_key"],
        model_name=src["model"],
        system=PAPER_SYSTEM_TO_PROJECT[src["system"]],
        precision=src["precision"],
        immediate_experts=src["immediate_experts"],
        deferred_experts=src["deferred_experts"],
        prompt_tokens=src["prompt_tokens"],
        decode_tokens=src["decode_tokens"],
        tokens_per_s=src["decode_tokens_per_s"],
        source=_source("Figure 12"),
    )
    return row


def _breakdown(src: Row) -> Row:
    row = _blank_row()
    # The ablation chain is the paper's engine with switches; "base" is the Fiddler baseline.
    system = "fiddler" if src["variant"] == "base" else "ktransformers"
    row.update(
        experiment="breakdown",
        stage=src["stage"],
        paper_model=src["model_key"],
        model_name=src["model"],
        system=PAPER_SYSTEM_TO_PROJECT[system],
        precision=src["precision"],
        variant=src["variant"],
        prompt_tokens=src["prompt_tokens"],
        decode_tokens=src["decode_tokens"],
        tokens_per_s=src["tokens_per_s"],
        source=_source("Figure 13"),
    )
    return row


def _accuracy(src: Row) -> Row:
    row = _blank_row()
    row.update(
        experiment="accuracy",
        stage="accuracy",
        paper_model=src["model_key"],
        model_name=src["model"],
        system=PAPER_SYSTEM_TO_PROJECT[ACCURACY_SYSTEM],
        precision=src["precision"],
        immediate_experts=src["immediate_experts"],
        deferred_experts=src["deferred_experts"],
        task=src["task"],
        score=src["score"],
        source=_source("Table 2"),
    )
    return row


# reference_results/<name> <- shared/reference/<name>, converted row by row.
CONVERSIONS: dict[str, Callable[[Row], Row]] = {
    "figure11_prefill.csv": _prefill,
    "figure12_decode.csv": _decode,
    "figure13_breakdown.csv": _breakdown,
    "table2_accuracy.csv": _accuracy,
}


def _write_csv_atomic(path: Path, rows: Iterable[Row]) -> None:
    def write(handle: IO[str]) -> None:
        writer = csv.DictWriter(handle, fieldnames=list(REFERENCE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write, newline="")


def convert_reference_dir(src_dir: Path, dest_dir: Path) -> list[Path]:
    """Convert every artifact reference CSV in ``src_dir`` into ``dest_dir``; return paths."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, convert in CONVERSIONS.items():
        with (src_dir / name).open(newline="", encoding="utf-8") as handle:
            rows = [convert(src) for src in csv.DictReader(handle)]
        out = dest_dir / name
        _write_csv_atomic(out, rows)
        written.append(out)
    return written


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m plots.reference_import SRC_DIR [DEST_DIR]")
    default_dest = Path(__file__).resolve().parent.parent / "reference_results"
    dest = Path(sys.argv[2]) if len(sys.argv) == 3 else default_dest
    for path in convert_reference_dir(Path(sys.argv[1]), dest):
        print(path)

"""Load the paper's reference numbers (reference_results/*.csv) as one typed DataFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.schema import REFERENCE_COLUMNS

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference_results"

# kind (= experiment) -> file in reference_results/.
REFERENCE_FILES = {
    "prefill": "figure11_prefill.csv",
    "decode": "figure12_decode.csv",
    "breakdown": "figure13_breakdown.csv",
    "accuracy": "table2_accuracy.csv",
}

NUMERIC_COLUMNS = (
    "immediate_experts",
    "deferred_experts",
    "prompt_tokens",
    "decode_tokens",
    "tokens_per_s",
    "score",
)


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REFERENCE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing reference columns {missing}")
    frame = frame[list(REFERENCE_COLUMNS)].copy()
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].replace("", None), errors="raise")
        frame[column] = frame[column].astype("float64")
    return frame


def load_references(kind: str | None = None, directory: Path | None = None) -> pd.DataFrame:
    """The paper's numbers for ``kind`` (prefill/decode/breakdown/accuracy), or all of them.

    Columns are :data:`REFERENCE_COLUMNS`; numeric columns are float64 (NaN where the paper
    does not give a value), text columns are strings ("" where empty).
    """
    base = directory if directory is not None else REFERENCE_DIR
    if kind is None:
        kinds = list(REFERENCE_FILES)
    elif kind in REFERENCE_FILES:
        kinds = [kind]
    else:
        raise ValueError(
            f"unknown reference kind {kind!r}; expected one of {list(REFERENCE_FILES)}"
        )
    frames = [_read(base / REFERENCE_FILES[k]) for k in kinds]
    return pd.concat(frames, ignore_index=True)


def reference_points(references: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows shaped like :func:`plots.point_means.point_means` output.

    The paper ran the full checkpoints, so ``model`` is the paper key, ``synthetic`` is
    False, the layer counts are NaN (no slice) and every row is one ok point of one "trial"
    (``status`` ok, empty ``error``), so claims and figures can treat it like results.
    """
    out = references.copy()
    out["status"] = "ok"
    out["error"] = ""
    out["model"] = out["paper_model"]
    out["synthetic"] = False
    out["layers_run"] = float("nan")
    out["layers_total"] = float("nan")
    out["trials"] = 1
    return out.drop(columns=["model_name", "source"])

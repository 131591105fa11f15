"""reference_results/ carries the paper's numbers exactly, in the project's schema."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from experiments.schema import PAPER_SYSTEM_TO_PROJECT, REFERENCE_COLUMNS
from plots.reference_import import convert_reference_dir
from plots.references import REFERENCE_DIR, REFERENCE_FILES, load_references, reference_points

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not present")

# reference_results column <- shared column, per file (text compared exactly).
COLUMN_MAP = {
    "figure11_prefill.csv": {
        "paper_model": "model_key",
        "model_name": "model",
        "precision": "precision",
        "prompt_tokens": "prompt_tokens",
        "tokens_per_s": "prefill_tokens_per_s",
    },
    "figure12_decode.csv": {
        "paper_model": "model_key",
        "model_name": "model",
        "precision": "precision",
        "immediate_experts": "immediate_experts",
        "deferred_experts": "deferred_experts",
        "prompt_tokens": "prompt_tokens",
        "decode_tokens": "decode_tokens",
        "tokens_per_s": "decode_tokens_per_s",
    },
    "figure13_breakdown.csv": {
        "paper_model": "model_key",
        "model_name": "model",
        "stage": "stage",
        "variant": "variant",
        "precision": "precision",
        "prompt_tokens": "prompt_tokens",
        "decode_tokens": "decode_tokens",
        "tokens_per_s": "tokens_per_s",
    },
    "table2_accuracy.csv": {
        "paper_model": "model_key",
        "model_name": "model",
        "precision": "precision",
        "immediate_experts": "immediate_experts",
        "deferred_experts": "deferred_experts",
        "task": "task",
        "score": "score",
    },
}
SOURCES = {
    "figure11_prefill.csv": "Figure 11",
    "figure12_decode.csv": "Figure 12",
    "figure13_breakdown.csv": "Figure 13",
    "table2_accuracy.csv": "Table 2",
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("name", sorted(REFERENCE_FILES.values()))
def test_files_have_reference_schema_and_source(name: str) -> None:
    path = REFERENCE_DIR / name
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == REFERENCE_COLUMNS
    rows = _rows(path)
    assert rows
    for row in rows:
        assert SOURCES[name] in row["source"]
        assert "KTransformers SOSP'25" in row["source"]
        assert row["system"] in PAPER_SYSTEM_TO_PROJECT.values()
    assert (REFERENCE_DIR / "README.md").is_file()


@needs_shared
@pytest.mark.parametrize("name", sorted(COLUMN_MAP))
def test_numbers_match_shared_reference_exactly(name: str) -> None:
    ours = _rows(REFERENCE_DIR / name)
    theirs = _rows(SHARED / name)
    assert len(ours) == len(theirs)
    for mine, src in zip(ours, theirs, strict=True):
        for column, source_column in COLUMN_MAP[name].items():
            assert mine[column] == src[source_column], (name, column, src)
        if "system" in src:
            assert mine["system"] == PAPER_SYSTEM_TO_PROJECT[src["system"]]


@needs_shared
def test_committed_files_equal_a_fresh_conversion(tmp_path: Path) -> None:
    convert_reference_dir(SHARED, tmp_path)
    for name in REFERENCE_FILES.values():
        assert (tmp_path / name).read_bytes() == (REFERENCE_DIR / name).read_bytes(), name


def test_load_references_filters_and_types() -> None:
    everything = load_references()
    assert set(everything["experiment"]) == set(REFERENCE_FILES)
    prefill = load_references("prefill")
    assert set(prefill["experiment"]) == {"prefill"}
    assert prefill["tokens_per_s"].dtype == "float64"
    row = prefill[
        (prefill["paper_model"] == "ds3")
        & (prefill["system"] == "llamacpp")
        & (prefill["precision"] == "fp16")
        & (prefill["prompt_tokens"] == 8192)
    ]
    assert row["tokens_per_s"].tolist() == [20.88]
    accuracy = load_references("accuracy")
    assert accuracy["score"].between(0, 1).all()
    assert accuracy["tokens_per_s"].isna().all()
    with pytest.raises(ValueError, match="unknown reference kind"):
        load_references("figure99")


def test_reference_points_look_like_full_real_models() -> None:
    points = reference_points(load_references("decode"))
    assert (points["model"] == points["paper_model"]).all()
    assert not points["synthetic"].any()
    assert (points["status"] == "ok").all()
    assert points["layers_run"].isna().all()

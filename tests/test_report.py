"""build_report on small results directories: header, figures, claims, NOT RUN reasons, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.errors import HmoeError
from experiments.results_store import ResultsStore
from experiments.schema import RESULT_COLUMNS
from plots.report import ResultsInputError, build_report

TINY = {
    "model": "tiny_qwen2_moe",
    "paper_model": "qw2",
    "synthetic": True,
    "layers_run": 2,
    "layers_total": 2,
    "model_source": "synthetic-tiny",
}
SLICE = {
    "model": "qw2",
    "paper_model": "qw2",
    "synthetic": True,
    "layers_run": 4,
    "layers_total": 28,
    "model_source": "synthetic-slice",
}
PROVENANCE = {
    "run": "unit-run",
    "mode": "fast",
    "profile": "cpu",
    "started": "2025-01-01T00:00:00Z",
    "finished": None,
    "git": {"commit": "abc1234", "dirty": True},
    "runs": {
        "r1": {
            "started": "2025-01-01T00:00:00Z",
            "finished": None,
            "git": {"commit": "abc1234", "dirty": True},
        }
    },
    "hardware": {
        "cpu_model": "AMD EPYC 7B13",
        "cpu_flags": {"avx2": True, "avx512f": False, "amx_bf16": False},
        "cores_physical": 2,
        "cores_logical": 2,
        "numa_nodes": 1,
        "memory_gb": 23.4,
        "gpus": [],
    },
}


def row(**fields: Any) -> dict[str, Any]:
    base = {
        "run": "unit-run",
        "run_id": "r1",
        "status": "ok",
        "trial": 0,
        "error": "",
        "variant": "",
        "task": "",
    }
    return {**base, **TINY, **fields}


def write_run(directory: Path, rows: list[dict[str, Any]], provenance: dict | None) -> Path:
    """Write rows the way the harness does plus provenance: the trials of one point (rows
    with the same ``point_id``) together, other rows one point each."""
    store = ResultsStore(directory)
    points: dict[str, list[dict[str, Any]]] = {}
    for index, fields in enumerate(rows):
        point = {"point_id": f"p{index}", "timestamp": "2025-01-01T00:00:00Z", **fields}
        points.setdefault(point["point_id"], []).append(point)
    for trials in points.values():
        store.append_point(trials)
    if provenance is not None:
        (directory / "provenance.json").write_text(json.dumps(provenance), encoding="utf-8")
    return directory


def few_rows() -> list[dict[str, Any]]:
    """Prefill on a synthetic slice (judged): engine trials 300/400/500 (CV 25 %: flagged),
    Fiddler 99/100/101 (CV 1 %), llama.cpp one trial; NOT RUN and failed points beside."""
    rows = []
    for system, precision, trials in (
        ("engine", "bf16", (300.0, 400.0, 500.0)),
        ("fiddler", "bf16", (99.0, 100.0, 101.0)),
        ("llamacpp", "fp16", (80.0,)),
    ):
        for trial, tps in enumerate(trials):
            rows.append(
                row(
                    **SLICE,
                    point_id=f"prefill-{system}",
                    experiment="prefill",
                    stage="prefill",
                    system=system,
                    precision=precision,
                    prompt_tokens=128,
                    trial=trial,
                    tokens_per_s=tps,
                )
            )
    for length in (256, 512):
        rows.append(
            row(
                **SLICE,
                experiment="prefill",
                stage="prefill",
                system="llamacpp",
                precision="fp16",
                prompt_tokens=length,
                trial=-1,
                status="not_run",
                error="llama-cpp-python is not installed",
            )
        )
    rows.append(
        row(
            experiment="decode",
            stage="decode",
            system="fiddler",
            precision="bf16",
            immediate_experts=8,
            deferred_experts=0,
            prompt_tokens=32,
            decode_tokens=16,
            trial=-1,
            status="failed",
            error="RuntimeError: out of memory",
        )
    )
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = write_run(tmp_path_factory.mktemp("run") / "unit-run", few_rows(), PROVENANCE)
    path = build_report(run)
    return run, path.read_text(encoding="utf-8")


def test_report_header_states_hardware_and_models(report: tuple[Path, str]) -> None:
    run, text = report
    assert (run / "report.md").is_file()
    assert "# hybrid-moe-ae report: unit-run" in text
    assert "mode: fast; profile: cpu" in text
    assert "come from 1 invocation(s)" in text
    assert "`r1`: " in text and "finished not recorded (interrupted?); git abc1234" in text
    assert "(uncommitted changes)" in text
    assert "Hardware: CPU AMD EPYC 7B13" in text
    assert "AVX-512F no" in text and "AMX BF16 no" in text
    assert "1 NUMA node(s)" in text and "GPUs: none" in text
    assert "synthetic tiny model" in text
    assert "synthetic models on a CPU-only machine" in text
    assert "not comparable to the paper's hardware" in text


def test_report_embeds_figures_and_tables(report: tuple[Path, str]) -> None:
    run, text = report
    for stem in ("figure11_prefill", "figure12_decode", "figure13_breakdown"):
        assert f"](figures/{stem}.png)" in text
        assert (run / "figures" / f"{stem}.png").is_file()
        assert (run / "figures" / f"{stem}.pdf").is_file()
    assert (run / "figures" / "table2_accuracy.md").is_file()
    assert "### Prefill (Figure 11)" in text
    assert "| 400.00 ± 100.00 (n=3, CV 25.0%) ⚠ CV > 10% |" in text  # flagged
    assert "| 100.00 ± 1.00 (n=3, CV 1.0%) |" in text  # steady: no flag
    assert "| 80.00 (n=1, no sd) |" in text
    assert "mean ± sd (n, CV)" in text
    assert "## Table 2" in text and "84.69" in text


def test_report_claims_and_not_run_reasons(report: tuple[Path, str]) -> None:
    _, text = report
    assert "## Claims" in text
    # prefill measured only at 128: 4x over Fiddler, 5x over llama.cpp -> below 15x
    assert "| 1 | Prefill" in text and "**FAIL**" in text and "best-case speedup 5.00x" in text
    assert "synthetic layer slice(s) of the real shapes (qw2)" in text  # claim 1 judged
    assert "Claims at a glance: 1 FAIL, 2 NOT MEANINGFUL, 3 NOT RUN" in text  # decode: tiny
    assert "**NOT RUN**" in text
    gaps = text.split("## NOT RUN and failed points", 1)[1]
    assert "| not run | llama-cpp-python is not installed | 2 | prefill | llamacpp |" in gaps
    assert "| failed | RuntimeError: out of memory | 1 | decode | fiddler |" in gaps


def test_report_with_every_row_not_run(tmp_path: Path) -> None:
    rows = [
        {**r, "status": "not_run", "trial": -1, "tokens_per_s": None, "error": "no GPU here"}
        for r in few_rows()
        if r.get("point_id", "").startswith("prefill-") and r["trial"] == 0
    ]
    run = write_run(tmp_path / "all-not-run", rows, provenance=None)
    out = tmp_path / "elsewhere"
    text = build_report(run, out).read_text(encoding="utf-8")
    assert (out / "report.md").is_file() and (out / "figures" / "figure11_prefill.pdf").is_file()
    assert "provenance.json is missing" in text
    assert "Hardware: unknown" in text
    assert "Claims at a glance: 1 NOT RUN, 2 NOT RUN, 3 NOT RUN, 4 NOT RUN, 5 NOT RUN" in text
    assert "| not run | no GPU here | 3 |" in text


@pytest.mark.parametrize(
    "content",
    ["", ",".join(RESULT_COLUMNS) + "\n", 'a,b\n"unterminated\n', "\x00\xff\xfe garbage"],
    ids=["empty-file", "header-only", "broken-quote", "binary"],
)
def test_unreadable_or_empty_results_raise_value_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "results.csv").write_bytes(content.encode("latin-1"))
    with pytest.raises(ResultsInputError) as info:
        build_report(tmp_path)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, HmoeError)
    assert not (tmp_path / "report.md").exists()


def test_missing_directory_or_csv_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ResultsInputError, match="no results.csv"):
        build_report(tmp_path)


def test_report_statistics_section_explains_spread_and_lists_noisy_points(
    report: tuple[Path, str],
) -> None:
    _, text = report
    stats = text.split("## Statistics", 1)[1].split("## Measured vs paper", 1)[0]
    assert "sample standard deviation" in stats and "CV = sd / mean" in stats
    assert "exceeds 10%" in stats and "Welch's t-test" in stats and "Benjamini-Hochberg" in stats
    assert "a rerun of identical code passes" in stats
    assert "3 measured throughput point(s), 2 with n >= 2 trials; 1 flagged with CV > 10%" in stats
    assert "- prefill qw2 engine bf16 prompt 128: CV 25% (400.00 ± 100.00, n=3)" in stats
    assert "fiddler" not in stats  # CV 1 %: not flagged

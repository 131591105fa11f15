"""Figures 11-13 and Table 2 from synthetic result rows: files, content, NOT RUN handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from plots.accuracy_drop import average_drops
from plots.figure11_prefill import plot_figure11, render_figure11
from plots.figure12_decode import plot_figure12, render_figure12
from plots.figure13_breakdown import plot_figure13, render_figure13
from plots.points import point_means
from plots.references import load_references
from plots.results_io import normalize_results
from plots.table2_accuracy import table2_markdown, write_table2

TINY = {
    "model": "tiny_qwen2_moe",
    "paper_model": "qw2",
    "synthetic": True,
    "layers_run": 2,
    "layers_total": 2,
}
SLICE = {
    "model": "ds3_slice",
    "paper_model": "ds3",
    "synthetic": True,
    "layers_run": 4,
    "layers_total": 61,
}
BOGUS = 987654.0  # a value carried by NOT RUN / failed rows that must never be drawn
PROVENANCE = {"run": "unit", "hardware": {"cpu_model": "Test CPU", "gpus": []}}


def row(model: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {"run": "unit", "status": "ok", "trial": 0, "error": "", "variant": "", "task": ""}
    return {**base, **model, **fields}


def make_results() -> pd.DataFrame:
    rows = []
    for model, scale in ((TINY, 10.0), (SLICE, 1.0)):
        for length in (32, 128, 512):
            for system, precision, factor in (
                ("engine", "bf16", 6.0),
                ("fiddler", "bf16", 1.0),
                ("llamacpp", "fp16", 2.0),
            ):
                for trial in (0, 1):
                    rows.append(
                        row(
                            model,
                            experiment="prefill",
                            stage="prefill",
                            system=system,
                            precision=precision,
                            prompt_tokens=length,
                            trial=trial,
                            tokens_per_s=scale * factor * length * (1 + trial),
                        )
                    )
    rows.append(
        row(
            TINY,
            experiment="prefill",
            stage="prefill",
            system="fiddler",
            precision="bf16",
            prompt_tokens=2048,
            status="not_run",
            trial=-1,
            tokens_per_s=BOGUS,
            error="prompt too long for budget",
        )
    )
    for system, precision, imm, dfr, tps, status in (
        ("engine", "bf16", 8, 0, 20.0, "ok"),
        ("engine", "bf16", 6, 2, 24.0, "ok"),
        ("fiddler", "bf16", 8, 0, 5.0, "ok"),
        ("llamacpp", "fp16", 8, 0, 10.0, "ok"),
        ("engine", "int4", 8, 0, BOGUS, "failed"),
    ):
        rows.append(
            row(
                TINY,
                experiment="decode",
                stage="decode",
                system=system,
                precision=precision,
                immediate_experts=imm,
                deferred_experts=dfr,
                prompt_tokens=32,
                decode_tokens=64,
                tokens_per_s=tps,
                status=status,
                error="" if status == "ok" else "kernel crashed",
            )
        )
    for variant, tps in (("base", 100.0), ("+v", 50.0), ("+m", 200.0), ("+m+d", None)):
        rows.append(
            row(
                TINY,
                experiment="breakdown",
                stage="prefill",
                system="fiddler" if variant == "base" else "engine",
                precision="bf16",
                variant=variant,
                prompt_tokens=512,
                tokens_per_s=BOGUS if tps is None else tps,
                status="not_run" if tps is None else "ok",
                error="needs AMX" if tps is None else "",
            )
        )
    for task, plain, deferred in (("gsm8k", 0.50, 0.48), ("mbpp", 0.40, 0.41)):
        for imm, dfr, score in ((8, 0, plain), (4, 4, deferred)):
            rows.append(
                row(
                    TINY,
                    experiment="accuracy",
                    stage="accuracy",
                    system="engine",
                    precision="int8",
                    immediate_experts=imm,
                    deferred_experts=dfr,
                    task=task,
                    score=score,
                )
            )
    return normalize_results(pd.DataFrame(rows))


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return make_results()


@pytest.fixture(scope="module")
def references() -> pd.DataFrame:
    return load_references()


def _drawn_values(fig: Any) -> list[float]:
    values: list[float] = []
    for ax in fig.axes:
        for line in ax.get_lines():
            values.extend(float(v) for v in line.get_ydata())
        values.extend(float(p.get_height()) for p in ax.patches if hasattr(p, "get_height"))
    return values


def _texts(fig: Any) -> str:
    parts = [fig.get_suptitle()]
    for ax in fig.axes:
        parts.append(ax.get_title())
        parts.extend(t.get_text() for t in ax.texts)
        legend = ax.get_legend()
        if legend is not None:
            parts.extend(t.get_text() for t in legend.get_texts())
    return "\n".join(parts)


def test_figures_written_as_png_and_pdf_and_regenerate(
    results: pd.DataFrame, references: pd.DataFrame, tmp_path: Path
) -> None:
    written = []
    for plot in (plot_figure11, plot_figure12, plot_figure13):
        written += plot(results, references, PROVENANCE, tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("figure11_prefill", "figure12_decode", "figure13_breakdown")
        for ext in ("png", "pdf")
    )
    for path in written:
        head = path.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if path.suffix == ".png" else head.startswith(b"%PDF")
    first = (tmp_path / "figure11_prefill.png").stat().st_mtime_ns
    again = plot_figure11(results, references, PROVENANCE, tmp_path)
    assert again[0].stat().st_mtime_ns >= first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_figure11_projection_speedup_and_no_not_run_values(
    results: pd.DataFrame, references: pd.DataFrame
) -> None:
    fig = render_figure11(results, references, PROVENANCE)
    assert BOGUS not in _drawn_values(fig)
    text = _texts(fig)
    assert "projection to 61 layers" in text
    assert "6.00x vs Fiddler (full)" in text
    assert "3.00x vs llama.cpp (full)" in text
    assert "synthetic" in text and "4/61 layers" in text
    projections = [
        line
        for ax in fig.axes
        for line in ax.get_lines()
        if "projection" in str(line.get_label()) and "engine" in str(line.get_label())
    ]
    assert projections
    measured = point_means(results, "prefill")
    engine = measured[(measured["model"] == "ds3_slice") & (measured["system"] == "engine")]
    expected = (engine.sort_values("prompt_tokens")["tokens_per_s"] * 4 / 61).tolist()
    assert list(projections[0].get_ydata()) == pytest.approx(expected)


def test_figure12_and_13_mark_not_run_without_values(
    results: pd.DataFrame, references: pd.DataFrame
) -> None:
    for render in (render_figure12, render_figure13):
        fig = render(results, references, PROVENANCE)
        assert BOGUS not in _drawn_values(fig)
        text = _texts(fig)
        assert "not run" in text or "failed" in text
    assert "engine int4 8+0" in [
        t.get_text()
        for ax in render_figure12(results, references, PROVENANCE).axes
        for t in ax.get_xticklabels()
    ]
    assert "4.80x vs Fiddler (full)" in _texts(render_figure12(results, references, PROVENANCE))


def test_panels_without_data_say_so(references: pd.DataFrame) -> None:
    only_accuracy = make_results()
    only_accuracy = only_accuracy[only_accuracy["experiment"] == "accuracy"]
    no_refs = references.iloc[0:0]
    assert "no prefill data" in _texts(render_figure11(only_accuracy, no_refs, {}))
    assert "no decode data" in _texts(render_figure12(only_accuracy, no_refs, {}))
    assert "no breakdown data" in _texts(render_figure13(only_accuracy, no_refs, {}))
    # Paper numbers but nothing measured: panels exist and say nothing was measured.
    text = _texts(render_figure12(only_accuracy, references, {}))
    assert "no measured decode points" in text


def test_table2_has_measured_paper_and_average_drop(
    results: pd.DataFrame, references: pd.DataFrame, tmp_path: Path
) -> None:
    text = table2_markdown(results, references, PROVENANCE)
    assert "| 50.00 | 84.69 |" in text  # measured gsm8k 8+0 beside the paper's qw2 score
    assert "| 48.00 | 83.40 |" in text  # measured gsm8k 4+4 beside the paper's
    assert "not meaningful (synthetic weights)" in text
    # drops: gsm8k 2.00 pp, mbpp -1.00 pp -> average 0.50 pp; paper qw2 average -0.04 pp
    assert "| 8+0 -> 4+4 | 2 / 4 | 0.50 | -0.04 |" in text
    assert "| 6+0 -> 2+4 | — / 4 | not measured | -0.35 |" in text
    path = write_table2(results, references, PROVENANCE, tmp_path)
    assert path.read_text(encoding="utf-8").endswith(text)


def test_average_drop_matches_hand_computation(references: pd.DataFrame) -> None:
    drops = average_drops(point_means(make_results(), "accuracy"))
    assert drops["avg_drop_pp"].tolist() == pytest.approx([0.5])
    assert drops["tasks"].tolist() == [2]

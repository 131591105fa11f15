"""Figures 11-13 and Table 2 from synthetic result rows: files, content, NOT RUN handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from plots.accuracy_drop import average_drops
from plots.figure11_prefill import plot_figure11, render_figure11
from plots.figure12_decode import plot_figure12, render_figure12
from plots.figure13_breakdown import plot_figure13, render_figure13
from plots.point_means import REAL, UNKNOWN, model_kinds, point_means
from plots.point_means import SLICE as SLICE_KIND
from plots.point_means import TINY as TINY_KIND
from plots.references import load_references
from plots.results_io import normalize_results
from plots.speedups import prefill_speedups, speedup_range_lines
from plots.style import NOISY_LABEL
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
    # Decode engine 8+0: trials 16 / 24 (mean 20, sd 5.66, CV 28 %: noisy); others steady.
    for system, precision, imm, dfr, trials, status in (
        ("engine", "bf16", 8, 0, (16.0, 24.0), "ok"),
        ("engine", "bf16", 6, 2, (24.0, 24.0), "ok"),
        ("fiddler", "bf16", 8, 0, (5.0,), "ok"),
        ("llamacpp", "fp16", 8, 0, (10.0,), "ok"),
        ("engine", "int4", 8, 0, (BOGUS,), "failed"),
    ):
        for trial, tps in enumerate(trials):
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
                    trial=trial,
                    tokens_per_s=tps,
                    status=status,
                    error="" if status == "ok" else "kernel crashed",
                )
            )
    # Breakdown +m: trials 150 / 250 (mean 200, CV 35 %: noisy); base 99 / 101 (CV 1.4 %).
    for variant, trials in (
        ("base", (99.0, 101.0)),
        ("+v", (50.0,)),
        ("+m", (150.0, 250.0)),
        ("+m+d", None),
    ):
        for trial, tps in enumerate(trials or (BOGUS,)):
            rows.append(
                row(
                    TINY,
                    experiment="breakdown",
                    stage="prefill",
                    system="fiddler" if variant == "base" else "engine",
                    precision="bf16",
                    variant=variant,
                    prompt_tokens=512,
                    trial=trial,
                    tokens_per_s=tps,
                    status="not_run" if trials is None else "ok",
                    error="needs AMX" if trials is None else "",
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
    assert "vs Fiddler (full): 6.00x over 3 prompt length(s)" in text
    assert "vs llama.cpp (full): 3.00x over 3 prompt length(s)" in text
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
    text = _texts(render_figure12(results, references, PROVENANCE))
    assert "vs Fiddler (full): 4.00–4.80x over 2 engine config(s)" in text


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


def _error_bars(ax: Any) -> list[tuple[float, float, float]]:
    """(x, y, half-length) of every vertical error bar drawn in ``ax``."""
    bars = []
    for container in ax.containers:
        if not isinstance(container, ErrorbarContainer):
            continue
        for collection in container.lines[2]:
            for segment in collection.get_segments():
                (x0, y0), (_, y1) = segment
                bars.append((float(x0), (y0 + y1) / 2, abs(y1 - y0) / 2))
    return bars


def _rings(ax: Any) -> list[tuple[float, float]]:
    """Points ringed as noisy in ``ax``."""
    return [
        (float(x), float(y))
        for line in ax.get_lines()
        if line.get_label() == NOISY_LABEL
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    ]


def _axes_titled(fig: Any, words: str) -> list[Any]:
    return [ax for ax in fig.axes if words in ax.get_title()]


def test_point_means_carry_sd_cv_and_noisy_flag(results: pd.DataFrame) -> None:
    decode = point_means(results, "decode").set_index(["system", "deferred_experts"])
    engine = decode.loc[("engine", 0)]
    assert engine["trials"] == 2 and engine["tokens_per_s"] == pytest.approx(20.0)
    assert engine["sd"] == pytest.approx(np.std([16.0, 24.0], ddof=1))
    assert engine["cv"] == pytest.approx(np.std([16.0, 24.0], ddof=1) / 20.0)
    assert bool(engine["noisy"]) is True
    steady = decode.loc[("engine", 2)]
    assert steady["sd"] == 0.0 and bool(steady["noisy"]) is False
    single = decode.loc[("fiddler", 0)]
    assert np.isnan(single["sd"]) and np.isnan(single["cv"]) and bool(single["noisy"]) is False


def test_figure11_separates_measured_from_paper_with_error_bars_and_rings(
    results: pd.DataFrame, references: pd.DataFrame
) -> None:
    fig = render_figure11(results, references, PROVENANCE)
    measured_axes = _axes_titled(fig, "measured:")
    paper_axes = _axes_titled(fig, "paper:")
    assert measured_axes and paper_axes
    for ax in measured_axes:  # the paper's lines never share the measured model's y-axis
        assert not [line for line in ax.get_lines() if "paper" in str(line.get_label())]
    assert all(ax.get_ylabel().startswith("paper") for ax in paper_axes if ax.get_lines())
    qw2 = next(ax for ax in measured_axes if "tiny_qwen2_moe" in ax.get_title())
    assert "tiny synthetic stand-in for Qwen2-57B-A14B (tiny_qwen2_moe)" in qw2.get_title()
    ds3 = next(ax for ax in measured_axes if "ds3_slice" in ax.get_title())
    assert "synthetic slice of DeepSeek-V3: 4 of 61 layers (ds3_slice)" in ds3.get_title()
    # Each prefill point has trials v and 2v: mean 1.5v, sd v/sqrt(2), CV 47 %.
    points = point_means(results, "prefill")
    tiny = points[points["model"] == "tiny_qwen2_moe"]
    expected = sorted(zip(tiny["prompt_tokens"], tiny["tokens_per_s"], tiny["sd"], strict=True))
    drawn = sorted(_error_bars(qw2))
    assert len(drawn) == len(expected) == 9
    for (x, y, half), (ex, ey, esd) in zip(drawn, expected, strict=True):
        assert (x, y, half) == pytest.approx((ex, ey, esd))
    assert sorted(_rings(qw2)) == sorted((float(x), float(y)) for x, y, _ in expected)
    assert NOISY_LABEL in _texts(fig)  # legend note


def test_figures_12_and_13_draw_sd_error_bars_and_ring_noisy_bars(
    results: pd.DataFrame, references: pd.DataFrame
) -> None:
    fig12 = render_figure12(results, references, PROVENANCE)
    ax = _axes_titled(fig12, "tiny synthetic stand-in")[0]
    bars = _error_bars(ax)
    # engine 8+0 (sd 5.66) has a bar; 6+2 (sd 0) and single trials have none.
    assert [y for _, y, _ in bars] == pytest.approx([20.0])
    assert [half for _, _, half in bars] == pytest.approx([np.sqrt(32.0)])
    assert [y for _, y in _rings(ax)] == pytest.approx([20.0])
    assert "CV 28%" in _texts(fig12) and NOISY_LABEL in _texts(fig12)
    fig13 = render_figure13(results, references, PROVENANCE)
    ax = _axes_titled(fig13, "prefill, measured")[0]
    assert "tiny synthetic stand-in for Qwen2-57B-A14B" in ax.get_title()
    halves = sorted(half for _, _, half in _error_bars(ax))
    assert halves == pytest.approx(sorted([np.std([99, 101], ddof=1), np.std([150, 250], ddof=1)]))
    assert [y for _, y in _rings(ax)] == pytest.approx([200.0])
    assert "CV 35%" in _texts(fig13)
    # The decode breakdown was not measured: its panel names no model.
    decode_ax = _axes_titled(fig13, "decode, measured")[0]
    assert "tiny_qwen2_moe" not in decode_ax.get_title()


def test_speedup_text_is_a_range_over_prompt_lengths_never_the_max_alone() -> None:
    rows = []
    for length, engine in ((32, 0.8), (128, 3.0), (512, 6.0)):
        for system, precision, tps in (("engine", "bf16", engine), ("fiddler", "bf16", 1.0)):
            rows.append(
                row(
                    SLICE,
                    experiment="prefill",
                    stage="prefill",
                    system=system,
                    precision=precision,
                    prompt_tokens=length,
                    tokens_per_s=tps,
                )
            )
    points = point_means(normalize_results(pd.DataFrame(rows)), "prefill")
    lines = speedup_range_lines(prefill_speedups(points), "prompt length(s)")
    assert lines == ["vs Fiddler (full): 0.80–6.00x over 3 prompt length(s)"]
    with_model = speedup_range_lines(prefill_speedups(points), "prompt length(s)", True)
    assert with_model == ["ds3_slice: vs Fiddler (full): 0.80–6.00x over 3 prompt length(s)"]
    assert speedup_range_lines(prefill_speedups(points.iloc[0:0]), "prompt length(s)") == []
    slow = points.assign(
        tokens_per_s=points["tokens_per_s"].where(points["system"] != "engine", 0.004)
    )
    assert speedup_range_lines(prefill_speedups(slow), "prompt length(s)") == [
        "vs Fiddler (full): 0.004x over 3 prompt length(s)"
    ]


def test_model_kinds_from_source_layers_or_checkpoint() -> None:
    rows = [
        row(TINY, experiment="prefill", stage="prefill", system="engine", precision="bf16"),
        row(SLICE, experiment="prefill", stage="prefill", system="engine", precision="bf16"),
        row(
            {**SLICE, "model": "qw2", "layers_run": None, "model_source": "synthetic-slice/x"},
            experiment="prefill",
            status="not_run",
        ),
        row(
            {**TINY, "model": "ds2", "synthetic": False, "layers_run": 60, "layers_total": 60},
            experiment="prefill",
        ),
        row({**TINY, "model": "never_loaded", "layers_run": None}, status="not_run"),
    ]
    kinds = model_kinds(normalize_results(pd.DataFrame(rows)))
    assert kinds == {
        "tiny_qwen2_moe": TINY_KIND,
        "ds3_slice": SLICE_KIND,
        "qw2": SLICE_KIND,
        "ds2": REAL,
        "never_loaded": UNKNOWN,
    }


def test_engine_placements_are_own_series_table_columns_and_left_out_of_claims(
    results: pd.DataFrame, references: pd.DataFrame
) -> None:
    from experiments.markdown import DASH
    from plots.compare_tables import placement_table, prefill_table

    assert placement_table(results) == ""  # no placement series: no table
    extra = []
    for length in (32, 128, 512):
        for variant, factor in (("gpu_stream", 60.0), ("auto", 30.0)):
            extra.append(
                row(
                    SLICE,
                    experiment="prefill",
                    stage="prefill",
                    system="engine",
                    variant=variant,
                    precision="bf16",
                    prompt_tokens=length,
                    tokens_per_s=factor * length,
                )
            )
        extra.append(
            row(
                SLICE,
                experiment="prefill",
                stage="prefill",
                system="llamacpp_best",
                precision="fp16",
                prompt_tokens=length,
                tokens_per_s=20.0 * length,
            )
        )
    both = normalize_results(pd.concat([results, pd.DataFrame(extra)], ignore_index=True))
    # claims compare the engine's own setting only: gpu_stream's 60x does not leak in
    pairs = prefill_speedups(point_means(both, "prefill"))
    assert pairs["engine_tps"].max() == pytest.approx(point_means(results)["tokens_per_s"].max())
    table = placement_table(both)
    lines = [line for line in table.splitlines() if line.startswith("| ds3_slice | bf16 | 512")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    # own (engine bf16 x6 mean of trials 1x,2x = 9 x 512), cpu -, gpu_stream, split -, auto,
    # llama.cpp artifact (x2 -> 3 x 512), best (20 x 512), best engine / best llama.cpp
    assert cells[3:] == ["4608.00", DASH, "30720.00", DASH, "15360.00", "1536.00", "10240.00",
                         "3.00x"]  # fmt: skip
    assert "engine gpu_stream" in prefill_table(both, references)
    fig = render_figure11(both, references, PROVENANCE)
    labels = [str(c.get_label()) for ax in fig.axes for c in ax.containers]
    labels += [str(line.get_label()) for ax in fig.axes for line in ax.get_lines()]
    assert any(label.startswith("engine gpu_stream bf16") for label in labels)
    assert not any("gpu_stream" in label and "projection" in label for label in labels)

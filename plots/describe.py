"""Plain-language descriptions of a run: its hardware, the models it ran, a point's label.

Everything here reads provenance.json (tolerating missing keys) or result rows and returns
text for figure captions and the report.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from experiments.schema import PAPER_MODELS
from plots.point_means import REAL, SLICE, TINY, is_slice, model_kinds


def _yes(flag: Any) -> str:
    return "yes" if flag is True else ("no" if flag is False else "unknown")


def _gpus(hardware: dict[str, Any]) -> list[dict[str, Any]]:
    gpus = hardware.get("gpus") or []
    return [g for g in gpus if isinstance(g, dict)]


def has_gpu(provenance: dict[str, Any]) -> bool | None:
    """True/False when provenance lists the GPUs, None when it says nothing."""
    hardware = provenance.get("hardware")
    if not isinstance(hardware, dict) or "gpus" not in hardware:
        return None
    return bool(_gpus(hardware))


def gpu_text(provenance: dict[str, Any]) -> str:
    """'none', 'unknown' or e.g. 'NVIDIA H200 (139.8 GB, driver 580.1)'."""
    hardware = provenance.get("hardware")
    if not isinstance(hardware, dict) or "gpus" not in hardware:
        return "unknown"
    parts = []
    for gpu in _gpus(hardware):
        text = str(gpu.get("name", "GPU"))
        details = []
        if isinstance(gpu.get("memory_gb"), int | float):
            details.append(f"{gpu['memory_gb']:.1f} GB")
        if gpu.get("driver"):
            details.append(f"driver {gpu['driver']}")
        parts.append(f"{text} ({', '.join(details)})" if details else text)
    return ", ".join(parts) if parts else "none"


def hardware_line(provenance: dict[str, Any]) -> str:
    """One line: CPU model, AVX-512/AMX flags, cores, NUMA nodes, memory, GPUs."""
    hardware = provenance.get("hardware")
    if not isinstance(hardware, dict):
        return "Hardware: unknown (provenance.json has no hardware section)"
    flags = hardware.get("cpu_flags") if isinstance(hardware.get("cpu_flags"), dict) else {}
    cpu = hardware.get("cpu_model") or "unknown CPU"
    flag_text = (
        f"AVX2 {_yes(flags.get('avx2'))}, AVX-512F {_yes(flags.get('avx512f'))}, "
        f"AVX-512 BF16 {_yes(flags.get('avx512_bf16'))}, AMX BF16 {_yes(flags.get('amx_bf16'))}, "
        f"AMX INT8 {_yes(flags.get('amx_int8'))}"
    )
    cores = (
        f"{hardware.get('cores_physical', '?')} physical / "
        f"{hardware.get('cores_logical', '?')} logical cores"
    )
    numa = f"{hardware.get('numa_nodes', '?')} NUMA node(s)"
    memory = hardware.get("memory_gb")
    memory_text = f"{memory:.1f} GB memory" if isinstance(memory, int | float) else "memory unknown"
    return (
        f"Hardware: CPU {cpu} ({flag_text}); {cores}; {numa}; {memory_text}; "
        f"GPUs: {gpu_text(provenance)}"
    )


def short_hardware(provenance: dict[str, Any]) -> str:
    """A caption-sized hardware summary, e.g. 'AMD EPYC ... (2 cores), GPU: none'."""
    hardware = provenance.get("hardware")
    if not isinstance(hardware, dict):
        return "hardware unknown"
    cpu = hardware.get("cpu_model") or "unknown CPU"
    cores = hardware.get("cores_logical", "?")
    return f"{cpu} ({cores} logical cores), GPU: {gpu_text(provenance)}"


def run_model_label(model: str, synthetic: bool, layers_run: float, layers_total: float) -> str:
    """'qw2_slice (synthetic, 4/28 layers)', 'tiny_qwen2_moe (synthetic)', or 'qw2'."""
    notes = []
    if synthetic:
        notes.append("synthetic")
    if is_slice(layers_run, layers_total):
        notes.append(f"{int(layers_run)}/{int(layers_total)} layers")
    return f"{model} ({', '.join(notes)})" if notes else model


def run_model_title(
    model: str, paper_model: str, kind: str, layers_run: float, layers_total: float
) -> str:
    """What was actually run for a paper model, for figure titles.

    E.g. 'tiny synthetic stand-in for Qwen2-57B-A14B (tiny_qwen2_moe)', 'synthetic slice of
    Qwen2-57B-A14B: 4 of 28 layers (qw2)', 'Qwen2-57B-A14B checkpoint (qw2)'.
    """
    name = PAPER_MODELS.get(paper_model, paper_model)
    layers = (
        f": {int(layers_run)} of {int(layers_total)} layers"
        if is_slice(layers_run, layers_total)
        else ""
    )
    if kind == TINY:
        return f"tiny synthetic stand-in for {name} ({model})"
    if kind == SLICE:
        return f"synthetic slice of {name}{layers} ({model})"
    if kind == REAL:
        return f"{name} checkpoint{layers} ({model})"
    return f"synthetic model for {name} ({model}, size not recorded)"


def run_model_titles(results: pd.DataFrame, paper_model: str) -> list[str]:
    """:func:`run_model_title` of every model in ``results`` standing for ``paper_model``."""
    kinds = model_kinds(results)
    rows = results[results["paper_model"] == paper_model]
    # Rows that never loaded the model lack layer counts: prefer the others.
    rows = rows.sort_values("layers_run", na_position="last").drop_duplicates("model")
    return [
        run_model_title(
            r["model"], paper_model, kinds[r["model"]], r["layers_run"], r["layers_total"]
        )
        for _, r in rows.sort_values("model").iterrows()
    ]


def experts_label(immediate: float, deferred: float) -> str:
    """'8+0' style expert configuration, '' when unknown."""
    if pd.isna(immediate):
        return ""
    return f"{int(immediate)}+{0 if pd.isna(deferred) else int(deferred)}"


def _model_kind(row: pd.Series) -> str:
    if not row["synthetic"]:
        source = row["model_source"] or "path not recorded"
        return f"real checkpoint ({source})"
    if is_slice(row["layers_run"], row["layers_total"]):
        return (
            f"synthetic layer slice of {int(row['layers_run'])}/{int(row['layers_total'])} "
            "layers (seeded random weights)"
        )
    return "synthetic tiny model (seeded random weights)"


def model_lines(results: pd.DataFrame) -> list[str]:
    """One line per model key in the results: what it stands for and what it is."""
    columns = ["model", "paper_model", "synthetic", "layers_run", "layers_total", "model_source"]
    # Rows that never loaded the model (NOT RUN before loading) lack layers_run: prefer others.
    models = (
        results[columns]
        .sort_values("layers_run", na_position="last")
        .drop_duplicates(subset=["model"])
    )
    lines = []
    for _, row in models.sort_values(["paper_model", "model"]).iterrows():
        stands_for = f" standing for {row['paper_model']}" if row["paper_model"] else ""
        lines.append(f"`{row['model']}`{stands_for}: {_model_kind(row)}")
    return lines


def comparability_statement(results: pd.DataFrame, provenance: dict[str, Any]) -> str:
    """One sentence on whether this run's absolute numbers compare with the paper's."""
    ran = results[results["status"] == "ok"]
    rows = ran if not ran.empty else results
    synthetic = rows["synthetic"].astype(bool)
    gpu = has_gpu(provenance)
    machine = {
        True: "a machine with a GPU",
        False: "a CPU-only machine",
        None: "a machine of unknown GPU configuration",
    }[gpu]
    if synthetic.all():
        what = "synthetic models"
    elif synthetic.any():
        what = "a mix of synthetic models and real checkpoints"
    else:
        what = "real checkpoints"
    if synthetic.all() or gpu is not True:
        tail = "throughput numbers are not comparable to the paper's hardware"
    else:
        tail = "absolute throughput still depends on this machine, unlike the paper's testbed"
    tail += "; claims are judged only on ratios measured within this run"
    return f"This run used {what} on {machine}; {tail}."

"""A user's own llama-bench executable as the llama.cpp baseline: its flags, its JSONL, its samples.

When ``bench_binary`` is set, llama.cpp runs as that binary with the paper's flags
(``-ngl 1000 -nkvo 1 -ot exps=CPU --numa distribute -mmp 0 -r R``, ``-p L -n 0`` for a
prefill, ``-p 0 -n N`` for a decode) and ``-o jsonl``. llama-bench feeds random token ids
(the harness's prompt ids cannot be passed) and does its own warm-up; each run's
repetitions (``samples_ns``) are handed out one per harness call, so the harness's trials
are llama-bench's repetitions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baselines.llamacpp.placement import Placement
from baselines.llamacpp.runtime import LlamaCppError

# llama-bench's JSONL fields kept as build/placement facts (provenance).
FACT_FIELDS = (
    "build_commit",
    "build_number",
    "cpu_info",
    "gpu_info",
    "backends",
    "model_type",
    "model_size",
    "n_threads",
    "n_gpu_layers",
    "no_kv_offload",
    "tensor_buft_overrides",
    "n_batch",
    "n_ubatch",
    "flash_attn",
)


def bench_command(
    binary: str,
    model: Path,
    placement: Placement,
    *,
    n_prompt: int,
    n_gen: int,
    repetitions: int,
    n_ubatch: int | None,
) -> list[str]:
    """llama-bench's argv for one test: the paper's flags for ``placement``."""
    cmd = [binary, "-m", str(model), "-ngl", str(placement.n_gpu_layers)]
    if placement.device == "gpu":
        cmd += ["-nkvo", "1" if placement.kv_on_cpu else "0"]
        for pattern in placement.cpu_tensor_patterns:
            cmd += ["-ot", f"{pattern}=CPU"]
        if not placement.op_offload:  # only when asked: older llama-bench lacks the flag
            cmd += ["-nopo", "1"]
    if placement.extra_buffers is False:  # only when asked, like -nopo
        cmd += ["-nr", "1"]
    cmd += ["--numa", "distribute", "-mmp", "1" if placement.use_mmap else "0"]
    cmd += ["-t", str(placement.threads), "-r", str(repetitions)]
    cmd += ["-p", str(n_prompt), "-n", str(n_gen), "-o", "jsonl"]
    if n_ubatch:  # only when asked: the paper ran llama-bench's default micro-batch
        cmd += ["-ub", str(n_ubatch), "-b", str(max(n_ubatch, n_prompt))]
    return cmd


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The test records of llama-bench's ``-o jsonl`` output (other lines are ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LlamaCppError(f"llama-bench printed a malformed JSONL line: {exc}") from exc
            if "samples_ns" in record:
                out.append(record)
    return out


@dataclass
class LlamaBench:
    """Runs llama-bench for (prompt, gen) tests and hands out its repetitions one by one."""

    binary: str
    model: Path
    placement: Placement
    repetitions: int = 3
    n_ubatch: int | None = None
    # n_ubatch None: llama-bench's default micro-batch (the paper's), or, when this is set,
    # the prompt length (one micro-batch per prefill: llama.cpp's best setting for op offload)
    ubatch_is_prompt: bool = False
    timeout_s: float = 3600.0
    facts: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    _samples: dict[tuple[int, int], deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        found = shutil.which(self.binary)
        if found is None:
            raise LlamaCppError(f"bench_binary {self.binary!r} is not an executable file")
        self.binary = found

    def seconds(self, n_prompt: int, n_gen: int) -> float:
        """One repetition's seconds for the test (runs llama-bench when none is left)."""
        key = (n_prompt, n_gen)
        queue = self._samples.setdefault(key, deque())
        if not queue:
            queue.extend(self._run(n_prompt, n_gen))
        return queue.popleft()

    def _run(self, n_prompt: int, n_gen: int) -> list[float]:
        cmd = bench_command(
            self.binary,
            self.model,
            self.placement,
            n_prompt=n_prompt,
            n_gen=n_gen,
            repetitions=self.repetitions,
            n_ubatch=n_prompt if self.ubatch_is_prompt and n_prompt > 0 else self.n_ubatch,
        )
        self.commands.append(" ".join(cmd))
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LlamaCppError(f"llama-bench ran past {self.timeout_s:.0f}s") from exc
        records = parse_jsonl(done.stdout)
        if done.returncode != 0 or not records:
            tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()][-3:]
            raise LlamaCppError(
                f"llama-bench exited {done.returncode}: {'; '.join(tail) or 'no output'}"
            )
        record = records[-1]
        self.facts = {k: record[k] for k in FACT_FIELDS if k in record}
        samples = [float(ns) / 1e9 for ns in record["samples_ns"]]
        if not samples or min(samples) <= 0:
            raise LlamaCppError(f"llama-bench reported no positive samples: {samples}")
        return samples

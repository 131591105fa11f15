"""Figure 13's ablation variants, typed and defined once (planner, figures and claims read them).

A variant's name is its switches: ``base`` is the Fiddler baseline; otherwise the engine
with ``+v`` (AVX-512 kernel) or ``+m`` (AMX kernel), and any of ``+d`` (dynamic
scheduling), ``+n`` (NUMA-aware tensor parallelism), ``+c`` (CUDA Graph), in that order.
A misspelt name fails when the config is checked (exit 2), naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.errors import HmoeError

BASE = "base"
# switch letter -> (engine option, value when on); options absent from a name are off.
SWITCHES: dict[str, tuple[str, Any]] = {
    "v": ("cpu_kernel", "avx512"),
    "m": ("cpu_kernel", "amx"),
    "d": ("scheduling", "dynamic"),
    "n": ("numa", True),
    "c": ("cuda_graph", True),
}
SWITCH_ORDER = "vmdnc"
OFF: dict[str, Any] = {
    "cpu_kernel": None,
    "scheduling": "static",
    "numa": False,
    "cuda_graph": False,
}

# The paper's sequences (Figure 13) and what claims 3 and 4 say of them: (a, relation, b)
# with "<" a slower than b, ">" a faster, "~" within the tolerance of the claim.
PREFILL_SEQUENCE = (BASE, "+v", "+m", "+m+d", "+m+d+n", "+m+d+n+c")
DECODE_SEQUENCE = (BASE, "+v", "+m", "+v+d", "+v+d+n", "+v+d+n+c")
STAGE_SEQUENCES = {"prefill": PREFILL_SEQUENCE, "decode": DECODE_SEQUENCE}
PAPER_RELATIONS = {
    "prefill": (
        ("+v", "<", BASE),
        ("+m", ">", BASE),
        ("+m+d", ">", "+m"),
        ("+m+d+n", ">", "+m+d"),
        ("+m+d+n+c", "~", "+m+d+n"),
    ),
    "decode": (
        ("+v", ">", BASE),
        ("+m", ">", BASE),
        ("+v", ">", "+m"),
        ("+v+d", ">", "+v"),
        ("+v+d+n", ">", "+v+d"),
        ("+v+d+n+c", ">", "+v+d+n"),
    ),
}


@dataclass(frozen=True)
class Variant:
    """One ablation variant: the system that runs it and the engine options it sets."""

    name: str
    system: str
    options: dict[str, Any]


def parse_variant(name: str) -> Variant:
    """The variant called ``name``; HmoeError naming what is wrong with it."""
    if name == BASE:
        return Variant(BASE, "fiddler", {})
    letters = name.split("+")
    if letters[0] != "" or len(letters) < 2 or any(len(x) != 1 for x in letters[1:]):
        raise HmoeError(f"breakdown variant {name!r}: expected 'base' or switches like '+m+d'")
    letters = letters[1:]
    unknown = [x for x in letters if x not in SWITCHES]
    if unknown:
        raise HmoeError(
            f"breakdown variant {name!r}: unknown switch(es) {', '.join('+' + x for x in unknown)}"
            f"; switches: {', '.join('+' + x for x in SWITCH_ORDER)}"
        )
    if letters != sorted(set(letters), key=SWITCH_ORDER.index):
        order = "".join("+" + x for x in sorted(set(letters), key=SWITCH_ORDER.index))
        raise HmoeError(f"breakdown variant {name!r}: write each switch once, as {order!r}")
    kernels = [x for x in letters if x in "vm"]
    if len(kernels) != 1:
        raise HmoeError(f"breakdown variant {name!r}: needs exactly one kernel, +v or +m")
    options = dict(OFF)
    for letter in letters:
        key, value = SWITCHES[letter]
        options[key] = value
    return Variant(name, "engine", options)


def check_variants(stage: str, names: Sequence[str]) -> list[Variant]:
    """Parse every variant of ``stage``'s list (HmoeError names the first bad one)."""
    return [parse_variant(str(name)) for name in names]


for _stage, _seq in STAGE_SEQUENCES.items():  # the tables above must stay consistent
    check_variants(_stage, _seq)
    assert {n for rel in PAPER_RELATIONS[_stage] for n in rel[::2]} <= set(_seq)

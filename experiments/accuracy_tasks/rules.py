"""The two named scoring rule sets: ``paper`` (the default) and ``strict``.

``paper``: exactly what the paper artifact's scorer does (its post-processing of each
completion, its test program, its metric; lines paired with problems by position; 3 s per
program), so scores can be compared with the paper's Table 2. See ../shared/reference/
SCORING.md, and the modules ``paper_code``, ``math_normalize`` and ``paper_strategy_qa``.

``strict``: the harness's own clean rules (code before ``[DONE]`` run as written with the
problem's setup code; the number or yes/no right after "The answer is"; lines paired by
``idx``; 10 s per program).
"""

from __future__ import annotations

from experiments.errors import HmoeError

PAPER = "paper"
STRICT = "strict"
RULES = (PAPER, STRICT)
DEFAULT_RULES = PAPER

PAPER_TIMEOUT_S = 3.0
"""Seconds per program under ``paper`` (the artifact's code_eval default)."""
STRICT_TIMEOUT_S = 10.0
"""Seconds per program under ``strict``."""


def check_rules(rules: str) -> str:
    """``rules`` if it names a rule set, else an HmoeError listing them."""
    if rules not in RULES:
        raise HmoeError(f"unknown scoring rules {rules!r} (choose one of: {', '.join(RULES)})")
    return rules


def program_timeout(rules: str) -> float:
    """Seconds one generated program may run under ``rules``."""
    return PAPER_TIMEOUT_S if check_rules(rules) == PAPER else STRICT_TIMEOUT_S

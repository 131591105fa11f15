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

from experiments.accuracy_tasks.paper_code import MODULE_NAME as PAPER_MODULE_NAME
from experiments.errors import HmoeError
from experiments.sandbox import run_program

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


def program_score(source: str, rules: str) -> float:
    """1.0 when the generated program ``source`` runs to its end in the sandbox under
    ``rules`` (its time limit; ``paper``: run as the artifact's ``exec`` ran it, with
    ``__name__`` = builtins), else 0.0."""
    module = PAPER_MODULE_NAME if check_rules(rules) == PAPER else "__main__"
    result = run_program(source, program_timeout(rules), module_name=module)
    return 1.0 if result.passed else 0.0

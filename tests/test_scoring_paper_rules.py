"""The ``paper`` scoring rules against the ``strict`` ones on small hand-written completions.

Every case is one whose two scores differ (or a documented quirk), and the expected
outcome under ``paper`` is worked out by hand from ../shared/reference/SCORING.md and the
artifact's scorer (ktransformers-utils/lm_eval/tasks/*.py on the sosp25-ae branch), in the
comment beside it. The code cases run in the real sandbox.
"""

from __future__ import annotations

import time

import pytest

from experiments.accuracy_tasks import get_task, paper_code, paper_strategy_qa, sympy_equal
from experiments.accuracy_tasks import math_normalize as mn
from experiments.accuracy_tasks.rules import PAPER_TIMEOUT_S, STRICT_TIMEOUT_S, program_timeout
from experiments.sandbox import run_program

# --- MBPP ------------------------------------------------------------------------------

GCD_DOC = {"task_id": 9101, "test_list": ["assert gcd_of(12, 18) == 6", "assert gcd_of(7, 5) == 1"]}
DOUBLE_DOC = {"task_id": 9102, "test_list": ["assert double_all([1, 2]) == [2, 4]"]}
TWICE_DOC = {"task_id": 9103, "test_list": ["assert twice(2) == 4", "assert twice(0) == 0"]}

MBPP_CASES = [
    pytest.param(
        GCD_DOC,
        "import math\ndef gcd_of(a, b):\n    return math.gcd(a, b)\n[DONE]",
        # [DONE] cut -> "import math\ndef gcd_of...\n"; the regex def.*?\n[^\n\s#] finds no
        # top-level line after the def (the text ends there), so the fallback keeps
        # "def " + the text after the last "def ": the import is gone -> NameError: math.
        0.0,
        1.0,
        id="imports dropped",
    ),
    pytest.param(
        DOUBLE_DOC,
        "def double_all(xs):\n    return [helper(x) for x in xs]\n"
        "def helper(x):\n    return x * 2\n[DONE]",
        # The regex matches from the first "def" to "\nd" (the second def): minus that "d",
        # only double_all is kept -> helper is undefined when the assert calls it.
        0.0,
        1.0,
        id="second function dropped",
    ),
    pytest.param(
        TWICE_DOC,
        "def twice(x):\n    def inner(y):\n        return 2 * y\n    return inner(x)\n[DONE]",
        # [DONE] is cut first, so no top-level line follows the function and the regex fails;
        # the fallback keeps "def " + the text after the LAST "def " (the nested one):
        # "def inner(y):\n        return 2 * y\n    return inner(x)\n" -> IndentationError.
        0.0,
        1.0,
        id="[DONE] cut before the first-function regex",
    ),
    pytest.param(
        TWICE_DOC,
        "def twice(x):\n    def inner(y):\n        return 2 * y\n    return inner(x)\n"
        "You are an expert Python programmer",
        # No [DONE]: the regex matches up to "\nY"; minus the "Y" the whole function is kept
        # and the prose dropped -> passes. Strict runs the prose -> SyntaxError.
        1.0,
        0.0,
        id="prose after the function, no [DONE]",
    ),
    pytest.param(
        TWICE_DOC,
        "I will define it below.\n```python\ndef twice(x):\n    return 2 * x\n```\n[DONE]",
        # The regex's "def" matches inside "define": the match is "define it below.\n`",
        # minus the backtick; the fence (and the function) are cut away -> the program is
        # "define it below." + asserts -> SyntaxError. Strict takes the fenced code -> pass.
        0.0,
        1.0,
        id="fenced code after prose containing 'def'",
    ),
    pytest.param(
        TWICE_DOC,
        "def twice(x):\n    return 2 * x\n\nif __name__ == '__main__':\n    assert twice(2) == 5\n",
        # The regex cuts at "\ni" (the guard): only the function is run -> pass. Strict runs
        # the guard as __main__ -> the wrong assert fails.
        1.0,
        0.0,
        id="__name__ guard",
    ),
    pytest.param(
        TWICE_DOC,
        "def twice(x):\n    origin = __name__\n    return 2 * x\n[DONE]",
        # Step 4 cuts before "__name__" -> "def twice(x):\n    origin =", strip, drop the
        # last 2 characters -> "def twice(x):\n    origi": calling twice -> NameError.
        0.0,
        1.0,
        id="__name__ inside the function",
    ),
]


@pytest.mark.parametrize(("doc", "completion", "paper", "strict"), MBPP_CASES)
def test_mbpp_paper_vs_strict(doc, completion, paper, strict):
    doc = {**doc, "test_setup_code": ""}
    task = get_task("mbpp")
    assert task.score(doc, completion, "paper") == paper
    assert task.score(doc, completion, "strict") == strict


def test_mbpp_post_processing_steps():
    # Step 1: "\r" removed, text after the first [DONE] dropped.
    assert paper_code.mbpp_code("def f():\r\n    return 1\r\n[DONE]x[DONE]") == (
        "def f():\n    return 1\n"
    )
    # Step 2: the match minus its last character; a "#" line does not end the function.
    assert paper_code.mbpp_code("import os\ndef f():\n    return 1\n# note\nx = 1\n") == (
        "def f():\n    return 1\n# note\n"
    )
    # Step 3: fenced block (only reached when the fence survives step 2), strip, marker out.
    assert paper_code.cut_python_fence("x\n```python\ny = 1\n```\nz") == "y = 1"
    assert paper_code.cut_python_fence("```python\ny = 1\n") == "\ny = 1"  # no closing fence
    # Step 5: "# Example usage" and everything after it.
    assert paper_code.mbpp_code("def f():\n    return 1\n    # Example usage\n    f()\n") == (
        "def f():\n    return 1"
    )
    # No "def" at all: left as is.
    assert paper_code.mbpp_code("lambda: 1") == "lambda: 1"
    # The program: code + "\n" + the asserts; no test_setup_code.
    doc = {"test_list": ["assert f() == 1", "assert f() != 2"], "test_setup_code": "import os"}
    assert paper_code.mbpp_program(doc, "def f():\n    return 1\n[DONE]") == (
        "def f():\n    return 1\n\nassert f() == 1\nassert f() != 2"
    )


# --- HumanEval -------------------------------------------------------------------------

HE_DOC = {
    "task_id": "Own/1",
    "prompt": 'def count_vowels(s: str) -> int:\n    """Count a, e, i, o, u (any case)."""\n',
    "entry_point": "count_vowels",
    "test": (
        "def check(candidate):\n"
        "    assert candidate('Hello') == 2\n"
        "    assert candidate('AEIOUxyz') == 5\n"
    ),
}

HE_CASES = [
    pytest.param(
        "return sum(c in 'aeiou' for c in s.lower())\n",
        # The stored completions start unindented: paper adds exactly 4 spaces to the first
        # (stripped) body line -> a valid body -> pass. Strict puts "return" at column 0
        # after the docstring -> IndentationError.
        1.0,
        0.0,
        id="unindented body",
    ),
    pytest.param(
        "vowels = 'aeiou'\n    return sum(c in vowels for c in s.lower())\n",
        # First line unindented, later lines indented as the model wrote them: paper gives
        # the first line 4 spaces, so both are at 4 -> pass. Strict: column 0 -> error.
        1.0,
        0.0,
        id="unindented first line, indented rest",
    ),
    pytest.param(
        "    return sum(c in 'aeiou' for c in s.lower())\nif True:\n    raise SystemExit(1)\n",
        # "\nif" cut: paper keeps only the return line -> pass. Strict runs the top-level
        # if, whose SystemExit fails the program.
        1.0,
        0.0,
        id="\\nif cut",
    ),
    pytest.param(
        "    return helper(s)\n\ndef helper(s):\n    return sum(c in 'aeiou' for c in s.lower())\n",
        # "\ndef" cut: paper drops the helper -> NameError. Strict defines it -> pass.
        0.0,
        1.0,
        id="\\ndef cut drops a helper",
    ),
    pytest.param(
        "```python\n    return sum(c in 'aeiou' for c in s.lower())\n```\nDone.",
        # Fence: from "```python", strip, marker out, cut at the next "```", strip ->
        # "return sum(...)" -> 4 spaces -> pass. Strict runs the fence -> SyntaxError.
        1.0,
        0.0,
        id="fenced body",
    ),
]


@pytest.mark.parametrize(("completion", "paper", "strict"), HE_CASES)
def test_human_eval_paper_vs_strict(completion, paper, strict):
    task = get_task("human_eval")
    assert task.score(HE_DOC, completion, "paper") == paper
    assert task.score(HE_DOC, completion, "strict") == strict


def test_human_eval_program_layout():
    body = "n = 1\n    return n\n"
    assert paper_code.human_eval_program(HE_DOC, body) == (
        HE_DOC["prompt"] + "    n = 1\n    return n\n" + "\n" + "\n" + HE_DOC["test"] + "\n"
        "check(count_vowels)"
    )


def test_paper_programs_do_not_run_as_main():
    # The artifact's code_eval exec()s with empty globals, where __name__ is "builtins":
    # a guard block never runs. The paper rules run programs under that name.
    guard = "if __name__ == '__main__':\n    raise SystemExit(3)\n"
    assert run_program(guard, 3.0, module_name=paper_code.MODULE_NAME).passed
    assert not run_program(guard, 3.0).passed
    assert paper_code.MODULE_NAME == "builtins"


def test_program_timeouts():
    assert program_timeout("paper") == PAPER_TIMEOUT_S == 3.0
    assert program_timeout("strict") == STRICT_TIMEOUT_S == 10.0
    doc = {"test_list": ["assert slow(1) == 1"], "test_setup_code": ""}
    completion = "def slow(x):\n    import time\n    time.sleep(3.5)\n    return x\n[DONE]"
    task = get_task("mbpp")
    start = time.monotonic()
    assert task.score(doc, completion, "paper") == 0.0  # killed at 3 s
    assert time.monotonic() - start < 6.0
    assert task.score(doc, completion, "strict") == 1.0  # 3.5 s < 10 s


# --- GSM8K -----------------------------------------------------------------------------

GSM8K_CASES = [
    pytest.param(
        "She earns 1,234.50 dollars. The answer is $1,234.50.",
        "1234.5",
        # After the last "he answer is": "$1,234.50." is not a float -> last number of
        # "$1234.50." (commas removed) = "1234.50"; normalised stays "1234.50" (".0+$" needs
        # only zeros) -> 1234.5 == 1234.5. Strict reads "1,234.50" too: both right.
        1.0,
        1.0,
        id="dollars and commas",
    ),
    pytest.param(
        "The answer is $1,234.50.",
        "123450",
        # Same answer 1234.5; the label must be within rel_tol 1e-4 of one of {x/100, x,
        # x*100}: x*100 = 123450 -> right under paper. Strict compares values: wrong.
        1.0,
        0.0,
        id="x100 tolerance",
    ),
    pytest.param(
        "25% of 80 is 20. The answer is 25%.",
        "0.25",
        # "25%." is not a float -> last number "25"; x/100 = 0.25 == label -> right.
        # Strict: 25 != 0.25.
        1.0,
        0.0,
        id="percentage",
    ),
    pytest.param(
        "Each child gets 3/4 of a pie. The answer is 3/4.",
        "4",
        # "3/4." is not a float -> the LAST number of it, "4" -> equals the label 4 (a
        # quirk: the fraction is never read as 0.75). Strict reads "3": wrong.
        1.0,
        0.0,
        id="fraction: last number",
    ),
    pytest.param(
        "Each child gets 3/4 of a pie. The answer is 3/4.",
        "0.75",
        # Paper: "4" vs 0.75 -> {0.04, 4, 400} -> wrong. Strict: 3 -> wrong.
        0.0,
        0.0,
        id="fraction: 0.75 is not found",
    ),
    pytest.param(
        "So she makes 18 dollars every day.",
        "18",
        # No "he answer is": the last number of the whole text, 18 -> right. Strict needs
        # "The answer is" -> wrong.
        1.0,
        0.0,
        id="no phrase: last number",
    ),
    pytest.param(
        "I do not know.",
        "18",
        # No number at all: extraction "" -> wrong under both.
        0.0,
        0.0,
        id="no number",
    ),
    pytest.param(
        "The answer is 100. Wait, the answer is 1000.",
        "1000",
        # Paper takes the text after the LAST "he answer is": "1000." -> float -> 1000.
        # Strict takes the first: 100.
        1.0,
        0.0,
        id="last phrase wins",
    ),
    pytest.param(
        "The answer is 7.\n\nQuestion: x?\nAnswer: The answer is 9.",
        "9",
        # Cut at "\n\nQuestion:" first -> "The answer is 7." -> 7: wrong under both.
        0.0,
        0.0,
        id="cut at the next question",
    ),
]


@pytest.mark.parametrize(("completion", "label", "paper", "strict"), GSM8K_CASES)
def test_gsm8k_paper_vs_strict(completion, label, paper, strict):
    task = get_task("gsm8k")
    doc = {"question": "q", "answer": f"#### {label}", "label": label}
    assert task.score(doc, completion, "paper") == paper
    assert task.score(doc, completion, "strict") == strict


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("The answer is $1,234.50.", "1234.50"),
        ("The answer is 18.00", "18"),  # trailing .0+ removed
        ("The answer is .5", "0.5"),  # a float as written; leading "." -> "0."
        ("The answer is: 42 eggs", "42"),  # not a float -> last number
        ("the answer is 3/4", "4"),
        ("The answer is 12\nbecause 3 * 4 = 12 and 5", "5"),  # not a float -> last number
        ("no number", ""),
        ("The answer is infinity", "\\infty"),  # float("infinity") works; MATH rewrite
    ],
)
def test_gsm8k_extraction(text, answer):
    assert mn.gsm8k_answer(text) == answer


def test_math_normalisation_rules():
    assert mn.strip_string("\\$18.") == "18"
    assert mn.strip_string("50\\%") == "50"
    assert mn.strip_string("10 \\text{ apples}") == "10"
    assert mn.strip_string("k = 5") == "5"
    assert mn.strip_string("3/4") == "\\frac{3}{4}"
    assert mn.strip_string("\\frac12") == "\\frac{1}{2}"
    assert mn.strip_string("90^\\circ") == "90"


def test_symbolic_comparison_is_time_limited():
    # Not plain numbers -> sympy. "10**10**10" makes simplify compute a 10^10-digit power;
    # the worker is killed at the limit and the answer is "not equal", without hanging.
    start = time.monotonic()
    assert sympy_equal.symbolic_equal_limited("10**10**10", "1", timeout_s=1.0) is False
    assert time.monotonic() - start < 60  # worker start-up (imports) + the 1 s limit
    assert sympy_equal.symbolic_equal_limited("x + x", "2*x") is True  # a fresh worker
    assert mn.math_equal("18", "\\infty") is False
    sympy_equal.stop_worker()


# --- StrategyQA ------------------------------------------------------------------------

SQA_CASES = [
    pytest.param(
        "Hamsters are prey animals. The answer is yes.",
        "yes",
        # Begin hint "answer is" -> " yes." -> " yes " -> yes. Strict needs "So the
        # answer is" -> no answer -> wrong.
        1.0,
        0.0,
        id="begin hint without 'So'",
    ),
    pytest.param(
        "So the answer is yes. I would choose no.",
        "yes",
        # Begin hints present, in list order: "answer is", "i would choose": the last one
        # wins -> text after "i would choose" = " no." -> no: wrong. Strict: yes.
        0.0,
        1.0,
        id="last begin hint in list order",
    ),
    pytest.param(
        "Yes is correct.",
        "yes",
        # No begin hint; end hint "is correct" -> text before it "yes " -> yes. Strict:
        # no "So the answer is" -> wrong.
        1.0,
        0.0,
        id="end hint",
    ),
    pytest.param(
        "No, that is correct. Yes, that is correct.",
        "no",
        # End hint "is correct": the artifact keeps the text before its FIRST occurrence
        # (split(hint)[0]) -> "no, that " -> no (SCORING.md's "last occurrence" would give
        # yes; the scorer's code decides).
        1.0,
        0.0,
        id="end hint: first occurrence",
    ),
    pytest.param(
        "I cannot tell from the facts given.",
        "no",
        # No hint, no " yes "/" no " -> the default answer "no" -> right. Strict: wrong.
        1.0,
        0.0,
        id="no yes/no -> no",
    ),
    pytest.param(
        "Thus they could. So the answer is yes.\n\nQuestion: Is it? Answer: no",
        "yes",
        # Cut at the first blank line first; then as the first case: yes, under both.
        1.0,
        1.0,
        id="cut at blank line",
    ),
]


@pytest.mark.parametrize(("completion", "label", "paper", "strict"), SQA_CASES)
def test_strategy_qa_paper_vs_strict(completion, label, paper, strict):
    task = get_task("strategy_qa")
    assert task.score({"label": label}, completion, "paper") == paper
    assert task.score({"label": label}, completion, "strict") == strict


def test_strategy_qa_yes_no_matching():
    assert paper_strategy_qa.strategy_qa_answer("YES;") == "yes"  # ";" -> space, padded
    assert paper_strategy_qa.strategy_qa_answer("yesterday, nobody came") == "no"  # default
    assert paper_strategy_qa.strategy_qa_answer("no, yes") == "yes"  # the last match

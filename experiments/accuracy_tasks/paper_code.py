"""``paper`` rules for the code tasks: the artifact's post-processing and test programs.

MBPP (in this order): drop ``\\r``; keep what precedes the first ``[DONE]``; keep the first
function only (the first match of ``def.*?\\n[^\\n\\s#]``, DOTALL, minus its last character;
else ``"def " + <text after the last "def ">`` when ``def `` occurs): imports before it and
every top-level line after it are dropped; cut a ```` ```python ```` block; cut before
``__name__`` and drop 2 more characters; cut before ``# Example usage``. The program is the
result + "\\n" + the problem's ``test_list`` joined by "\\n" (no ``test_setup_code``).

HumanEval: drop ``\\r``; the ```` ```python ```` cut; cut before ``"\\ndef"``, then before
``"\\nif"``, then before ``# Example usage`` (each followed by strip). The program is
prompt + 4 spaces + the stripped body + "\\n", then "\\n" + "\\n" + test + "\\n" +
``check(<entry_point>)``: the artifact's candidate and reference joined by "\\n".

Programs run in experiments.sandbox for 3 s (code_eval's default timeout) with ``__name__``
bound to "builtins", as under the artifact's code_eval (``exec`` with empty globals), so an
``if __name__ == "__main__":`` block does not run; exiting (``sys.exit``) fails in both.
Not reproduced: code_eval also set a few destructive functions to None inside the program
(``os.remove``, ``shutil.rmtree``, ``subprocess.Popen``, ``exit``...); the sandbox isolates
the program instead, so a program calling one of those may pass here where it failed
there. Checked on the published Qwen2 INT8 8+0 MBPP file: 262/500 = 0.524, as published.
"""

from __future__ import annotations

import re
from typing import Any

MODULE_NAME = "builtins"
"""``__name__`` of a program run under paper rules."""

_FIRST_FUNCTION = re.compile(r"def.*?\n[^\n\s#]", re.DOTALL)
_FENCE_OPEN = "```python"
_FENCE = "```"
_EXAMPLE = "# Example usage"


def cut_python_fence(completion: str) -> str:
    """From the first ```` ```python ```` on, without the marker, up to the next fence."""
    if _FENCE_OPEN in completion:
        completion = completion[completion.index(_FENCE_OPEN) :].strip()
        completion = completion.replace(_FENCE_OPEN, "")
        if _FENCE in completion:
            completion = completion[: completion.index(_FENCE)].strip()
    return completion


def _cut_example(completion: str) -> str:
    if _EXAMPLE in completion:
        completion = completion[: completion.index(_EXAMPLE)].strip()
    return completion


def mbpp_code(completion: str) -> str:
    """The code the artifact keeps of an MBPP completion."""
    completion = completion.replace("\r", "")
    if "[DONE]" in completion:
        completion = completion.split("[DONE]")[0]
    match = _FIRST_FUNCTION.search(completion)
    if match:
        completion = match.group(0)[:-1]
    elif "def " in completion:
        completion = "def " + completion.split("def ")[-1]
    completion = cut_python_fence(completion)
    if "__name__" in completion:
        completion = completion[: completion.index("__name__")].strip()[:-2]
    return _cut_example(completion)


def mbpp_program(doc: dict[str, Any], completion: str) -> str:
    """The program the artifact runs for an MBPP completion."""
    return mbpp_code(completion) + "\n" + "\n".join(doc["test_list"])


def human_eval_body(completion: str) -> str:
    """The function body the artifact keeps of a HumanEval completion (stripped)."""
    completion = cut_python_fence(completion.replace("\r", ""))
    for marker in ("\ndef", "\nif"):
        if marker in completion:
            completion = completion[: completion.index(marker)].strip()
    return _cut_example(completion).strip()


def human_eval_program(doc: dict[str, Any], completion: str) -> str:
    """The program the artifact runs for a HumanEval completion."""
    candidate = doc["prompt"] + "    " + human_eval_body(completion) + "\n"
    reference = "\n" + doc["test"] + "\n" + f"check({doc['entry_point']})"
    return candidate + "\n" + reference

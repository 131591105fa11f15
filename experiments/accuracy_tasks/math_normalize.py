"""``paper`` rules for GSM8K: the artifact's answer extraction, MATH-style normalisation and
equality test (``math_equal``), reproduced rule for rule, quirks included.

Extraction: the text after the last "he answer is" if it is a number (commas removed,
``float`` succeeds), else the last ``-?\\d*\\.?\\d+`` in it; without the phrase the last
such number of the whole completion; ``""`` when there is none. Then its first line, one
leading ":" and one trailing "." and "/" dropped, and the MATH normalisation
(``strip_string``). Comparison: the label against {x/100, x, x*100} of the answer x
(rel_tol 1e-4) when both are numbers; else string equality without brackets and braces;
else element-wise for bracketed lists; else symbolic equality (``sympy_equal``, run in a
worker process with a time limit). As in the artifact, the label is passed as
"prediction" and the extracted answer as "reference".
"""

from __future__ import annotations

import re
from math import isclose

from experiments.accuracy_tasks.sympy_equal import symbolic_equal_limited

ANSWER_PHRASE = "he answer is"
NEXT_QUESTION = "\n\nQuestion:"
_NUMBER = re.compile(r"-?\d*\.?\d+")


def is_digit(text: object) -> bool:
    """Whether ``float`` accepts ``text`` once its commas are removed."""
    try:
        float(str(text).replace(",", ""))
    except ValueError:
        return False
    return True


def _last_number(text: str) -> str:
    numbers = _NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else ""


def extract_answer(text: str) -> str:
    """The normalised final answer of a chain-of-thought completion ("" when none)."""
    if ANSWER_PHRASE in text:
        pred = text.split(ANSWER_PHRASE)[-1].strip()
        if not is_digit(pred):
            pred = _last_number(pred)
    else:
        pred = _last_number(text)
    pred = pred.split("\n")[0]
    if pred[:1] == ":":
        pred = pred[1:]
    if pred[-1:] == ".":
        pred = pred[:-1]
    if pred[-1:] == "/":
        pred = pred[:-1]
    return strip_string(pred)


def gsm8k_answer(completion: str) -> str:
    """The artifact's answer of a GSM8K completion: stripped, cut at the next question."""
    completion = completion.strip()
    if NEXT_QUESTION in completion:
        completion = completion.split(NEXT_QUESTION)[0]
    return extract_answer(completion)


def strip_string(string: str) -> str:
    """The MATH-dataset normalisation of an answer string, as the artifact applies it."""
    string = str(string).strip().replace("\n", "").rstrip(".")
    for old, new in (
        ("\\!", ""),
        ("\\ ", ""),
        ("\\\\", "\\"),
        ("\\\\", "\\"),
        ("tfrac", "frac"),
        ("dfrac", "frac"),
        ("\\left", ""),
        ("\\right", ""),
    ):
        string = string.replace(old, new)
    without_unit = re.sub(r"\\text{.*?}$", "", string).strip()
    if without_unit != "" and without_unit != string:
        string = without_unit
    for old, new in (
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\text", ""),
        ("x\\in", ""),
        ("\\%", ""),
        ("%", ""),
        (" .", " 0."),
        ("{.", "{0."),
        ("\\cdot", ""),
        ("infinity", "\\infty"),
    ):
        string = string.replace(old, new)
    if "\\infty" not in string:
        string = string.replace("inf", "\\infty")
    string = string.replace("+\\inity", "\\infty").replace("and", "").replace("\\mathbf", "")
    string = re.sub(r"\\mbox{.*?}", "", string)
    if "j" in string and "i" not in string:
        string = string.replace("j", "i")
    string = re.sub(r"(\d+)\.0+([^\d])", r"\1\2", string)
    string = re.sub(r"(\d+)\.0+$", r"\1", string)
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    sides = string.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        string = sides[1]
    string = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", string).replace(" ", "")
    return _fix_a_slash_b(_fix_fracs(string))


def _fix_fracs(string: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{72}`` -> ``\\frac{1}{72}``."""
    parts = string.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[:1] == "{":
            out += part
            continue
        if len(part) < 2:
            return string
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + b + rest if b == "{" else "{" + a + "}{" + b + "}" + rest
    return out


def _fix_a_slash_b(string: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}`` when both sides are plain integers."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    a: int | str = parts[0]
    b: int | str = parts[1]
    try:
        if "sqrt" not in a:
            a = int(a)
        if "sqrt" not in b:
            b = int(b)
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _brackets(text: str, open_: str, close: str) -> bool:
    return text.startswith(open_) and text.endswith(close)


def math_equal(prediction: str, reference: str) -> bool:
    """The artifact's ``math_equal(label, extracted answer)`` (percentages, rel_tol 1e-4)."""
    if is_digit(prediction) and is_digit(reference):
        label = float(str(prediction).replace(",", ""))
        value = float(str(reference).replace(",", ""))
        return any(isclose(x, label, rel_tol=1e-4) for x in (value / 100, value, value * 100))
    if not prediction:
        return False
    reference, prediction = str(reference).strip(), str(prediction).strip()
    pred_str, ref_str = prediction, reference
    if (_brackets(prediction, "[", "]") and not reference.startswith("(")) or (
        _brackets(prediction, "(", ")") and not reference.startswith("[")
    ):
        pred_str, ref_str = pred_str.strip("[]()"), ref_str.strip("[]()")
    for char in "{}()":
        ref_str, pred_str = ref_str.replace(char, ""), pred_str.replace(char, "")
    if pred_str == ref_str:
        return True
    if (_brackets(prediction, "[", "]") and _brackets(reference, "[", "]")) or (
        _brackets(prediction, "(", ")") and _brackets(reference, "(", ")")
    ):
        pred_parts, ref_parts = prediction[1:-1].split(","), reference[1:-1].split(",")
        if len(pred_parts) == len(ref_parts) and all(
            math_equal(p, r) for p, r in zip(pred_parts, ref_parts, strict=True)
        ):
            return True
    if not reference:  # sympy cannot parse "": the artifact's comparison is False
        return False
    return symbolic_equal_limited(prediction, reference)


def gsm8k_label(doc: dict) -> str:
    """The reference answer: ``label``, else the text after "####" of ``answer`` (Hub rows)."""
    label = doc.get("label")
    if label is None:
        return str(doc["answer"]).split("####")[-1].strip()
    return "".join(label)

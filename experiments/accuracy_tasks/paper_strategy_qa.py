"""``paper`` rules for StrategyQA: the artifact's answer hints and last " yes "/" no ".

The completion is lower-cased, stripped and cut at its first blank line. If a begin hint
occurs, the text after the last occurrence of the last occurring begin hint (list order) is
kept; else, if an end hint occurs, the text before the *first* occurrence of the last
occurring end hint (the artifact's ``split(hint)[0]``; SCORING.md says "last", the code
says first). ".", "," and ";" become spaces, a space is added at both ends, and the answer
is the last " yes " or " no "; with neither the answer is "no". Exact match with the label.
"""

from __future__ import annotations

import re

BEGIN_HINTS = (
    "answer is",
    "answer to",
    "answer choice is",
    "i would choose",
    "answer would be",
    "answer seems to be",
    "the correct answer is",
    "answer to the question is",
)
END_HINTS = (
    "is correct",
    "is the best choice",
    "is the correct answer",
    "is the correct choice",
    "answer choice is correct",
)
_YES_NO = re.compile(r"( yes | no )")


def strategy_qa_answer(completion: str) -> str:
    """ "yes" or "no" as the artifact reads a completion (never None: default "no")."""
    text = completion.lower().strip()
    if "\n\n" in text:
        text = text.split("\n\n")[0]
    begin = [hint for hint in BEGIN_HINTS if hint in text]
    end = [hint for hint in END_HINTS if hint in text]
    if begin:
        text = text.split(begin[-1])[-1]
    elif end:
        text = text.split(end[-1])[0]
    text = " " + text.replace(".", " ").replace(",", " ").replace(";", " ") + " "
    matches = _YES_NO.findall(text)
    return matches[-1].strip() if matches else "no"


def strategy_qa_label(doc: dict) -> str:
    """The reference answer: ``label`` as written, else "yes"/"no" from the boolean answer."""
    label = doc.get("label")
    if label is not None:
        return "".join(label)
    return "yes" if doc["answer"] is True else "no"

"""Final answers of chain-of-thought generations: GSM8K numbers and StrategyQA yes/no.

GSM8K: the first "The answer is" (any case, optional ":" and "$") followed by a number wins;
commas are dropped and numbers compare by value, so "1,000" == 1000, "$18." == 18 and
"18.00" == 18. No such phrase -> no answer (wrong); there is no last-number fallback.
StrategyQA: yes/no right after the first "So the answer is" (any case and punctuation,
e.g. "So the answer is: **Yes**."). No such phrase -> no answer (wrong).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = r"[-\u2212]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_GSM8K = re.compile(r"the answer is\s*:?\s*[*_]*\s*\$?\s*(" + _NUMBER + ")", re.IGNORECASE)
_YES_NO = re.compile(r"so the answer is\W*(yes|no)\b", re.IGNORECASE)


def parse_number(text: str) -> Decimal | None:
    """A number written like "1,000", "$18", "-3", "18.00", "18." as a Decimal (else None)."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace("\u2212", "-").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def gsm8k_answer(completion: str) -> Decimal | None:
    """The number after the first "The answer is" in a completion, or None."""
    match = _GSM8K.search(completion)
    return parse_number(match.group(1)) if match else None


def gsm8k_gold(doc: dict) -> Decimal:
    """The reference answer: "label", else the text after "####" in "answer"."""
    raw = doc.get("label")
    if raw is None:
        raw = str(doc["answer"]).split("####")[-1]
    value = parse_number(str(raw))
    if value is None:
        raise ValueError(f"GSM8K gold answer is not a number: {raw!r}")
    return value


def strategy_qa_answer(completion: str) -> str | None:
    """ "yes" or "no" after the first "So the answer is", or None."""
    match = _YES_NO.search(completion)
    return match.group(1).lower() if match else None


def strategy_qa_gold(doc: dict) -> str:
    """The reference answer: "label" ("yes"/"no"), else the boolean "answer"."""
    label = doc.get("label")
    if isinstance(label, str) and label.strip().lower() in ("yes", "no"):
        return label.strip().lower()
    return "yes" if doc["answer"] is True else "no"

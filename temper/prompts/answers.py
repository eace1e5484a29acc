"""Answer parsers for model outputs: numbers (GSM8K-style) and multiple-choice letters.

Both return a canonical string (or None when nothing parses), so that answers from different reasoning paths
compare equal when they mean the same thing: "$1,200.00", "1200" and "1,200 dollars" all give "1200".
"""
from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Literal

Pick = Literal["first", "last"]

_MARKERS = ("####", "\\boxed{")  # GSM8K's gold-answer marker, and LaTeX answers
# a sign only where it cannot be a range or subtraction ("10-15" is 15, not -15)
_NUMBER = re.compile(r"(?:(?<![\w)\]])(?P<sign>[-−]))?(?<![\d.])(?P<int>\d+)(?:\.(?P<frac>\d+))?"
                     r"(?:\s*/\s*(?P<den>\d+)(?![\d.]))?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def canonical_number(value: Fraction) -> str:
    """A number as a short exact string: "12", "-0.5", "1.25", or "1/3" when it has no finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_number(text: str, pick: Pick = "last") -> str | None:
    """The answer number in a model output, canonical, or None.

    After a "####" or "\\boxed{" marker only the text after the last marker counts. Thousands separators, "$",
    units and trailing periods are ignored; "-3", "2.50" and simple fractions "3/4" are read. `pick` chooses the
    first or the last number (GSM8K solutions end with the answer; Kojima's answer pass starts with it).
    """
    for marker in _MARKERS:
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            pick = "first"
    text = _THOUSANDS.sub("", text)
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return None
    m = matches[0] if pick == "first" else matches[-1]
    value = Fraction(m["int"] + ("." + m["frac"] if m["frac"] else ""))
    if m["den"] is not None:
        if int(m["den"]) == 0:
            return None
        value /= int(m["den"])
    return canonical_number(-value if m["sign"] else value)


def parse_choice(text: str, choices: str = "ABCDE", pick: Pick = "first") -> str | None:
    """The multiple-choice letter in a model output, or None.

    Tried in order, the first kind that matches wins: "(C)"; "answer is C" / "answer: C"; a lone letter followed
    by ")", ".", ":" or the end; any lone capital letter among `choices`. The article "A" at the start of a
    sentence ("A train leaves...") is a lone letter too, which is why the stricter patterns come first.
    """
    letters = re.escape(choices)
    patterns = (
        rf"\(([{letters}])\)",
        rf"answer(?:\s+is|\s*:)\s*\(?([{letters}])\b",
        rf"(?<![\w(])([{letters}])(?:[).:]|\s*$)",
        rf"\b([{letters}])\b",
    )
    for pattern in patterns:
        found = re.findall(pattern, text, flags=re.IGNORECASE if pattern.startswith("answer") else 0)
        if found:
            return (found[0] if pick == "first" else found[-1]).upper()
    return None


PARSERS = {"number": parse_number, "choice": parse_choice}

"""The answer parsers on a table of tricky model outputs."""
from __future__ import annotations

from fractions import Fraction

import pytest

from temper.prompts.answers import canonical_number, parse_choice, parse_number

NUMBERS = [
    ("The answer is 18.", "18"),
    ("She pays $1,234.50 in total.", "1234.5"),
    ("1,000,000 people came, in 2 groups", "2"),
    ("So she has 1,000,000", "1000000"),
    ("The temperature dropped to -5 degrees", "-5"),
    ("It reads 10-15 pages a day, so 15", "15"),
    ("pages 10-15", "15"),  # a range, not a negative number
    ("He spends 3.50 dollars", "3.5"),
    ("x = 2.0", "2"),
    ("3/4 of the class", "0.75"),
    ("one third is 1/3", "1/3"),
    ("#### 72", "72"),
    ("48 + 24 = 72 clips\n#### 72", "72"),
    ("The answer is \\boxed{42}, not 7", "42"),
    ("It grew by 12%.", "12"),
    ("18 eggs at $2 each is 18 * 2 = $36.\nThe answer is 36 dollars.", "36"),
    ("no digits here", None),
    ("", None),
    ("5/0", None),
]


@pytest.mark.parametrize("text, expected", NUMBERS)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


def test_parse_number_first():
    assert parse_number(" 18.\n\nQ: Tom has 3 apples", pick="first") == "18"  # Kojima's answer pass
    assert parse_number("48 clips, then 24, #### 72 and 5", pick="last") == "72"  # a marker picks what follows it


@pytest.mark.parametrize("value, text", [(Fraction(12), "12"), (Fraction(-1, 2), "-0.5"), (Fraction(5, 4), "1.25"),
                                         (Fraction(2, 3), "2/3"), (Fraction(0), "0")])
def test_canonical_number(value, text):
    assert canonical_number(value) == text


CHOICES = [
    ("The answer is (C).", "C"),
    ("Therefore, among A through E, the answer is D.", "D"),
    ("A train leaves at noon. answer: b", "B"),
    ("B) 5 apples", "B"),
    ("I pick E", "E"),
    ("A", "A"),
    ("None of them.", None),
    ("(F) is not a choice", None),
]


@pytest.mark.parametrize("text, expected", CHOICES)
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected

"""Numbers as models write them: finding them in text, parsing one, writing one canonically.

Decisions worth knowing (`parse_number` reads one token, `find_numbers` every one in a text):
- `$1,234.50`, `1,234`, `29.00` (== 29), `.5`, `-7`, `−7` (U+2212), `3/4`, `50%` (value 50, so it
  matches a gold "50"), a sentence period (`72.` is 72). Mixed numbers `1 1/2` are 3/2, but only when
  the fraction is proper, so "3 12/4" stays two numbers. Unicode fractions (`½`) and `2.5k` are not numbers.
- A comma joins digits only as thousands grouping (`\\d{1,3}(,\\d{3})+`): "3,4 and 5" is the list 3, 4, 5.
- A space joins digits as thousands grouping only where the caller asks for it (`spaced=True`, which
  answer statements do): "$9 500" and "118 000" (also with a thin or no-break space) are one number
  there, while in running text "in 2019 500 people" stays two.
- A minus is a sign only where it cannot be subtraction: "5-3" holds 3, "x = -3" holds -3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_NUMBER_PATTERN = r"""
    (?: (?P<sign>(?<![\w)\]])[-\u2212])\$?      # a sign only where it cannot be subtraction
      | \$(?P<late_sign>[-\u2212])? )?          # "$-5" as well as "-$5"
    (?<![\d.])                                  # never start inside another number
    (?: (?P<num>\d+)/(?P<den>\d+)
      | (?P<decimal>{spaced}\d{{1,3}}(?:,\d{{3}})+(?!\d)(?:\.\d+)? | \d+(?:\.\d+)? | \.\d+) )
    (?P<percent>%)?
"""
# Groups of exactly three digits after a space; never before a "/" (so "5 500/1000" stays a fraction).
_SPACED_GROUPS = r"\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?:\.\d+)?(?![\d/]) |"
_NUMBER = re.compile(_NUMBER_PATTERN.format(spaced=""), re.VERBOSE)
_NUMBER_SPACED = re.compile(_NUMBER_PATTERN.format(spaced=_SPACED_GROUPS), re.VERBOSE)
_GROUPING = re.compile(r"[ ,\u00a0\u2009\u202f]")


@dataclass(frozen=True)
class Number:
    """One number found in a text: where it is and its exact value."""

    start: int
    end: int
    value: Fraction
    plain_integer: bool  # an integer without "%" or grouping: may be the whole part of a mixed number


def find_numbers(text: str, *, spaced: bool = False) -> list[Number]:
    """Every number in `text`, left to right, with mixed numbers ("1 1/2") joined.

    `spaced`: also read space-grouped thousands ("9 500") as one number.
    """
    found: list[Number] = []
    for match in (_NUMBER_SPACED if spaced else _NUMBER).finditer(text):
        negative = bool(match.group("sign") or match.group("late_sign"))
        if match.group("num") is not None:
            numerator, denominator = int(match.group("num")), int(match.group("den"))
            if denominator == 0:
                continue
            value = Fraction(numerator, denominator)
        else:
            value = Fraction(_GROUPING.sub("", match.group("decimal")))
        # A mixed number is an integer, one space, then an unsigned proper fraction: "1 1/2".
        proper = match.group(0) == f"{match.group('num')}/{match.group('den')}" and value < 1
        if proper and found and found[-1].plain_integer and text[found[-1].end : match.start()] == " ":
            whole = found.pop()
            joined = whole.value + value if whole.value >= 0 else whole.value - value
            found.append(Number(whole.start, match.end(), joined, False))
            continue
        plain = (match.group("decimal") or "").isdigit() and not match.group("percent")
        found.append(Number(match.start(), match.end(), -value if negative else value, plain))
    return found


def parse_number(text: str) -> Fraction | None:
    """The value of `text` if it is exactly one number (see the module notes), else None."""
    candidate = text.strip().removeprefix("+")
    if candidate.endswith(".") and not candidate.endswith(".."):
        candidate = candidate[:-1]  # a sentence period: "72."
    found = find_numbers(candidate)
    if len(found) == 1 and found[0].start == 0 and found[0].end == len(candidate):
        return found[0].value
    return None


def format_number(value: Fraction) -> str:
    """Canonical text: "29", "-3.5", "0.125"; a value without a finite decimal form as "1/3"."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)  # the denominator divides 10**places, so this is exact
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"

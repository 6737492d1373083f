"""Unit words inside a rationale's equations: which to read past, and when units get mixed.

Prose rationales write arithmetic with its units: "29 species * 7 pairs per species = 203 pairs",
"$118.54 (speakers) + $106.33 (tires) = $224.87". `without_units` leaves such phrases out of a
line's tokens so the equation checker sees "29 * 7 = 203"; `mixes_units` tells when a run names two
units of one quantity ("2 hours - 10 minutes = 110 minutes"), whose arithmetic converts in the
reader's head and cannot be checked as written.
"""

from __future__ import annotations

import re

from scalingdown.teach.arithmetic import DIVIDE, SCALE_WORDS, Tok

# Words a unit phrase never holds: they join clauses or change a value ("5 apples and 3 + 2 = 5").
# Words a unit phrase never holds: they join clauses ("5 apples and 3 + 2 = 5") or scale a value
# ("5 dozen + 2"). Words like "by" or "quarters" may: "6 candies taken by Diana", "873 quarters / 3".
_NOT_UNITS = (
    frozenset(
        "and or but so then thus hence because since while which that if is are was were be been has have "
        "had will would can could should equals equal gives give makes make becomes become".split()
    )
    | SCALE_WORDS
)
_MAX_UNIT_WORDS = 6


def _unit_phrase(text: str, solid: list[Tok], index: int) -> int:
    """How many tokens after the number solid[index] are a unit phrase inside an equation, or 0.

    Prose rationales write "29 species * 7 pairs per species = 203 pairs", "$118.54 (speakers) +
    $106.33 (tires) = $224.87", "63 aircrafts - 49 aircrafts = 14": the words between a number and the
    next operator, "=" or ")" name what it counts, so the equation is read without them. The phrase is
    spaced from its number ("3x + 2" holds a variable) or a rate's "/unit" ("2 loads/week * 52
    weeks/year = 104 loads/year"), and holds no word that joins clauses or scales.
    """
    if not (text[solid[index].end : solid[index].end + 1].isspace() or _per_unit(solid, index + 1)):
        return 0
    at, words = index + 1, 0
    while at < len(solid):
        tok = solid[at]
        if _per_unit(solid, at):  # "loads/week", "$0.15/gallon": the unit of a rate
            group, at = [solid[at + 1]], at + 2
        elif words and _hyphen(solid, at):  # "t-shirts", "grown-ups": one word
            group, at = [solid[at + 1]], at + 2
        elif tok.kind == "lp":  # a parenthesised aside: "(speakers)"
            close = at + 1
            while close < len(solid) and solid[close].kind == "word":
                close += 1
            if close == at + 1 or close >= len(solid) or solid[close].kind != "rp":
                break
            group = solid[at + 1 : close]
            at = close + 1
        elif tok.kind == "word" and _times_after_unit(text, solid, at):
            tok.kind = "op"  # "2 miles/hour x 3 hours": the x after a unit multiplies
            break
        elif tok.kind == "word":
            group, at = [tok], at + 1
        else:
            break
        for word in group:
            lowered = word.text.lower()
            if lowered in _NOT_UNITS or len(lowered) == 1:
                return 0  # a single letter is a variable ("70 T + 30 S = 810"), not a unit
            if not lowered.isalpha():
                return 0  # "000" in "$350 000", "0900": digits the tokenizer kept as a word
        words += len(group)
        if words > _MAX_UNIT_WORDS:
            return 0
    if words == 0 or at >= len(solid) or solid[at].kind not in ("op", "eq", "rp"):
        return 0
    if solid[at].text in DIVIDE and solid[at - 1].end == solid[at].start:
        return 0  # "7 students/5 minutes": a rate, not a division of counts
    return at - index - 1


def _times_after_unit(text: str, solid: list[Tok], at: int) -> bool:
    """Whether solid[at] is a spaced "x" between a unit and a number ("2 miles/hour x 3 hours")."""
    tok = solid[at]
    return (
        tok.text in ("x", "X")
        and text[tok.start - 1 : tok.start].isspace()
        and text[tok.end : tok.end + 1].isspace()
        and at + 1 < len(solid)
        and solid[at + 1].kind == "num"
    )


def _hyphen(solid: list[Tok], at: int) -> bool:
    """Whether solid[at] is a "-" glued between two words ("t-shirts")."""
    if at + 1 >= len(solid) or not at:
        return False
    before, dash, after = solid[at - 1], solid[at], solid[at + 1]
    return (
        dash.text == "-"
        and before.kind == "word" == after.kind
        and before.end == dash.start
        and dash.end == after.start
    )


def _per_unit(solid: list[Tok], at: int) -> bool:
    """Whether solid[at] is a "/" glued between what precedes it and a word: "loads/week", "$3/load"."""
    if at + 1 >= len(solid) or not at:
        return False
    slash, word = solid[at], solid[at + 1]
    return (
        slash.text in DIVIDE
        and word.kind == "word"
        and solid[at - 1].end == slash.start
        and slash.end == word.start
    )


def without_units(text: str, solid: list[Tok]) -> tuple[list[Tok], list[int]]:
    """`solid` with every unit phrase inside an equation left out (see `_unit_phrase`), and the
    text positions where phrases were left out."""
    kept, dropped, index = [], [], 0
    while index < len(solid):
        kept.append(solid[index])
        skip = _unit_phrase(text, solid, index) if solid[index].kind == "num" else 0
        if skip:
            dropped.append(solid[index + 1].start)
        index += 1 + skip
    return kept, dropped


# Units of one quantity: a run whose left-out phrases name two of one family ("2 hours - 10 minutes
# = 110 minutes", "$5 - 25 cents = $4.75") converts between them in the reader's head, not on paper.
_UNIT_FAMILIES = {
    unit: family
    for family, units in {
        "time": "second minute hour day week month year",
        "money": "$ cent",
        "length": "inch foot feet yard mile meter metre kilometer km centimeter cm millimeter mm",
        "weight": "ounce oz pound lb gram kilogram kg ton",
        "volume": "cup pint quart gallon liter litre milliliter ml",
    }.items()
    for unit in units.split()
}
_UNIT_WORD = re.compile(r"\$|[^\W\d_]+")


def mixes_units(text: str) -> bool:
    """Whether `text` names two different units of one family (plurals folded; feet is foot)."""
    seen: dict[str, str] = {}
    for word in _UNIT_WORD.findall(text.lower()):
        unit = {"feet": "foot", "dollar": "$", "dollars": "$"}.get(word, word)
        unit = unit if unit in _UNIT_FAMILIES else unit.removesuffix("s").removesuffix("e")
        unit = unit if unit in _UNIT_FAMILIES else word.removesuffix("s")
        family = _UNIT_FAMILIES.get(unit)
        if family is not None and seen.setdefault(family, unit) != unit:
            return True
    return False

"""The arithmetic a rationale states, recomputed: `check_equations`.

`check_equations` reads the equations of a rationale with a small grammar and recomputes them
exactly (`Fraction`, correct precedence, no `eval`):

- numbers: `12`, `1,250`, `3.5`, `.5`, `$12`, `20%` (also "20 percent"), mixed numbers `1 1/2`;
- operators: `+`, `-` (also `−`, `–`), `x`/`X`/`×`/`*`/`·` (a standalone `x` only: "2x" and "x" are
  variables, and a chain with a variable fails to parse and is skipped), `/`/`÷`, parentheses, and
  `of` after a percentage or a fraction ("20% of 50", "1/4 of 20");
- chains: `3 + 4 x 2 = 11`, `5 + 3 = 8 x 2 = 16` (a run-on chain: "= 8 x 2" continues from 8, so a
  side may equal the next side's first number), GSM8K's `48/2 = <<48/2=24>>24` (the annotation is
  checked on its own and the visible text `48/2 = 24` too), LaTeX's `\\times`, `\\cdot`, `\\div`;
- units inside an equation, as prose rationales write it: "29 species * 7 pairs per species = 203",
  "$118.54 (speakers) + $106.33 (tires) = $224.87" are read without the words (a phrase of at most six
  words, spaced from its number, without a word that joins clauses or scales, and not a rate written
  "7 students/5 minutes"; a single letter is a variable); a run that names two units of one quantity
  ("2 hours - 10 minutes = 110 minutes", "$5 - 25 cents") may convert in the reader's head, so an
  equation of it that fails is skipped, not reported (one that holds still counts);
- a named quantity over several lines: "Total = (8 - 5) + 30" / "Total = 3 + 30" / "Total = 33" is
  the chain "(8 - 5) + 30 = 3 + 30 = 33", and a line that starts with "=" continues the line before.

`EquationCheck.results` lists the value each checked chain ends at, in reading order: the last one
is the rationale's last computed value, which verification compares with its stated answer.

A stated result may round the exact value to its own number of decimals, up, down or to nearest
(`10/3 = 3.33`, `7/2 = 4` buses), but not when the exact value fits those decimals (`7 x 8 = 54`).
A percentage counts as a fraction, as its plain number, or after + and - as a share of what precedes
it (`5/20 x 100 = 25%`, `20% of 50 = 10`, `100% - 20% = 80%`, `$800 - 10% = $720`).

Misreading a correct rationale as wrong is worse than missing an error, so anything that is not
clearly arithmetic is skipped: sides with a variable ("x = 5", "2y + 3 = 7"), times and ratios
("3:30"), dates and ranges ("2020-2021", "5-10"), powers ("5^2"), function calls ("sqrt(16)"),
a side whose first number belongs to a word before it ("half of 10 + 2", "3 times 4 + 2", "2 and
1/2 x 4", "Week 2 + ..."), a result followed by a scale word ("= 1.5 million",
"= 18 000"), a bare number as the first side (often a label), and an equation between two bare
numbers ("36 = 3", often a unit change whose units were left out). A result followed by "cents" may
state dollars x 100. Two more readings excuse sloppy notation that is right as meant: "a/b*c" as
a/(b*c) and "a+b /c+d" as (a+b)/(c+d) when a side has one slash; "25 / 1/3" reads the unspaced 1/3
as one number.

Measured (see tests/teach/test_verify.py and benchmarks/README.md): GSM8K's gold rationales are
free of flagged equations at 99.85% (test) and 99.65% (train), with and without calculator
annotations; the 28 flagged state a wrong equation as written ("8*3 = 240", "1550 cubic inches / 50
cubic inches/pump = 29 pumps"). Of 1,055 real LLM rationales, 12.1% are flagged, 126 of them among
the 424 with a wrong answer and 2 among the 631 with a right one. Reading units and named quantities
raised the equations checked on SVAMP's 3,076 prose rationales from 1,139 to 3,872 (rationales
with none: 2,141 -> 94) and on GSM8K test's stripped gold from 3,576 to 4,267.

"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

from scalingdown.data.numbers import format_number
from scalingdown.teach.arithmetic import (
    DIVIDE,
    JOINING_WORDS,
    MINUS,
    SCALE_WORDS,
    Parser,
    Tok,
    evaluate,
    first_literal,
    matches_stated,
    side_values,
    tokenize,
)
from scalingdown.teach.units import mixes_units, without_units

_ANNOTATION = re.compile(r"<<([^<>\n]*)>>")
_LATEX = [
    (re.compile(r"\\times|\\cdot"), " x "),
    (re.compile(r"\\div"), " / "),
    (re.compile(r"\\[()\[\]]|\\left|\\right|\\,|\\!"), " "),
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\\[dt]?frac\{(\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}"), r"\1/\2"),
    (re.compile(r"\*\*|__"), "  "),  # markdown bold, so "**5 + 3 = 8**" is not read as "* * 5"
]
# A number right after one of these is a label, not a quantity: "Week 2 + Week 3", "day 1 * 2".
_LABEL_WORDS = frozenset(
    "day week month year step round level page chapter part grade room no number".split()
)
_FRACTION_WORDS = frozenset("half halves quarter quarters third thirds fourth fifth tenth".split())
_OPERATOR_WORDS = frozenset("x times plus minus".split())
# An immediately preceding character that lets a side start: not a letter, digit, "^", "." or ":".
_LEFT_OPEN = set("([{\"'“‘*,;:>")


def _normalise(text: str) -> str:
    for pattern, replacement in _LATEX:
        text = pattern.sub(replacement, text)
    return text


def _shown(value: Fraction, decimals: int) -> str:
    text = format_number(value)
    if "/" in text or ("." in text and len(text.split(".")[1]) > max(2, decimals + 1)):
        text = format_number(Fraction(round(value, max(2, decimals + 1))))
    return text


def _check_pair(left, right, *, cents: bool = False) -> tuple[bool, Fraction]:
    """(holds, exact value to report) for `left = right`; raises ZeroDivisionError on x/0.

    `cents`: the stated result is followed by "cents", so a value in dollars may be stated x 100.
    """
    if right[0] == "lit":
        values = side_values(left) | ({v * 100 for v in side_values(left)} if cents else set())
        return any(matches_stated(v, right) for v in values), evaluate(left)
    if left[0] == "lit":  # "... = 24 = 48/2"
        return any(matches_stated(v, left) for v in side_values(right)), evaluate(right)
    left_values = side_values(left)
    if left_values & side_values(right):
        return True, evaluate(left)
    first = first_literal(right)  # run-on: "5 + 3 = 8 + 2 = 10"
    holds = first is not None and any(matches_stated(v, first) for v in left_values)
    return holds, evaluate(left)


def _side_text(text: str, tokens: list[Tok]) -> str:
    return " ".join(text[tokens[0].start : tokens[-1].end].split())


def _first_side_trusted(text: str, solid: list[Tok], first: int) -> bool:
    """Whether a run's first side starts where its expression starts, not inside a phrase."""
    head = solid[first]
    if head.kind == "op":  # "3x +4 - 4", "apples + 3": the expression began before, in words
        return False
    before = text[: head.start]
    if before and not (before[-1].isspace() or before[-1] in _LEFT_OPEN):
        return False  # "sqrt(16)", "5^2", "A5"
    stripped = before.rstrip(" \t")
    if stripped[-2:-1].isdigit() and (stripped[-1:] == "," or before[-1:] == ":"):
        return False  # "14, 400", "3:30" (but "gives away 17: 20 - 17 = 3" is fine)
    if stripped[-1:] == "." and not stripped[-2:-1].isalpha():
        return False  # ". 84" (a decimal with a stray space), "5. 3 + 2"
    previous = solid[first - 1] if first > 0 else None
    if previous is None or previous.kind != "word":
        return True
    at = next((i for i in range(first - 1, -1, -1) if solid[i].kind != "word"), None)
    if at is not None and solid[at].kind == "op" and text[solid[at].end : solid[at].end + 1] == " ":
        return False  # "25 classmates + his 1 teacher + 1 = 27" began before the words ("8-year-old" did not)
    if at and solid[at].kind == "num" and solid[at - 1].kind == "op" and _spaced(text, solid[at - 1]):
        return False  # "add 20 + 10 decorations to the 29 + 24 already up = 83" (not "1/3 pound is $10")
    word = previous.text.lower()
    earlier = solid[first - 2] if first >= 2 else None
    if word in JOINING_WORDS or word in _LABEL_WORDS:
        return False  # "3 times 4 + 2", "Week 2 + ..."
    if word == "and" and earlier is not None and earlier.kind == "num" and _fraction_at(solid, first):
        return False  # "2 and 1/2 x 4" (but "8 and 8 x 2 = 16" is an equation)
    return not (
        word == "of"
        and earlier is not None
        and (earlier.kind == "num" or earlier.text.lower() in _FRACTION_WORDS)
    )  # "half of 10 + 2"


def _last_side_trusted(text: str, solid: list[Tok], last: int) -> bool:
    """Whether a run's last side ends where its number ends: not "3:45", "5^2", "3x", "18 000", "1.5 m"."""
    end = solid[last].end
    after = text[end : end + 2]
    if after[:1].isalpha() or after[:1] in ("^", "²", "³", "!") or (after[:1] == ":" and after[1:].isdigit()):
        return False
    following = solid[last + 1] if last + 1 < len(solid) else None
    if following is None or following.kind != "word":
        return True
    word = following.text.lower()
    then_token = solid[last + 2] if last + 2 < len(solid) else None
    if word in _OPERATOR_WORDS and (then_token is None or then_token.kind not in ("num", "word")):
        return True  # "4*21 = 84 times." counts times; "= 2 times 5" and "= 10 x S2" multiply
    if word[:1].isdigit() or word in SCALE_WORDS:
        return False
    then = solid[last + 2].text.lower() if last + 2 < len(solid) else ""
    return not (
        word == "and" and (_fraction_at(solid, last + 2) or then in ("a", "one", *_FRACTION_WORDS))
    )  # "= 2 and 1/2", "= 1 and a half" (but "= 8 and 8 x 2 = 16" ends at 8)


def _fraction_at(solid: list[Tok], index: int) -> bool:
    """Whether an unspaced fraction "1/2" starts at solid[index]."""
    a, slash, b = (solid[index : index + 3] + [None, None, None])[:3]
    return (
        a is not None
        and b is not None
        and a.kind == "num" == b.kind
        and slash.text in DIVIDE
        and a.end == slash.start
        and slash.end == b.start
    )


def _with_loose_reading(node, side: list[Tok], text: str):
    """Add the reading "numerator / denominator" to a side with one slash among other operators.

    Rationales write "42x12+20x10 /12+10" and "85/40*45" meaning (42x12+20x10)/(12+10) and
    85/(40*45); an equation that holds under that reading is not an arithmetic error.
    """
    depth, slashes = 0, []
    for index, tok in enumerate(side):
        depth += (tok.kind == "lp") - (tok.kind == "rp")
        if depth == 0 and tok.text in DIVIDE:
            slashes.append(index)
    operators = sum(tok.kind == "op" for tok in side)
    if len(slashes) != 1 or operators < 2 or node[0] == "lit":
        return node
    try:
        numerator = Parser(side[: slashes[0]], text).parse()
        denominator = Parser(side[slashes[0] + 1 :], text).parse()
    except ValueError:
        return node
    return ("loose", node, numerator, denominator)


def _stated_value(node) -> Fraction:
    """The value a side states: a literal's own number ("25%" states 25), else its exact value."""
    return node[1] if node[0] == "lit" else evaluate(node)


def _check_run(
    text: str, solid: list[Tok], first: int, last: int, *, lenient: bool = False
) -> tuple[int, list[str], list[Fraction]]:
    """Check the arithmetic tokens solid[first:last+1], a run that holds at least one "=".

    Returns (equations checked, errors, [the value the run ends at] if it checked any).
    `lenient`: the run mixes units, so an equation that fails may convert them unwritten: it is
    neither counted nor reported (one that holds still counts)."""
    run = solid[first : last + 1]
    if not any(t.kind == "op" for t in run):
        return 0, [], []  # "x = 5", "1 = 1": nothing is computed
    sides: list[list[Tok]] = [[]]
    for tok in run:
        if tok.kind == "eq":
            sides.append([])
        else:
            sides[-1].append(tok)
    trusted = [True] * len(sides)
    trusted[0] = _first_side_trusted(text, solid, first)
    trusted[-1] = trusted[-1] and _last_side_trusted(text, solid, last)
    following = solid[last + 1].text.lower() if last + 1 < len(solid) else ""
    in_cents = following in ("cent", "cents", "¢")  # "$2.50 - $2.24 = 26 cents"
    parsed = []
    for index, (side, ok) in enumerate(zip(sides, trusted, strict=True)):
        node = None
        if ok and side and not _is_range(side) and not _doubled_operator(side):
            try:
                node = _with_loose_reading(Parser(side, text).parse(), side, text)
            except ValueError:
                pass
        if node is not None and node[0] == "lit" and not any(sides[:index]):
            node = None  # a bare number first is often a label: "Week 2 = 35 + 35", "profit = 33.33% = ..."
        parsed.append(node)
    checked, errors = 0, []
    for i in range(len(sides) - 1):
        left, right = parsed[i], parsed[i + 1]
        if left is None or right is None or (left[0] == "lit" and right[0] == "lit"):
            continue
        try:
            holds, value = _check_pair(left, right, cents=in_cents and i + 1 == len(sides) - 1)
        except ZeroDivisionError:
            continue
        if lenient and not holds:
            continue
        checked += 1
        if not holds:
            stated = right if right[0] == "lit" else (left if left[0] == "lit" else first_literal(right))
            decimals = stated[3] if stated is not None and stated[0] == "lit" else 1
            equation = f"{_side_text(text, sides[i])} = {_side_text(text, sides[i + 1])}"
            errors.append(f"{equation} (is {_shown(value, decimals)})")
    if not checked:
        return 0, [], []
    try:  # where the run ends: its last readable side ("12/120 = 0.1 = 10%" ends at 10)
        ends_at = next(_stated_value(node) for node in reversed(parsed) if node is not None)
    except ZeroDivisionError:
        return checked, errors, []
    return checked, errors, [ends_at]


def _spaced(text: str, tok: Tok) -> bool:
    return text[tok.start - 1 : tok.start] == " " == text[tok.end : tok.end + 1]


def _doubled_operator(side: list[Tok]) -> bool:
    """ "1 meat *+1": an operator glued to a "+" is a typo, not a unary plus anyone writes."""
    pairs = zip(side, side[1:], strict=False)
    return any(a.kind == "op" == b.kind and b.text == "+" and a.end == b.start for a, b in pairs)


def _is_range(side: list[Tok]) -> bool:
    """ "2020-2021", "5-10": an unspaced minus between integers where the first is the smaller."""
    for a, op, b in zip(side, side[1:], side[2:], strict=False):
        if (
            a.kind == "num" == b.kind
            and op.text in MINUS
            and a.end == op.start
            and op.end == b.start
            and a.decimals == 0 == b.decimals
            and a.value < b.value
        ):
            return True
    return False


def _check_line(text: str) -> tuple[int, list[str], list[Fraction]]:
    """Check every run of arithmetic tokens in one line (an equation never spans lines)."""
    solid, dropped = without_units(text, [t for t in tokenize(text) if t.kind != "space"])
    checked, errors, results = 0, [], []
    arithmetic = ("num", "op", "lp", "rp", "eq")
    i = 0
    while i < len(solid):
        if solid[i].kind not in arithmetic:
            i += 1
            continue
        j = i
        while j + 1 < len(solid) and solid[j + 1].kind in arithmetic:
            j += 1
        end = solid[j + 1].end if j + 1 < len(solid) else solid[j].end  # with the result's unit
        mixed = any(solid[i].start <= at < end for at in dropped) and mixes_units(text[solid[i].start : end])
        if any(t.kind == "eq" for t in solid[i : j + 1]):
            found, wrong, ends = _check_run(text, solid, i, j, lenient=mixed)
            checked += found
            errors.extend(wrong)
            results.extend(ends)
        i = j + 1
    return checked, errors, results


# "Total number of songs = (8 - 5) + 30": a line that gives a named quantity its value.
_NAMED = re.compile(r"\s*(?P<name>[^\W\d_][^\W\d_' ]*(?: [^\W\d_][^\W\d_']*)*)\s*=(?P<value>[^=]*\d[^=]*)")


@dataclass(frozen=True)
class EquationCheck:
    """How many equations were recomputed, one line per wrong one ("7 x 8 = 54 (is 56)"), the value
    each checked chain ends at in reading order (`results[-1]`: the last computed value), and the
    index of the line (of `text.splitlines()`) each of those chains ends on."""

    checked: int
    errors: list[str]
    results: list[Fraction] = field(default_factory=list)
    result_lines: list[int] = field(default_factory=list)


def check_equations(text: str) -> EquationCheck:
    """Recompute every equation `text` states (grammar and skips in the module notes).

    GSM8K's calculator annotations ("<<48/2=24>>") are checked on their own, before the visible text
    of their line. Consecutive lines that name the same quantity are one chain: "Total = (8 - 5) + 30"
    / "Total = 3 + 30" / "Total = 33" (blank lines between allowed) reads as "Total = (8 - 5) + 30 =
    3 + 30 = 33", so each step is checked against the next; so is a line that starts with "=" ("= 498"
    under "Total = 83 * 6").
    """
    checked, errors, results, lines = 0, [], [], []
    chain: list = [None, None, 0]  # [name, the chain's line so far, the index of its last line]

    def check(line: str | None, index: int) -> None:
        nonlocal checked, errors, results, lines
        if line is not None and "=" in line:  # most lines hold no equation: skip tokenizing them
            found, wrong, ends = _check_line(line)
            checked, errors, results = checked + found, errors + wrong, results + ends
            lines += [index] * len(ends)

    for index, raw in enumerate(_normalise(text).splitlines()):
        line = _ANNOTATION.sub("", raw)
        match = _NAMED.fullmatch(line)
        name = " ".join(match.group("name").lower().split()) if match else None
        if name is not None and name == chain[0]:
            chain[1] += " =" + match.group("value")
            chain[2] = index
        elif line.lstrip().startswith("=") and chain[1] is not None:  # "Total = 83 * 6" / "= 498"
            chain[1] += " " + line.strip()
            chain[2] = index
        elif line.strip() or _ANNOTATION.search(raw):
            check(chain[1], chain[2])
            chain = [name, line, index]
        for annotation in _ANNOTATION.findall(raw):
            check(annotation, index)
    check(chain[1], chain[2])
    return EquationCheck(checked=checked, errors=errors, results=results, result_lines=lines)

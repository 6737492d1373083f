"""The expression grammar of rationale arithmetic: tokens, a parser, exact evaluation.

`tokenize` splits one line into numbers (`12`, `1,250`, `3.5`, `.5`, `$12`, `20%`, "20 percent"),
operators (`+ - x * × · / ÷`, and `of` after a percentage or a fraction), parentheses, "=" and
words; a standalone `x` multiplies only between numbers spaced alike ("2 x 3", "2x3"), else it is a
variable ("2x + 3"). `Parser` reads a list of tokens as expr := term (+|- term)*; term := unary (x|/
unary)*; unary := -unary | atom, with mixed numbers ("1 1/2") and unspaced fractions ("25 / 1/3" is
25 / (1/3)) read as one value. Nodes are tuples: ("lit", value, percent, decimals), ("frac", lit, lit),
("neg", node), (op, left, right) and ("loose", node, numerator, denominator) for the sloppy reading
`scalingdown.teach.equations` adds. `evaluate` computes a node exactly (`Fraction`, no `eval`).

How a percentage counts: as a fraction ("20% of 50"), as its plain number ("100% - 20% = 80%"), or,
after + and -, as a share of the left side ("$800 - 10% = $720", a calculator's reading);
`side_values` gives a side's value under each reading and `matches_stated` whether a stated literal
states a value, allowing its rounding (`10/3 = 3.33`, but not `7/2 = 3.4`) and, for a result written
with 10 or more decimals (a float pasted from a program), the float's last-digit noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

TOKEN_PATTERN = re.compile(
    r"""
    (?P<num>\$?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:(?:\.\.\.|…)(?=%))?%?)
    | (?P<op>[+\-−–*×·÷/]|(?<![^\W\d_])[xX](?![^\W\d_]))
    | (?P<lp>\() | (?P<rp>\)) | (?P<eq>=)
    | (?P<word>[^\W\d_]+)
    | (?P<space>[ \t]+)
    | (?P<other>.|\n)
    """,
    re.VERBOSE,
)
MINUS = {"-", "−", "–"}
TIMES = {"*", "×", "·", "x", "X", "of"}
DIVIDE = {"/", "÷"}


@dataclass(slots=True)
class Tok:
    kind: str
    text: str
    start: int
    end: int
    value: Fraction = Fraction(0)
    percent: bool = False
    decimals: int = 0


def tokenize(text: str) -> list[Tok]:
    tokens: list[Tok] = []
    for match in TOKEN_PATTERN.finditer(text):
        kind, piece = match.lastgroup or "other", match.group(0)
        tok = Tok(kind, piece, match.start(), match.end())
        if kind == "op" and piece in "xX" and not is_times_x(text, match.start()):
            tok.kind = "word"
        elif kind == "num" and re.match(r"\$?0\d", piece):
            tok.kind = "word"  # "0900", "0130": clock times and codes, not quantities
        elif kind == "num":
            digits = piece.lstrip("$").rstrip("%").rstrip(".…").replace(",", "")  # "8.333...%"
            tok.value, tok.percent = Fraction(digits), piece.endswith("%")
            tok.decimals = len(digits.split(".")[1]) if "." in digits else 0
        tokens.append(tok)
    # "20 percent" is a percentage; "of" after a percentage or a fraction multiplies.
    solid = [t for t in tokens if t.kind != "space"]
    for i, tok in enumerate(solid):
        if tok.kind != "word" or i == 0:
            continue
        before = solid[i - 1]
        if tok.text.lower() in ("percent", "pct") and before.kind == "num" and not before.percent:
            before.percent, before.end, tok.kind = True, tok.end, "space"
        elif tok.text.lower() == "of" and (
            (before.kind == "num" and before.percent)
            or (
                i >= 3 and before.kind == "num" and solid[i - 2].text in DIVIDE and solid[i - 3].kind == "num"
            )
        ):
            tok.kind, tok.text = "op", "of"
    return tokens


def is_times_x(text: str, at: int) -> bool:
    """Whether the "x" at `at` multiplies: between numbers, spaced alike ("2 x 3", "2x3", "(1+2) x 4").

    "2x + 3", "4x+12", "x = 5" and "3 x= 6" hold a variable instead.
    """
    before, after = text[:at], text[at + 1 :]
    if before[-1:].isspace() != after[:1].isspace():
        return False
    spaced = after[:1].isspace()
    left, right = before.rstrip(" \t")[-1:], after.lstrip(" \t")
    # "5 x -3" and "2 x (3 + 4)" multiply; "3x-5" and "0.9X(0.02)" are algebra.
    operand = r"[-$(]?\.?\d" if spaced else r"\$?\.?\d"
    return left != "" and (left.isdigit() or left in ")%") and re.match(operand, right) is not None


# ---- parsing and evaluation: expr := term (+|- term)*; term := unary (x|/ unary)*; unary := -unary | atom


class Parser:
    def __init__(self, tokens: list[Tok], text: str):
        self.tokens, self.text, self.i = tokens, text, 0

    def peek(self) -> Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def parse(self):
        node = self.expr()
        if self.i != len(self.tokens):
            raise ValueError("trailing tokens")
        return node

    def expr(self):
        node = self.term()
        while (
            (tok := self.peek()) is not None and tok.kind == "op" and (tok.text == "+" or tok.text in MINUS)
        ):
            self.i += 1
            node = ("-" if tok.text in MINUS else "+", node, self.term())
        return node

    def term(self):
        node = self.unary()
        while (tok := self.peek()) is not None and tok.kind == "op" and (tok.text in TIMES | DIVIDE):
            self.i += 1
            node = ("/" if tok.text in DIVIDE else "x", node, self.unary())
        return node

    def unary(self):
        tok = self.peek()
        if tok is not None and tok.kind == "op" and (tok.text == "+" or tok.text in MINUS):
            following = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
            if following is None or following.start != tok.end:
                raise ValueError("a sign must touch its number")  # "2 x + 3": x was a variable
            self.i += 1
            return ("neg", self.unary()) if tok.text in MINUS else self.unary()
        return self.atom()

    def atom(self):
        tok = self.peek()
        if tok is None:
            raise ValueError("missing operand")
        if tok.kind == "lp":
            self.i += 1
            node = self.expr()
            if (close := self.peek()) is None or close.kind != "rp":
                raise ValueError("unbalanced parenthesis")
            self.i += 1
            return node
        if tok.kind != "num":
            raise ValueError(f"unexpected {tok.text!r}")
        node = self.number()
        following = self.peek()
        if (  # a mixed number "1 1/2": a whole number, one space, an unspaced proper fraction
            node[0] == "lit"
            and node[1].denominator == 1
            and not node[2]
            and following is not None
            and self.text[tok.end : following.start] == " "
            and following.kind == "num"
        ):
            mark = self.i
            fraction = self.number()
            if fraction[0] == "frac" and 0 < fraction[1][1] < fraction[2][1] and fraction[2][3] == 0:
                return ("lit", node[1] + fraction[1][1] / fraction[2][1], False, 0)
            self.i = mark
        return node

    def number(self):
        """A number, or an unspaced fraction "2/3" read as one value (so "25 / 1/3" is 25 / (1/3))."""
        tok = self.tokens[self.i]
        self.i += 1
        node = ("lit", tok.value, tok.percent, tok.decimals)
        rest = self.tokens[self.i : self.i + 2]
        if (
            len(rest) == 2
            and rest[0].text in DIVIDE
            and rest[1].kind == "num"
            and tok.end == rest[0].start
            and rest[0].end == rest[1].start
            and not tok.percent
            and not rest[1].percent
        ):
            self.i += 2
            return ("frac", node, ("lit", rest[1].value, False, rest[1].decimals))
        return node


# How a percentage counts: as a fraction ("20% of 50"), as its plain number ("100% - 20% = 80%"),
# or, after + and -, as a share of the left side ("$800 - 10% = $720", a calculator's reading).
PERCENT_READINGS = ("fraction", "plain", "of_left")


def evaluate(node, percent: str = "fraction") -> Fraction:
    kind = node[0]
    if kind == "loose":
        return evaluate(node[1], percent)
    if kind == "lit":
        return node[1] / 100 if node[2] and percent != "plain" else node[1]
    if kind == "neg":
        return -evaluate(node[1], percent)
    left, right = evaluate(node[1], percent), evaluate(node[2], percent)
    if kind in ("+", "-") and percent == "of_left" and node[2][0] == "lit" and node[2][2]:
        right = left * right
    if kind == "+":
        return left + right
    if kind == "-":
        return left - right
    if kind == "x":
        return left * right
    return left / right  # "/" or "frac"; ZeroDivisionError: the caller skips the equation


def side_values(node) -> set[Fraction]:
    """The side's value under each reading of its percentages (one value when it has none)."""
    values = {evaluate(node, reading) for reading in PERCENT_READINGS}
    if node[0] == "loose":
        for reading in PERCENT_READINGS:
            try:
                values.add(evaluate(node[2], reading) / evaluate(node[3], reading))
            except ZeroDivisionError:
                pass
    return values


# A result printed with this many decimals or more is a float (program output pasted into prose),
# whose last digits carry binary rounding: it states a value within a relative FLOAT_TOLERANCE.
FLOAT_DIGITS = 10
FLOAT_TOLERANCE = Fraction(1, 10**12)


def matches_stated(value: Fraction, literal) -> bool:
    """Whether a literal stated result ("3.33", "25%") states `value`, allowing its rounding."""
    if literal[0] == "frac":  # "8/3": a fraction states its value exactly
        return value == evaluate(literal)
    _, number, percent, decimals = literal
    stated = [(number, decimals)] + ([(number / 100, decimals + 2)] if percent else [])
    for target, places in stated:
        if value == target:
            return True
        unit = Fraction(1, 10**places)
        fits = (value / unit).denominator == 1  # the exact value is writable with these decimals
        if not fits and abs(value - target) < unit:
            return True
        if places >= FLOAT_DIGITS and abs(value - target) <= abs(target) * FLOAT_TOLERANCE:
            return True  # "0.16666666666666666 + 0.25 = 0.41666666666666663": a float's last digit
    return False


def first_literal(node):
    """The leftmost number (or unspaced fraction) of a side that starts with one ("8 + 2" -> 8)."""
    while node[0] in ("+", "-", "x", "/", "loose"):
        node = node[1]
    return node if node[0] in ("lit", "frac") else None


# A number right after one of these words belongs to the phrase, not to the equation that follows.
JOINING_WORDS = frozenset(
    "x times plus minus by over divided multiplied than twice double triple thrice half halves quarter "
    "quarters third thirds sqrt root log squared cubed".split()
)
# After a result these change its value: "= 1.5 million", "= 2 dozen", "= 2 times 5".
SCALE_WORDS = frozenset(
    "k m b bn mn mil million millions billion billions trillion thousand thousands hundred hundreds "
    "dozen dozens grand lakh crore x times plus minus squared cubed".split()
)

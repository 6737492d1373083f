"""Which option (A-E) a model's output answers: `extract_choice`.

Strict takes the last explicit statement ("answer is C", "Answer: (C)", "Correct answer - A",
"Ans: B", "correct option is B", "#### C", "C is the correct answer", "$\\boxed{C}$"), or a final line
that names an option and nothing else about it ("Answer choice B", "Option C", "(Option D)",
"Option C: 600 miles"; not "Option A is wrong"). Flexible also takes a letter in the final line written
`(C)`, `C)`, `Choice C` or alone; failing any letter, the option whose text appears in the last answer
statement, else in the last sentence of the final line that holds a number outside parentheses (the
whole line where none does), in either case after that region's last "=" (or after an earlier "=" where
what follows is one value: "V = 150+100 = 250=D" answers "250"): an operand earlier in a paragraph is
not its result ("160° - 150° = 10°" does not answer "160°"). Numbers are compared by value, words case-folded,
operators (`+ - * / = ≠ < > ^`) kept, so "(a - b)2" and "(a + b)2" differ; the latest match wins,
and a match of the full option text beats a match of its numbers alone.

A statement naming two different options ("A or C", "(B) and (D)") is no answer (None). The article
"a" ("a train", "A man") is never option A, and neither is a letter inside an expression: `D/(M-3)`,
`P(B)`, `f(a)`, `A+B`, `B*A`. Markdown emphasis (`**C**`) is removed before reading, but a `*` between
operands (`5C3*4C3`, `2 * 3`) is multiplication and stays.
"""

from __future__ import annotations

import re
from fractions import Fraction

from scalingdown.data.numbers import find_numbers
from scalingdown.data.schema import CHOICE_LETTERS

# An option letter: not part of a word, and not "e.g."; ")" may follow ("C)600").
_LETTER = r"\(?(?P<letter>[A-Ea-e])(?!\w|\.\w)\)?"
_CHOICE_STATEMENT = re.compile(
    r"(?i:\bcorrect\s+(?:option|choice)\b|\b(?:answer\b|ans\b\.?)(?:\s+(?:choice|option)\s+is\b)?|\#\#\#\#)"
    r"(?P<link>(?i:\s|[:=\-–—,$]|\.(?!\s)|\bis\b|\b(?:will|would|should|must)\s+be\b|\beither\b)*)"
    r"(?P<named>(?i:(?:option|choice)\s*[:\-]?\s*))?" + _LETTER
)
_CHOICE_REVERSED = re.compile(  # "C is the correct answer", "option A is correct", "E is the answer"
    r"(?:(?i:\b(?:option|choice))\s*)?(?<!\w)\(?(?P<letter>[A-E])(?!\w)\)?\s+"
    r"(?i:is\s+(?:the\s+)?(?:correct|right)\b|is\s+the\s+(?:final\s+)?answer\b)"
)
# A final line that names an option: "Answer choice B", "Option C", "(Option D)", "Option C: 600".
_FINAL_LINE_OPTION = re.compile(
    r"[\W_]*(?:(?:the\s+)?(?:(?:correct|right|final)\s+)?answer\s+(?:choice|option)|option)\s*[:\-]?\s*"
    r"\(?(?P<letter>[A-Ea-e])\)?(?:[\W_]*|\s*[:).\-–]\s+.*|\s+[$\d(].*)",
    re.IGNORECASE,
)
_SECOND_LETTER = re.compile(
    r"\)?(?:\s*(?:,|/|&|(?i:\bor\b|\band\b))\s*)+(?i:(?:option|choice)\s*)?" + _LETTER
)
_LINE_LETTER = re.compile(
    r"(?<!\w)\((?P<paren>[A-Ea-e])\)|(?<![\w(])(?P<bracket>[A-E])\)"
    r"|(?i:\b(?:option|choice)\s*[:\-]?\s*)\(?(?P<named>[A-Ea-e])(?!\w)"
)
_BOXED_LETTER = re.compile(r"\\boxed\{\s*\(?([A-Ea-e])\)?\s*\}")
_LONE_LETTER = re.compile(r"\W*(?P<letter>[A-Ea-e])\W*")
_ANSWER_LEAD = re.compile(r"\b(?:answer|ans)\b\s*(?:is\b|[:=\-])?", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")
_OPERATOR = re.compile(r"[+\-−*/=≠<>≤≥×÷^]")
_EQUALS = re.compile(r"[=≈]")
_SENTENCE_END = re.compile(r"[!?;]|\.(?!\d)")
_ASIDE = re.compile(r"\([^()]*\)")
_ARITHMETIC = re.compile(r"[\d)]\s*[-+*/×÷^−]\s*[\d(]")
# A letter followed by these is an operand ("D/(M-3)", "B*A", "A+B", "D(M-3)"), not an option.
_OPERAND_AFTER = re.compile(r"\s*[/*^×÷]|[+\-−](?=[\w(])|\(")
_OPERAND_BEFORE = re.compile(r"(?:\w\(|[\w)]\s*[/*^×÷]\s*|[\w)][+\-−])$")
# Words after "A"/"a" that make it a letter rather than the article: "A is correct", "a or c".
_LETTER_FOLLOWERS = frozenset("is or and because since as so which but was would should".split())
_AMBIGUOUS = "ambiguous"


def _strip_emphasis(text: str) -> str:
    """Remove markdown `*` emphasis, keeping a `*` between operands ("5C3*4C3", "2 * 3")."""

    def keep_or_drop(match: re.Match[str]) -> str:
        before = text[match.start() - 1] if match.start() else "\n"
        after = text[match.end()] if match.end() < len(text) else "\n"
        between_operands = (before.isalnum() or before == ")") and (after.isalnum() or after == "(")
        spaced_times = match.group(0) == "*" and before in " \t" and after in " \t"
        return match.group(0) if between_operands or spaced_times else ""

    return re.sub(r"\*+", keep_or_drop, text)


def _is_letter(text: str, match: re.Match[str], allowed: set[str]) -> bool:
    """Whether the matched letter is an option: not the article "a" ("a train", "A man"), not an operand."""
    letter = match.group("letter")
    if letter.upper() not in allowed:
        return False
    start, end = match.start("letter"), match.end("letter")
    if _OPERAND_AFTER.match(text, end) or _OPERAND_BEFORE.search(text[max(0, start - 3) : start]):
        return False
    if letter.upper() != "A":
        return True
    rest = text[end:]
    follower = re.match(r"\)?\s+(\w+)", rest)
    if follower is not None and follower.group(1).lower() in _LETTER_FOLLOWERS:
        return True
    if letter == "a":  # only where nothing else follows: "a train", "a 5% rise", 'a "MUST' are prose
        return re.match(r"\)?\s*(?:$|[.,;:!?)\n])", rest) is not None
    return follower is None or not follower.group(1)[0].islower()  # "A man" vs "ANSWER A 8000"


def _stated_choice(text: str, allowed: set[str]) -> str | None:
    """The letter of the last explicit answer statement, `_AMBIGUOUS` if it names two, else None."""
    matches = [*_CHOICE_STATEMENT.finditer(text), *_CHOICE_REVERSED.finditer(text)]
    for match in sorted(matches, key=lambda m: m.start(), reverse=True):
        if not _is_letter(text, match, allowed):
            continue
        if match.re is _CHOICE_STATEMENT and match.group("named") and not match.group("link").strip():
            continue  # "each answer choice: (A) can never be true" lists options, it does not answer
        letter = match.group("letter").upper()
        second = _SECOND_LETTER.match(text, match.end("letter"))
        if second and _is_letter(text, second, allowed) and second.group("letter").upper() != letter:
            return _AMBIGUOUS
        return letter
    return None


def _final_line_option(line: str, allowed: set[str]) -> str | None:
    """The letter of a final line such as "Option C" or "(Option D)", else None."""
    match = _FINAL_LINE_OPTION.fullmatch(line)
    if match is None or not _is_letter(line, match, allowed):
        return None
    letter = match.group("letter").upper()
    second = _SECOND_LETTER.match(line, match.end("letter"))
    return None if second and second.group("letter").upper() != letter else letter


def _line_choice(line: str, allowed: set[str]) -> str | None:
    """A letter written `(C)`, `C)`, `Option C` or alone in one line; `_AMBIGUOUS` if two differ."""
    letters = {
        (match.group("paren") or match.group("bracket") or match.group("named")).upper()
        for match in _LINE_LETTER.finditer(line)
    }
    lone = _LONE_LETTER.fullmatch(line)
    if lone:
        letters.add(lone.group("letter").upper())
    letters &= allowed
    if len(letters) > 1:
        return _AMBIGUOUS
    return letters.pop() if letters else None


def _tokens(text: str) -> list[Fraction | str]:
    """Numbers (by value), case-folded words and operators of `text`, in order; other punctuation dropped.

    A hyphen inside a word ("well-known") is no operator; one between single letters ("a-b") is.
    """
    numbers = [(n.start, n.end, n.value) for n in find_numbers(text)]
    inside = {i for start, end, _ in numbers for i in range(start, end)}
    items = [(start, value) for start, _, value in numbers]
    items += [(w.start(), w.group(0).casefold()) for w in _WORD.finditer(text)]
    for op in _OPERATOR.finditer(text):
        at = op.start()
        if at in inside:
            continue
        if op.group(0) == "-" and text[at - 1 : at].isalpha() and text[at + 1 : at + 2].isalpha():
            left, right = re.search(r"[^\W\d_]+$", text[:at]), re.match(r"[^\W\d_]+", text[at + 1 :])
            if len(left.group(0)) > 1 or len(right.group(0)) > 1:
                continue  # a hyphenated word
        items.append((at, op.group(0).replace("−", "-")))
    return [token for _, token in sorted(items, key=lambda item: item[0])]


def _last_end(needle: list, haystack: list) -> int | None:
    """The end index of the last occurrence of `needle` as a contiguous run in `haystack`."""
    for start in range(len(haystack) - len(needle), -1, -1):
        if haystack[start : start + len(needle)] == needle:
            return start + len(needle)
    return None


def _text_choice(region: str, options: dict[str, str], allowed: set[str]) -> str | None:
    """The option whose text appears in `region`: the latest full-text match, else the latest by numbers."""
    region_tokens = _tokens(region)
    for keep in (lambda token: True, lambda token: isinstance(token, Fraction)):
        haystack = [token for token in region_tokens if keep(token)]
        best: dict[tuple[int, int], set[str]] = {}
        for letter, option_text in options.items():
            needle = [token for token in _tokens(option_text) if keep(token)]
            end = _last_end(needle, haystack) if needle and letter.upper() in allowed else None
            if end is not None:
                best.setdefault((end, len(needle)), set()).add(letter.upper())
        if best:
            letters = best[max(best)]
            return letters.pop() if len(letters) == 1 else None
    return None


def _region_choice(region: str, options: dict[str, str], allowed: set[str]) -> str | None:
    """The option a region's result names: what follows its last "=", then any earlier result that
    is one value. "V = 150+100 = 250=D" tries "D", then "250" (never "150+100"); in "x = 150 + 100"
    the result is an expression, which only an option written as an expression can match."""
    parts = _EQUALS.split(region)
    if len(parts) == 1:
        return _text_choice(region, options, allowed)
    for index, part in enumerate(reversed(parts[1:])):
        if not re.search(r"[^\W_]", part):
            continue
        pool = options
        if _ARITHMETIC.search(part):
            if index:
                continue  # an earlier expression: operands, not a result
            pool = {letter: text for letter, text in options.items() if _OPERATOR.search(text)}
        chosen = _text_choice(part, pool, allowed)
        if chosen is not None:
            return chosen
    return None


def _last_numbered_sentence(line: str) -> str:
    """The last sentence of `line` that holds a number outside parentheses ("Because (36+5)." is an
    aside), or the whole line where none does."""
    sentences, start = [], 0
    for end in _SENTENCE_END.finditer(line):
        sentences.append(line[start : end.start()])
        start = end.end()
    sentences.append(line[start:])
    return next((s for s in reversed(sentences) if re.search(r"\d", _ASIDE.sub("", s))), line)


def extract_choice(text: str, options: dict[str, str] | None, *, strict: bool) -> str | None:
    """The option letter ("A".."E") that `text` answers, or None (rules in the module notes)."""
    allowed = {letter.upper() for letter in options} if options else set(CHOICE_LETTERS)
    text = _strip_emphasis(text)  # markdown emphasis: "**Answer: C**"
    text = _BOXED_LETTER.sub(r"(\1)", text)  # LaTeX "$\boxed{C}$" reads as "$(C)$"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # A final line naming an option is the last statement there can be; else the last explicit one.
    stated = _final_line_option(lines[-1], allowed) if lines else None
    if stated is None:
        stated = _stated_choice(text, allowed)
    if stated is not None or strict:
        return None if stated == _AMBIGUOUS else stated
    if not lines:
        return None
    in_line = _line_choice(lines[-1], allowed)
    if in_line is not None:
        return None if in_line == _AMBIGUOUS else in_line
    if not options:
        return None
    leads = list(_ANSWER_LEAD.finditer(text))
    regions = [text[leads[-1].end() :].split("\n", 1)[0]] if leads else []
    for region in [*regions, _last_numbered_sentence(lines[-1])]:
        chosen = _region_choice(region, options, allowed)
        if chosen is not None:
            return chosen
    return None

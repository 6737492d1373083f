"""Answer extraction and comparison: numbers (GSM8K) and option letters (AQuA-RAT).

Every model output is scored twice. *Strict* accepts only an explicit final-answer statement;
*flexible* falls back to weaker evidence. Extracted answers come back as canonical text
(`format_number` for numbers, "A".."E" for choices), so predictions files read the same for all models.

Numbers (`parse_number`, one token) - decisions worth knowing:
- `$1,234.50`, `1,234`, `29.00` (== 29), `.5`, `-7`, `−7` (U+2212), `3/4`, `50%` (value 50, so it
  matches a gold "50"), a sentence period (`72.` is 72). Mixed numbers `1 1/2` are 3/2, but only when
  the fraction is proper, so "3 12/4" stays two numbers. Unicode fractions (`½`) and `2.5k` are not numbers.
- A comma joins digits only as thousands grouping (`\\d{1,3}(,\\d{3})+`): "3,4 and 5" is the list 3, 4, 5.
- A minus is a sign only where it cannot be subtraction: "5-3" holds 3, "x = -3" holds -3.

Numeric strict: the LAST `#### N` or `answer is N` (case-insensitive; "The answer is: $N" too) whose
sentence holds a number. In that sentence the answer is the first number after the last "=" or "≈",
else the first number: "The answer is 5 + 3 = 8." gives 8, "The answer is 8 apples for 2 days" gives 8.
Numeric flexible: strict if found, else the last number in the text. On ordinary outputs this picks the
same number as lm-evaluation-harness's gsm8k flexible-extract (`(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match);
it differs by design on fractions ("1/3" is one number here), comma lists and unicode minus.

Choices: strict takes the last explicit statement ("answer is C", "Answer: (C)", "Correct answer - A",
"Ans: B", "correct option is B", "#### C", "C is the correct answer", "$\\boxed{C}$"). Flexible also
takes a letter in the final line written `(C)`, `C)`, `Option C` or alone; failing any letter, the option
whose text appears in the last answer statement or the final line (numbers compared by value, words
case-folded; the latest match wins, and a match of the full option text beats a match of its numbers
alone). A statement naming two different options ("A or C", "(B) and (D)") is no answer (None).
The article "a" ("a train", "A man") is never option A.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from scalingdown.data.schema import CHOICE_LETTERS, Problem

_NUMBER = re.compile(
    r"""
    (?: (?P<sign>(?<![\w)\]])[-\u2212])\$?      # a sign only where it cannot be subtraction
      | \$(?P<late_sign>[-\u2212])? )?          # "$-5" as well as "-$5"
    (?<![\d.])                                  # never start inside another number
    (?: (?P<num>\d+)/(?P<den>\d+)
      | (?P<decimal>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)? | \d+(?:\.\d+)? | \.\d+) )
    (?P<percent>%)?
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Number:
    start: int
    end: int
    value: Fraction
    plain_integer: bool  # an integer without "%" or commas: may be the whole part of a mixed number


def _find_numbers(text: str) -> list[_Number]:
    """Every number in `text`, left to right, with mixed numbers ("1 1/2") joined."""
    found: list[_Number] = []
    for match in _NUMBER.finditer(text):
        negative = bool(match.group("sign") or match.group("late_sign"))
        if match.group("num") is not None:
            numerator, denominator = int(match.group("num")), int(match.group("den"))
            if denominator == 0:
                continue
            value = Fraction(numerator, denominator)
        else:
            value = Fraction(match.group("decimal").replace(",", ""))
        # A mixed number is an integer, one space, then an unsigned proper fraction: "1 1/2".
        proper = match.group(0) == f"{match.group('num')}/{match.group('den')}" and value < 1
        if proper and found and found[-1].plain_integer and text[found[-1].end : match.start()] == " ":
            whole = found.pop()
            joined = whole.value + value if whole.value >= 0 else whole.value - value
            found.append(_Number(whole.start, match.end(), joined, False))
            continue
        plain = (match.group("decimal") or "").isdigit() and not match.group("percent")
        found.append(_Number(match.start(), match.end(), -value if negative else value, plain))
    return found


def parse_number(text: str) -> Fraction | None:
    """The value of `text` if it is exactly one number (see the module notes), else None."""
    candidate = text.strip().removeprefix("+")
    if candidate.endswith(".") and not candidate.endswith(".."):
        candidate = candidate[:-1]  # a sentence period: "72."
    found = _find_numbers(candidate)
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


# Trailing whitespace is part of the phrase, so "The answer is:\n\n42" reads the next line.
_NUMERIC_STATEMENT = re.compile(r"####\s*|\banswer\s+is\b\s*:?\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\n|[!?;]|\.(?!\d)")  # a "." inside "3.5" or ".5" does not end it
_EQUALS = re.compile(r"[=≈]")


def _statement_number(text: str, start: int) -> Fraction | None:
    """The answer of the sentence that begins at `start`: first number after the last "=", else first."""
    end = _SENTENCE_END.search(text, start)
    sentence = text[start : end.start() if end else len(text)]
    equals = list(_EQUALS.finditer(sentence))
    after = _find_numbers(sentence[equals[-1].end() :]) if equals else []
    numbers = after or _find_numbers(sentence)
    return numbers[0].value if numbers else None


def extract_numeric(text: str, *, strict: bool) -> str | None:
    """The final numeric answer of `text` as canonical text, or None (rules in the module notes)."""
    for statement in reversed(list(_NUMERIC_STATEMENT.finditer(text))):
        value = _statement_number(text, statement.end())
        if value is not None:
            return format_number(value)
    if strict:
        return None
    numbers = _find_numbers(text)
    return format_number(numbers[-1].value) if numbers else None


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
_SECOND_LETTER = re.compile(
    r"\)?(?:\s*(?:,|/|&|(?i:\bor\b|\band\b))\s*)+(?i:(?:option|choice)\s*)?" + _LETTER
)
_LINE_LETTER = re.compile(
    r"\((?P<paren>[A-Ea-e])\)|(?<![\w(])(?P<bracket>[A-E])\)"
    r"|(?i:\b(?:option|choice)\s*[:\-]?\s*)\(?(?P<named>[A-Ea-e])(?!\w)"
)
_BOXED_LETTER = re.compile(r"\\boxed\{\s*\(?([A-Ea-e])\)?\s*\}")
_LONE_LETTER = re.compile(r"\W*(?P<letter>[A-Ea-e])\W*")
_ANSWER_LEAD = re.compile(r"\b(?:answer|ans)\b\s*(?:is\b|[:=\-])?", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")
# Words after "A"/"a" that make it a letter rather than the article: "A is correct", "a or c".
_LETTER_FOLLOWERS = frozenset("is or and because since as so which but was would should".split())
_AMBIGUOUS = "ambiguous"


def _is_letter(text: str, match: re.Match[str], allowed: set[str]) -> bool:
    """Whether the matched letter is an option, not the article "a" ("a train", "A man")."""
    letter = match.group("letter")
    if letter.upper() not in allowed:
        return False
    if letter.upper() != "A":
        return True
    rest = text[match.end("letter") :]
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
    """Numbers (by value) and case-folded words of `text`, in order; punctuation dropped."""
    numbers = [(n.start, n.value) for n in _find_numbers(text)]
    words = [(w.start(), w.group(0).casefold()) for w in _WORD.finditer(text)]
    return [token for _, token in sorted(numbers + words, key=lambda item: item[0])]


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


def extract_choice(text: str, options: dict[str, str] | None, *, strict: bool) -> str | None:
    """The option letter ("A".."E") that `text` answers, or None (rules in the module notes)."""
    allowed = {letter.upper() for letter in options} if options else set(CHOICE_LETTERS)
    text = text.replace("*", "")  # markdown emphasis: "**Answer: C**"
    text = _BOXED_LETTER.sub(r"(\1)", text)  # LaTeX "$\boxed{C}$" reads as "$(C)$"
    stated = _stated_choice(text, allowed)
    if stated is not None or strict:
        return None if stated == _AMBIGUOUS else stated
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    in_line = _line_choice(lines[-1], allowed)
    if in_line is not None:
        return None if in_line == _AMBIGUOUS else in_line
    if not options:
        return None
    leads = list(_ANSWER_LEAD.finditer(text))
    regions = [text[leads[-1].end() :].split("\n", 1)[0]] if leads else []
    for region in [*regions, lines[-1]]:
        chosen = _text_choice(region, options, allowed)
        if chosen is not None:
            return chosen
    return None


def answers_match(predicted: str | None, gold: str, *, choice: bool) -> bool:
    """Numbers compare by exact value ("29.00" == "29"); letters case-insensitively. None never matches."""
    if predicted is None:
        return False
    if choice:
        return predicted.strip().strip("()").upper() == gold.strip().strip("()").upper()
    predicted_value, gold_value = parse_number(predicted), parse_number(gold)
    return predicted_value is not None and predicted_value == gold_value


@dataclass(frozen=True)
class Scored:
    """One output scored both ways against its problem's gold answer."""

    strict_answer: str | None
    strict_correct: bool
    flexible_answer: str | None
    flexible_correct: bool


def score(problem: Problem, text: str) -> Scored:
    """Extract and compare `text`'s answer, as a choice when the problem has options, else as a number."""
    choice = problem.is_choice
    if choice:
        strict = extract_choice(text, problem.options, strict=True)
        flexible = extract_choice(text, problem.options, strict=False)
    else:
        strict = extract_numeric(text, strict=True)
        flexible = extract_numeric(text, strict=False)
    return Scored(
        strict_answer=strict,
        strict_correct=answers_match(strict, problem.answer, choice=choice),
        flexible_answer=flexible,
        flexible_correct=answers_match(flexible, problem.answer, choice=choice),
    )


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most common non-None answer; ties go to the first seen. Equal numbers ("29", "29.0") and
    letters of either case count as one answer, reported as first written."""
    counts: dict[object, int] = {}
    first_written: dict[object, str] = {}
    for answer in answers:
        if answer is None:
            continue
        value = parse_number(answer)
        key: object = value if value is not None else answer.strip().upper()
        counts[key] = counts.get(key, 0) + 1
        first_written.setdefault(key, answer)
    if not counts:
        return None
    most = max(counts.values())
    return next(first_written[key] for key, count in counts.items() if count == most)

"""Answer extraction and comparison: numbers (GSM8K) and option letters (AQuA-RAT).

Every model output is scored twice. *Strict* accepts only an explicit final-answer statement;
*flexible* falls back to weaker evidence. Extracted answers come back as canonical text
(`format_number` for numbers, "A".."E" for choices), so predictions files read the same for all models.
How one number is read is in `scalingdown.data.numbers`; option letters in `scalingdown.data.choices`.

Numeric strict: the LAST final-answer statement of the text. Statements are
- `#### N`, `... answer is N` (case-insensitive; "The answer is: $N", "the answer is <N>." too);
- `Final answer: N` anywhere, and `Answer: N` or `A: N` as the final line (GPT-3 few-shot style),
  markdown allowed (`**Answer:** N`); the number must follow the colon, so "A: He has 5 apples..."
  is a label, not a statement;
- `\\boxed{N}`, also `\\boxed{\\frac{a}{b}}` and `\\boxed{18 \\text{ apples}}`.
A statement's sentence is read with space-grouped thousands ("$9 500" is 9500) and without numbers
glued to a letter ("km2"). Its answer is the first number after its last "=" or "≈" ("The answer is
5 + 3 = 8." gives 8); else its only number, or its only value ("8 (8 apples)"); else the one number
marked as the total ("5 arms and 3 legs, or 8 limbs in total" gives 8; "a total of", "altogether",
"in all" mark too, but "110 tomatoes and 32 eggplants in total" marks the list, not 32). A statement
with several numbers and no marked one, or with a number in an expression with a variable ("18 + x
hours"), has no strict answer, and one with no number at all ("The
answer is unknown.") is no answer, strict or flexible: the output said it has none. "answer is"
with nothing after it ("what the answer is.") is no statement.

Numeric flexible: strict if found; else the first number of an ambiguous last statement; else, with no
statement, the last number in the text. On ordinary outputs this picks the same number as
lm-evaluation-harness's gsm8k flexible-extract (`(-?[$0-9.,]{2,})|(-?[0-9]+)`, last match); it
differs by design where a statement is followed by more numbers, on fractions ("1/3" is one number
here), comma lists, unicode minus and space-grouped thousands in a statement (benchmarks/README.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from scalingdown.data.choices import extract_choice
from scalingdown.data.numbers import Number, find_numbers, format_number, parse_number
from scalingdown.data.schema import Problem

__all__ = [
    "Scored",
    "answers_match",
    "extract_choice",
    "extract_numeric",
    "format_number",
    "majority_vote",
    "parse_number",
    "score",
]

# Trailing whitespace is part of the phrase, so "The answer is:\n\n42" reads the next line.
_NUMERIC_STATEMENT = re.compile(
    r"####[ \t]*|\banswer\s+is\b\s*:?\s*|\bfinal\s+answer\b[*_]*\s*[:=][*_\s]*(?=[-−$<(\\\d.])",
    re.IGNORECASE,
)
# "Answer: N", "A: N", "**Answer:** N" - only as the final line, and with a number right after.
_FINAL_LINE_LABEL = re.compile(r"[ \t>#]*[*_]*(?:answer|a)\b[*_]*\s*:[*_\s]*(?=[-−$<(\\\d.])", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{")
# A "." inside "3.5" or ".5", or after "Rs" or "approx", does not end a sentence.
_SENTENCE_END = re.compile(r"\n|[!?;]|(?<!\bRs)(?<!\bapprox)(?<!\bMr)(?<!\bMrs)(?<!\bDr)\.(?!\d)")
_EQUALS = re.compile(r"[=≈]")
_CONTENT = re.compile(r"[^\W_]")  # a letter or digit: the statement says something
_LATEX = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"\1/\2"),
    (re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\{,\}"), ","),  # "1{,}250"
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\\[,!;: ]|~"), " "),
]
# Words that mark one number of a statement as its total: "a total of 5", "8 limbs in total".
_TOTAL_BEFORE = re.compile(
    r"\b(?:total|totals|sum|altogether|overall|combined|in\s+all)\b(?:\s+(?:of|is|was|comes\s+to))?"
    r"\s*[:=]?\s*$",
    re.IGNORECASE,
)
_TOTAL_AFTER = re.compile(
    r"\s*(?:[^\W\d_]+\s+){0,3}?(?:in\s+total|total|altogether|in\s+all|combined|overall)\b", re.IGNORECASE
)
_WITH_VARIABLE = re.compile(r"\d\s*[-+*/×]\s*[^\W\d_]\b|\b[^\W\d_]\s*[-+*/×]\s*\d")
_LIST_JOIN = re.compile(r"\band\b|,|&|\bplus\b", re.IGNORECASE)
# What joins a restated total to the list before it: "5 arms and 3 legs, or 8 limbs in total".
_RESTATES = re.compile(r"\bor\b|\bi\.e\.|\bthat\s+is\b|\bwhich\s+is\b|\bso\b|\bmaking\b|;", re.IGNORECASE)


@dataclass(frozen=True)
class _Reading:
    """What one answer statement says: its answer, or (answer None) why it has none."""

    answer: Number | None
    kind: str  # "number", "ambiguous" (first: its first number), "no number", "empty"
    first: Number | None = None


def _marked_total(sentence: str, numbers: list[Number], index: int) -> bool:
    """Whether numbers[index] is marked as the statement's total (see the module notes)."""
    number = numbers[index]
    before = sentence[numbers[index - 1].end if index else 0 : number.start]
    if _TOTAL_BEFORE.search(before):
        return True
    after = sentence[number.end : numbers[index + 1].start if index + 1 < len(numbers) else len(sentence)]
    if not _TOTAL_AFTER.match(after):
        return False
    return index == 0 or _RESTATES.search(before) is not None


def _read_sentence(sentence: str) -> _Reading:
    """The answer of one statement's sentence (rules in the module notes)."""
    if not _CONTENT.search(sentence):
        return _Reading(None, "empty")
    equals = list(_EQUALS.finditer(sentence))
    if equals:
        after = find_numbers(sentence[equals[-1].end() :], spaced=True)
        if after:
            return _Reading(after[0], "number")
    numbers = [
        n for n in find_numbers(sentence, spaced=True) if not (n.start and sentence[n.start - 1].isalpha())
    ]
    if not numbers:
        return _Reading(None, "no number")
    if _WITH_VARIABLE.search(sentence):
        return _Reading(None, "ambiguous", numbers[0])  # "18 + x hours": an expression, not a number
    joins = [sentence[a.end : b.start] for a, b in zip(numbers, numbers[1:], strict=False)]
    if len({n.value for n in numbers}) == 1 and not any(_LIST_JOIN.search(join) for join in joins):
        return _Reading(numbers[0], "number")  # "8 (8 apples)", but not "60 dishes and 60 socks"
    marked = [n for i, n in enumerate(numbers) if _marked_total(sentence, numbers, i)]
    if len({n.value for n in marked}) == 1:
        return _Reading(marked[0], "number")
    return _Reading(None, "ambiguous", numbers[0])


def _sentence_after(text: str, start: int) -> str:
    end = _SENTENCE_END.search(text, start)
    return text[start : end.start() if end else len(text)]


def _boxed_content(text: str, start: int) -> str:
    """The text inside the braces that open at `start` (nested braces kept), LaTeX made plain."""
    depth, index = 1, start
    while index < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        index += 1
    content = text[start : index - 1 if depth == 0 else index]
    for pattern, replacement in _LATEX:
        content = pattern.sub(replacement, content)
    return content


def _statements(text: str) -> list[tuple[int, str]]:
    """(position, sentence) of every final-answer statement in `text`, in reading order."""
    found = [(m.start(), _sentence_after(text, m.end())) for m in _NUMERIC_STATEMENT.finditer(text)]
    found += [(m.start(), _boxed_content(text, m.end())) for m in _BOXED.finditer(text)]
    stripped = text.rstrip()
    last_line_start = stripped.rfind("\n") + 1
    label = _FINAL_LINE_LABEL.match(stripped, last_line_start)
    if label is not None:
        found.append((label.start(), _sentence_after(stripped, label.end())))
    return sorted(found, key=lambda item: item[0])


def _last_statement(text: str) -> _Reading | None:
    """The reading of the last statement that says something, or None where there is none."""
    for _, sentence in reversed(_statements(text)):
        reading = _read_sentence(sentence)
        if reading.kind != "empty":
            return reading
    return None


def extract_numeric(text: str, *, strict: bool) -> str | None:
    """The final numeric answer of `text` as canonical text, or None (rules in the module notes)."""
    reading = _last_statement(text)
    if reading is not None:
        if reading.answer is not None:
            return format_number(reading.answer.value)
        if strict or reading.kind == "no number":
            return None
        return format_number(reading.first.value)
    if strict:
        return None
    numbers = find_numbers(text)
    return format_number(numbers[-1].value) if numbers else None


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

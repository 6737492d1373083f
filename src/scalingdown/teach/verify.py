"""Rationale verification: does a rationale show work that leads to the gold answer?

Under teacher forcing the gold answer is in the prompt, so a rationale that merely states it proves
little. `verify_rationale` gives every rationale one `category`, checked in this order:

- `wrong_answer`: its answer (the strict statement, else the flexible reading of
  `scalingdown.data.answers.score`) is not the gold one (`close_to_gold`: a float's noise, or a
  rounding to one decimal or more, still states it);
- `arithmetic_error`: an equation it states is wrong (`scalingdown.teach.equations.check_equations`);
- `no_work`: the problem needs work and the rationale checks no step ("The answer is 72." alone). A
  problem needs work when its answer must be computed: its gold rationale computes a step (a checked
  equation, or the synthetic task's `meta["steps"]`), or, with no gold rationale (GSM8K questions
  from elsewhere, SVAMP), its question states two numbers or more. For a choice problem (AQuA-RAT,
  whose rationales are mostly algebra the checker cannot recompute) any equation with a number
  counts as work;
- `inconsistent_chain`: the last computed value (the value the last checked chain ends at) is not
  the stated answer: a chain that ends at 34 and then states 72. It may round (66.666... stated as
  66.67), and the answer may instead be written after the last checked step, before the final
  statement ("100 * 30 = 3000 miles ... so he needs 3000 / 1000 = 3 tune-ups", where the checker
  skipped the last step): a rationale that computes 2.5 and then states 15 is inconsistent. For a
  choice problem the chain is inconsistent only when its last value is the value of another option
  than the chosen one (the last value of AQuA work is often not an option at all);
- `verified`: none of these.

A program rationale (`kind="program"`, a teacher's `verify: program`; program-of-thought such as
`def solution(): ... return result`) is verified by running it in `scalingdown.teach.sandbox` and
comparing its return value with the gold answer (numbers by value, a float within its rounding;
for a choice problem a letter, or the value of exactly one option): `program_failed` when it cannot
run (not allowed, raised, timed out, out of memory, returned nothing), else `wrong_answer` or
`verified`. With `check_arithmetic=False` only the answer is checked (a prose rationale that states
the gold answer is verified, as before the stricter rule).

`apply_policy`, `TeacherStats` and `dedupe` are what the teach stage does with verdicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from scalingdown.data.answers import answers_match, score
from scalingdown.data.numbers import find_numbers, format_number, parse_number
from scalingdown.data.schema import Problem
from scalingdown.teach.arithmetic import FLOAT_DIGITS, FLOAT_TOLERANCE, matches_stated
from scalingdown.teach.equations import EquationCheck, check_equations
from scalingdown.teach.sandbox import ProgramResult, Sandbox, program_source, run_program

__all__ = [
    "CATEGORIES",
    "EquationCheck",
    "TeacherStats",
    "Verdict",
    "apply_policy",
    "check_equations",
    "close_to_gold",
    "dedupe",
    "needs_work",
    "rationale_text",
    "verify_rationale",
]

CATEGORIES = (
    "verified",
    "wrong_answer",
    "arithmetic_error",
    "no_work",
    "inconsistent_chain",
    "program_failed",
)
_EQUATION_WITH_NUMBER = re.compile(r"\d[^=\n]*=|=[^=\n]*\d")
_FINAL_STATEMENT = re.compile(r"\banswer\s+is\b|####|\\boxed|(?im:^[\s*_]*(?:final\s+)?answer\s*:)", re.I)
_RUPEES = re.compile(r"\brs\.?\s*", re.IGNORECASE)  # "Rs.3" is 3 rupees, not 0.3


@dataclass(frozen=True)
class Verdict:
    """What verification found in one rationale; `verified` is `category == "verified"`."""

    answer: str | None
    correct: bool
    equations_checked: int
    arithmetic_errors: list[str]
    verified: bool
    problem_id: str = ""
    category: str = "verified"
    reason: str = ""  # why it is not verified, in words ("" when verified)


def needs_work(problem: Problem) -> bool:
    """Whether the problem's answer must be computed, so a rationale must check a step (module notes)."""
    steps = problem.meta.get("steps")
    if isinstance(steps, int):
        return steps >= 1
    if problem.rationale and check_equations(problem.rationale).checked:
        return True
    return len(find_numbers(problem.question)) >= 2


def _option_values(problem: Problem) -> dict[str, Fraction]:
    """letter -> value for each option whose text is one number ("Rs.16002", "15%", "250 m")."""
    values = {}
    for letter, text in (problem.options or {}).items():
        numbers = find_numbers(_RUPEES.sub("", text))
        if len(numbers) == 1:
            values[letter.upper()] = numbers[0].value
    return values


def _states(value: Fraction, stated: Fraction) -> bool:
    """Whether `stated` is `value`, or `value` rounded to the decimals `stated` is written with."""
    text = format_number(stated)
    if "/" in text:  # "29/3" states its value exactly
        return value == stated
    decimals = len(text.split(".")[1]) if "." in text else 0
    return matches_stated(value, ("lit", stated, False, decimals))


def _after_the_work(text: str, check: EquationCheck) -> str:
    """The text after the last checked chain (after the last "=" of its line) and before the final
    answer statement: where a rationale writes a result the checker could not recompute."""
    lines = text.splitlines()
    last = check.result_lines[-1]
    tail = "\n".join([lines[last].rsplit("=", 1)[-1], *lines[last + 1 :]])
    statements = list(_FINAL_STATEMENT.finditer(tail))
    return tail[: statements[-1].start()] if statements else tail


def _chain_problem(problem: Problem, text: str, answer: str, check: EquationCheck) -> str:
    """Why the last computed value does not lead to `answer`, or "" when it does (module notes)."""
    last = check.results[-1]
    written = {n.value for n in find_numbers(_after_the_work(text, check), spaced=True)}
    if problem.is_choice:
        values = _option_values(problem)
        chosen = values.get(answer.upper())
        others = [letter for letter, value in values.items() if value == last and letter != answer.upper()]
        if others and chosen != last and chosen not in written:
            return f"the work ends at {format_number(last)}, option {others[0]}, but the answer is {answer}"
        return ""
    stated = parse_number(answer)
    if stated is None or _states(last, stated) or stated in written:
        return ""
    if stated == last * 100 and "cent" in f"{problem.question} {text}".lower():
        return ""  # "$2.00/8 = $0.25" for an answer in cents: 25
    return f"the work ends at {format_number(last)} but the answer is {answer}"


def _decimals(value: Fraction) -> int:
    text = format_number(value)
    return len(text.split(".")[1]) if "." in text and "/" not in text else 0


def close_to_gold(answer: Fraction, gold: Fraction) -> bool:
    """Whether a numeric answer states the gold one: exactly, within a float's noise (when either is
    written with 10 decimals or more: 0.8333333333333333 for 0.8333333333333334), or as a rounding
    of it to one decimal or more (3.22 for 3.2222222222, 54.55 for 54.545; never 9 for 8.93).
    SVAMP's gold answers are floats, so rationales and programs meet them only this way."""
    if answer == gold:
        return True
    short, long = sorted((_decimals(answer), _decimals(gold)))
    if long >= FLOAT_DIGITS and abs(answer - gold) <= abs(gold) * FLOAT_TOLERANCE:
        return True
    return 1 <= short < long and abs(answer - gold) <= Fraction(1, 2 * 10**short)


def _program_matches(problem: Problem, value: str) -> bool:
    """Whether a program's return value is the gold answer (a float within its own rounding)."""
    if problem.is_choice:
        if re.fullmatch(r"\(?[A-Ea-e]\)?", value.strip()):
            return answers_match(value, problem.answer, choice=True)
        try:
            number = Fraction(value)
        except (ValueError, ZeroDivisionError):
            return False
        matching = [letter for letter, option in _option_values(problem).items() if option == number]
        return matching == [problem.answer.upper()]
    gold = parse_number(problem.answer)
    try:
        number = Fraction(value)
    except (ValueError, ZeroDivisionError):
        return False
    return gold is not None and close_to_gold(number, gold)


def _verdict(problem: Problem, answer, correct, check: EquationCheck, category: str, reason: str) -> Verdict:
    return Verdict(
        answer=answer,
        correct=correct,
        equations_checked=check.checked,
        arithmetic_errors=check.errors,
        verified=category == "verified",
        problem_id=problem.id,
        category=category,
        reason=reason,
    )


def _verify_program(problem: Problem, text: str, sandbox: Sandbox | None) -> Verdict:
    result: ProgramResult = sandbox.run(text) if sandbox is not None else run_program(text)
    none = EquationCheck(0, [])
    if not result.ok:
        return _verdict(problem, None, False, none, "program_failed", result.error or "failed")
    if not _program_matches(problem, result.value):
        reason = f"the program returns {result.value}, the gold answer is {problem.answer}"
        return _verdict(problem, result.value, False, none, "wrong_answer", reason)
    return _verdict(problem, result.value, True, none, "verified", "")


def verify_rationale(
    problem: Problem,
    text: str,
    *,
    check_arithmetic: bool = True,
    kind: Literal["answer", "program"] = "answer",
    sandbox: Sandbox | None = None,
) -> Verdict:
    """The verdict on one rationale (rules and category order in the module notes).

    `sandbox`: a running `Sandbox` to run program rationales in (one is started per call without it).
    """
    if kind == "program":
        return _verify_program(problem, text, sandbox)
    scored = score(problem, text)
    if scored.strict_answer is not None:
        answer, correct = scored.strict_answer, scored.strict_correct
    else:
        answer, correct = scored.flexible_answer, scored.flexible_correct
    if not correct and not problem.is_choice and answer is not None:
        value, gold = parse_number(answer), parse_number(problem.answer)
        correct = value is not None and gold is not None and close_to_gold(value, gold)
    check = check_equations(text) if check_arithmetic else EquationCheck(0, [])
    if not correct:
        reason = f"states {answer}, the gold answer is {problem.answer}" if answer else "states no answer"
        return _verdict(problem, answer, False, check, "wrong_answer", reason)
    if not check_arithmetic:
        return _verdict(problem, answer, True, check, "verified", "")
    if check.errors:
        return _verdict(problem, answer, True, check, "arithmetic_error", "; ".join(check.errors))
    shows_work = check.checked > 0 or (problem.is_choice and _EQUATION_WITH_NUMBER.search(text) is not None)
    if not shows_work and needs_work(problem):
        return _verdict(problem, answer, True, check, "no_work", "no step of the work is checked")
    if check.results:
        why = _chain_problem(problem, text, answer, check)
        if why:
            return _verdict(problem, answer, True, check, "inconsistent_chain", why)
    return _verdict(problem, answer, True, check, "verified", "")


def rationale_text(text: str, kind: Literal["answer", "program"], body) -> str:
    """The part of a completion that is verified and learned from: `body(text)` for prose (the teach
    stage passes `teach.prompts.rationale_body`), the program itself for a program rationale."""
    return program_source(text) if kind == "program" else body(text)


def apply_policy(verdict: Verdict, policy: Literal["keep", "drop", "flag"]) -> tuple[bool, bool]:
    """(kept, flagged): 'drop' keeps only verified rationales, 'flag' keeps all and marks the unverified."""
    if policy == "keep":
        return True, False
    if policy == "drop":
        return verdict.verified, False
    if policy == "flag":
        return True, not verdict.verified
    raise ValueError(f"unknown policy {policy!r} (expected 'keep', 'drop' or 'flag')")


@dataclass
class TeacherStats:
    """Counts over one teacher's rationales; `as_dict` is what `stats.json` reports.

    `categories` counts each rationale once, by its verdict's category (they sum to `rationales`);
    `wrong_answer` is that category's count, while `arithmetic_error_rationales` counts every
    rationale with a wrong equation, whatever its answer."""

    rationales: int = 0
    kept: int = 0
    verified: int = 0
    arithmetic_error_rationales: int = 0
    arithmetic_errors_total: int = 0
    equations_checked: int = 0
    categories: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    _kept_questions: set[str] = field(default_factory=set, repr=False)

    def add(self, verdict: Verdict, kept: bool) -> None:
        self.rationales += 1
        self.kept += kept
        self.verified += verdict.verified
        self.categories[verdict.category] += 1
        self.arithmetic_error_rationales += bool(verdict.arithmetic_errors)
        self.arithmetic_errors_total += len(verdict.arithmetic_errors)
        self.equations_checked += verdict.equations_checked
        if kept:
            self._kept_questions.add(verdict.problem_id)

    def as_dict(self) -> dict[str, int | float | dict[str, int]]:
        def share(count: int) -> float:
            return count / self.rationales if self.rationales else 0.0

        return {
            "rationales": self.rationales,
            "kept": self.kept,
            "kept_share": share(self.kept),
            "verified": self.verified,
            "verified_share": share(self.verified),
            "wrong_answer": self.categories["wrong_answer"],
            "categories": dict(self.categories),
            "arithmetic_error_rationales": self.arithmetic_error_rationales,
            "arithmetic_errors_total": self.arithmetic_errors_total,
            "equations_checked": self.equations_checked,
            "questions_with_a_kept_rationale": len(self._kept_questions),
        }


def dedupe(texts: list[str]) -> list[str]:
    """Drop repeats (compared with whitespace collapsed and case folded), keeping first-seen order."""
    seen: set[str] = set()
    kept = []
    for text in texts:
        key = " ".join(text.split()).casefold()
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept

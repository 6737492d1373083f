"""Rationale verification: the final answer against the gold one, and the arithmetic a rationale states.

`verify_rationale` combines the answer check (`scalingdown.data.answers.score`) with the equation
check (`scalingdown.teach.equations.check_equations`) into a `Verdict`; `apply_policy`,
`TeacherStats` and `dedupe` are what the teach stage does with verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scalingdown.data.answers import score
from scalingdown.data.schema import Problem
from scalingdown.teach.equations import EquationCheck, check_equations

__all__ = [
    "EquationCheck",
    "TeacherStats",
    "Verdict",
    "apply_policy",
    "check_equations",
    "dedupe",
    "verify_rationale",
]


@dataclass(frozen=True)
class Verdict:
    """What verification found in one rationale. `verified`: right answer and no arithmetic error."""

    answer: str | None
    correct: bool
    equations_checked: int
    arithmetic_errors: list[str]
    verified: bool
    problem_id: str = ""


def verify_rationale(problem: Problem, text: str, *, check_arithmetic: bool) -> Verdict:
    """Score `text` against the gold answer (strict statement first, else flexible) and check its sums."""
    scored = score(problem, text)
    if scored.strict_answer is not None:
        answer, correct = scored.strict_answer, scored.strict_correct
    else:
        answer, correct = scored.flexible_answer, scored.flexible_correct
    check = check_equations(text) if check_arithmetic else EquationCheck(0, [])
    return Verdict(
        answer=answer,
        correct=correct,
        equations_checked=check.checked,
        arithmetic_errors=check.errors,
        verified=correct and not check.errors,
        problem_id=problem.id,
    )


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
    """Counts over one teacher's rationales; `as_dict` is what `stats.json` reports."""

    rationales: int = 0
    kept: int = 0
    verified: int = 0
    wrong_answer: int = 0
    arithmetic_error_rationales: int = 0
    arithmetic_errors_total: int = 0
    equations_checked: int = 0
    _kept_questions: set[str] = field(default_factory=set, repr=False)

    def add(self, verdict: Verdict, kept: bool) -> None:
        self.rationales += 1
        self.kept += kept
        self.verified += verdict.verified
        self.wrong_answer += not verdict.correct
        self.arithmetic_error_rationales += bool(verdict.arithmetic_errors)
        self.arithmetic_errors_total += len(verdict.arithmetic_errors)
        self.equations_checked += verdict.equations_checked
        if kept:
            self._kept_questions.add(verdict.problem_id)

    def as_dict(self) -> dict[str, int | float]:
        def share(count: int) -> float:
            return count / self.rationales if self.rationales else 0.0

        return {
            "rationales": self.rationales,
            "kept": self.kept,
            "kept_share": share(self.kept),
            "verified": self.verified,
            "verified_share": share(self.verified),
            "wrong_answer": self.wrong_answer,
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

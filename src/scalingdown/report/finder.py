"""The finder: for each reference model, the smallest student that beats it by a paired test.

A student beats a reference when, on the test problems both answered, its accuracy is higher
(diff > 0) and the paired test rejects "equally accurate" at level alpha (p < alpha). Among the
students that beat it, the one with the fewest parameters is the finding; a winner that is not
smaller than the reference is still reported, flagged "not smaller". Where no student wins, the
finding says so and names the best student (largest difference) with its p value.

Each p value is for one comparison; with several students per reference the chance that at least
one wins by luck grows with their number (the report says so next to the findings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalingdown.errors import UserError
from scalingdown.evaluate.paired import Comparison, compare
from scalingdown.report.collect import ModelRecord

TEST_NAMES = {"mcnemar": "McNemar", "bootstrap": "paired bootstrap"}


@dataclass
class Finding:
    """The answer for one reference. `winner` is None when no student beats it."""

    reference: str
    reference_parameters: int | None
    test: str
    alpha: float
    samples: int
    winner: str | None = None
    winner_parameters: int | None = None
    comparison: Comparison | None = None  # winner (or best student) minus reference
    best: str | None = None  # when nobody wins: the student with the largest difference
    best_parameters: int | None = None
    not_smaller: bool = False
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # every student vs the reference
    problem: str | None = None  # why no comparison could be made at all
    skipped: dict[str, str] = field(default_factory=dict)  # student -> why it was not compared

    @property
    def size_ratio(self) -> float | None:
        """reference parameters / winner parameters (> 1: the winner is smaller)."""
        if not self.winner_parameters or not self.reference_parameters:
            return None
        return self.reference_parameters / self.winner_parameters

    def statement(self) -> str:
        """The finding in one or two plain sentences."""
        ref = self.reference
        if self.problem:
            return f"{ref}: no comparison possible - {self.problem}."
        test = TEST_NAMES.get(self.test, self.test)
        if self.winner is not None and self.comparison is not None:
            size = f"{format_count(self.winner_parameters)} params"
            ratio = self.size_ratio
            if ratio is not None and not self.not_smaller:
                size += f", {ratio:.1f}x smaller"
            elif ratio is not None:
                size += f", {1 / ratio:.1f}x larger than {ref}: NOT SMALLER"
            elif self.not_smaller:
                size += ": NOT SMALLER"
            else:
                size += f", size of {ref} unknown"
            flag = "" if not self.not_smaller else f" No student smaller than {ref} beats it."
            return (
                f"The smallest student that beats {ref} is {self.winner} ({size}): "
                f"{describe(self.comparison, self.samples)}.{flag}"
            )
        head = f"No student beats {ref} at p < {self.alpha:g} ({test} test)."
        if self.best is None or self.comparison is None:
            return head
        return (
            f"{head} The best student, {self.best} ({format_count(self.best_parameters)} params), "
            f"is {describe(self.comparison, self.samples)}."
        )

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "reference_parameters": self.reference_parameters,
            "winner": self.winner,
            "winner_parameters": self.winner_parameters,
            "size_ratio": self.size_ratio,
            "not_smaller": self.not_smaller,
            "best": self.best,
            "best_parameters": self.best_parameters,
            "comparison": self.comparison.as_dict() if self.comparison else None,
            "test": self.test,
            "alpha": self.alpha,
            "problem": self.problem,
            "statement": self.statement(),
            "comparisons": {name: c.as_dict() for name, c in self.comparisons.items()},
            "skipped": self.skipped,
        }


def format_count(n: int | None) -> str:
    """12_300_000 -> '12.3M'; None -> 'unknown'."""
    if n is None:
        return "unknown"
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def format_p(p: float, test: str, samples: int) -> str:
    """p for people: three significant digits; a bootstrap p at its floor is shown as a bound."""
    if test == "bootstrap" and p <= 1 / samples:
        return f"< {1 / samples:.2g}"
    if p < 1e-3:
        return f"= {p:.1e}"
    return f"= {p:.3g}"


def describe(c: Comparison, samples: int) -> str:
    """'+12.5 points (95% CI +4.0..+21.0), McNemar p = 0.003, n = 200'."""
    test = TEST_NAMES.get(c.test, c.test)
    return (
        f"{100 * c.diff:+.1f} points (95% CI {100 * c.ci_low:+.1f}..{100 * c.ci_high:+.1f}), "
        f"{test} p {format_p(c.p, c.test, samples)}, n = {c.n}"
    )


def _size_key(record: ModelRecord) -> tuple[bool, int]:
    return (record.parameters is None, record.parameters or 0)


def find_for_reference(
    reference: ModelRecord,
    students: list[ModelRecord],
    *,
    alpha: float,
    test: str,
    samples: int,
    seed: int,
) -> Finding:
    """The smallest student (by parameters; unknown sizes last) that beats `reference`."""
    finding = Finding(
        reference=reference.name,
        reference_parameters=reference.parameters,
        test=test,
        alpha=alpha,
        samples=samples,
    )
    if not reference.comparable:
        reason = reference.missing[0] if reference.missing else "it has no per-problem predictions"
        finding.problem = f"the reference has no per-problem results ({reason})"
        return finding
    for student in sorted(students, key=_size_key):
        if student.name == reference.name:
            continue
        if not student.comparable:
            finding.skipped[student.name] = student.missing[0] if student.missing else "no predictions"
            continue
        try:
            finding.comparisons[student.name] = compare(
                student.predictions,
                reference.predictions,
                test=test,
                samples=samples,
                seed=seed,
                labels=(student.name, reference.name),
            )
        except UserError as exc:
            finding.skipped[student.name] = str(exc)
    if not finding.comparisons:
        finding.problem = "no student has predictions on the reference's test problems"
        return finding

    by_name = {s.name: s for s in students}
    winners = [name for name, c in finding.comparisons.items() if c.wins(alpha)]  # already smallest first
    if winners:
        winner = by_name[winners[0]]
        finding.winner, finding.winner_parameters = winner.name, winner.parameters
        finding.comparison = finding.comparisons[winner.name]
        finding.not_smaller = (
            winner.parameters is not None
            and reference.parameters is not None
            and winner.parameters >= reference.parameters
        )
        return finding
    # Nobody wins: the closest contender, by difference, then by p.
    best = max(
        finding.comparisons, key=lambda name: (finding.comparisons[name].diff, -finding.comparisons[name].p)
    )
    finding.best, finding.best_parameters = best, by_name[best].parameters
    finding.comparison = finding.comparisons[best]
    return finding


def find_smallest_winners(
    models: list[ModelRecord],
    references: list[str],
    *,
    alpha: float = 0.05,
    test: str = "mcnemar",
    samples: int = 10000,
    seed: int = 0,
) -> list[Finding]:
    """One `Finding` per reference name, in the given order; the candidates are the students."""
    students = [m for m in models if m.kind == "student"]
    findings = []
    for name in references:
        reference = next((m for m in models if m.name == name), None)
        if reference is None:
            reference = ModelRecord(name=name, kind="reference", missing=[f"no record of {name!r}"])
        findings.append(
            find_for_reference(reference, students, alpha=alpha, test=test, samples=samples, seed=seed)
        )
    return findings


@dataclass
class AblationPair:
    """A multi-teacher student against a same-size student that learned from fewer teachers."""

    multi: str
    single: str
    multi_teachers: list[str]
    single_teachers: list[str]
    parameters: int | None
    comparison: Comparison  # multi minus single

    def statement(self, samples: int) -> str:
        few = "+".join(self.single_teachers) or "no teacher"
        many = "+".join(self.multi_teachers)
        return (
            f"At {format_count(self.parameters)} params, {self.multi} (teachers: {many}) vs "
            f"{self.single} ({few}): {describe(self.comparison, samples)}."
        )


def ablation_pairs(
    models: list[ModelRecord], *, test: str = "mcnemar", samples: int = 10000, seed: int = 0
) -> list[AblationPair]:
    """Same-size students whose teacher sets differ, the larger set a superset of the smaller: the
    multi- vs single-teacher ablation, as paired comparisons (the size is held fixed)."""
    students = [m for m in models if m.kind in ("student", "reference") and m.teachers and m.comparable]
    pairs = []
    for multi in students:
        for single in students:
            if multi is single or multi.parameters != single.parameters:
                continue
            if not set(single.teachers) < set(multi.teachers):
                continue
            try:
                comparison = compare(
                    multi.predictions,
                    single.predictions,
                    test=test,
                    samples=samples,
                    seed=seed,
                    labels=(multi.name, single.name),
                )
            except UserError:
                continue
            pairs.append(
                AblationPair(
                    multi=multi.name,
                    single=single.name,
                    multi_teachers=list(multi.teachers),
                    single_teachers=list(single.teachers),
                    parameters=multi.parameters,
                    comparison=comparison,
                )
            )
    return pairs

"""The report's view of the distillation methods: how each student combined its teachers, how it was
asked, and how the strategies compare at one size.

- `mode_rows`: per student, its combination strategy (`combine`), its teachers, the inference mode
  its headline accuracy comes from, and every mode evaluated with its own accuracy (a `vote`
  evaluation measures each of the student's modes on the same problems, so they are comparable).
- `strategy_comparisons`: at each student size that has a TinyLLM student (combine 'tasks' with
  the most teachers, the baseline) and other students, each other student against the baseline by
  the report's paired test on the test problems both answered: single vs multitask ('pool'), one
  teacher vs all (a 'tasks' student with fewer teachers), 'route' and 'weighted', and whatever
  mode each was asked in. Each p value is for one comparison, as elsewhere in the report; the
  section says how many comparisons it holds.

Both come back as `Section`s (a title, columns, rows, notes) that the pages render like any table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalingdown.errors import UserError
from scalingdown.evaluate.metrics import Accuracy
from scalingdown.evaluate.paired import Comparison, compare
from scalingdown.report.collect import ModelRecord
from scalingdown.report.finder import TEST_NAMES, format_count, format_p

BASELINE = "tasks"  # TinyLLM's combination: the strategy every other one is measured against


@dataclass
class Section:
    """A table of the report: `rows` of strings under `columns`, with sentences to print under it."""

    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class StrategyComparison:
    """One student against the baseline of its size (`comparison`: student minus baseline)."""

    parameters: int | None
    student: str
    baseline: str
    comparison: Comparison

    def as_dict(self) -> dict:
        return {
            "parameters": self.parameters,
            "student": self.student,
            "baseline": self.baseline,
            "comparison": self.comparison.as_dict(),
        }


def _percent(acc: Accuracy | None) -> str:
    return "-" if acc is None else f"{100 * acc.accuracy:.1f}%"


def _teachers(m: ModelRecord) -> str:
    return "+".join(m.teachers) if m.teachers else "none"


def _trained(models: list[ModelRecord]) -> list[ModelRecord]:
    """Students (references trained here too) that recorded how they combined their teachers."""
    return [m for m in models if m.kind in ("student", "reference") and m.combine is not None]


def mode_rows(models: list[ModelRecord]) -> Section:
    columns = ("Student", "Params", "Combine", "Teachers", "Mode", "Accuracy", "Every mode evaluated")
    rows = []
    for m in _trained(models):
        modes = ", ".join(f"{mode} {_percent(acc)}" for mode, acc in m.mode_accuracy.items()) or "-"
        rows.append(
            [
                m.name,
                format_count(m.parameters) if m.parameters else "-",
                m.combine or "-",
                _teachers(m),
                m.student_mode or "-",
                _percent(m.accuracy),
                modes,
            ]
        )
    notes = [
        "Mode: how the student was asked - 'answer' (its answer task), 'rationale:<teacher>' (that "
        "teacher's rationale task, the answer read from the rationale), 'single' (a pooled student's "
        "one task) or 'vote' (majority over all of them; ties go to the answer task, then the "
        "teachers in training order)."
    ]
    return Section("Students: combination and inference mode", columns, rows, notes)


def _baseline(group: list[ModelRecord]) -> ModelRecord | None:
    candidates = [m for m in group if m.combine == BASELINE and m.teachers]
    return max(candidates, key=lambda m: len(m.teachers), default=None)


def strategy_comparisons(
    models: list[ModelRecord], *, test: str = "mcnemar", samples: int = 10000, seed: int = 0
) -> list[StrategyComparison]:
    """Each student against the TinyLLM ('tasks', most teachers) student of the same size."""
    by_size: dict[int | None, list[ModelRecord]] = {}
    for m in _trained(models):
        if m.comparable:
            by_size.setdefault(m.parameters, []).append(m)
    out = []
    for parameters, group in by_size.items():
        baseline = _baseline(group)
        if baseline is None:
            continue
        for m in group:
            if m is baseline:
                continue
            try:
                comparison = compare(
                    m.predictions,
                    baseline.predictions,
                    test=test,
                    samples=samples,
                    seed=seed,
                    labels=(m.name, baseline.name),
                )
            except UserError:
                continue  # no problem answered by both
            out.append(StrategyComparison(parameters, m.name, baseline.name, comparison))
    return out


def comparison_section(
    models: list[ModelRecord], comparisons: list[StrategyComparison], *, test: str, samples: int
) -> Section:
    columns = ("Params", "Student", "Combine", "Teachers", "Mode", "vs", "Difference (95% CI)", "p", "n")
    records = {m.name: m for m in models}
    rows = []
    for c in comparisons:
        m = records[c.student]
        d = c.comparison
        rows.append(
            [
                format_count(c.parameters) if c.parameters else "-",
                c.student,
                m.combine or "-",
                _teachers(m),
                m.student_mode or "-",
                c.baseline,
                f"{100 * d.diff:+.1f} points ({100 * d.ci_low:+.1f}..{100 * d.ci_high:+.1f})",
                format_p(d.p, d.test, samples).removeprefix("= "),
                str(d.n),
            ]
        )
    name = TEST_NAMES.get(test, test)
    notes = [
        f"Each student against the TinyLLM student of its size (combine '{BASELINE}', all its teachers), "
        f"paired on the test problems both answered ({name} test); {len(comparisons)} comparisons, "
        "each p value for one comparison.",
    ]
    if not comparisons:
        notes = ["No size has a TinyLLM ('tasks') student and another student to compare it with."]
    return Section("Combination strategies at one size", columns, rows, notes)


def method_sections(
    models: list[ModelRecord], *, test: str = "mcnemar", samples: int = 10000, seed: int = 0
) -> tuple[list[Section], list[StrategyComparison]]:
    """The two method tables (empty when no student recorded its combination strategy)."""
    if not _trained(models):
        return [], []
    comparisons = strategy_comparisons(models, test=test, samples=samples, seed=seed)
    sections = [mode_rows(models), comparison_section(models, comparisons, test=test, samples=samples)]
    return sections, comparisons

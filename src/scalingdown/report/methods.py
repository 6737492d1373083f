"""The report's view of the distillation methods: how each student combined its teachers, how it was
asked, and how the strategies compare at one size.

- `mode_rows`: per student, its combination strategy (`combine`), its teachers, the inference mode
  its headline accuracy comes from, and every mode evaluated with its own accuracy (a `vote`
  evaluation measures each of the student's modes on the same problems, so they are comparable).
- `strategy_comparisons`: at each student size that has a TinyLLM student (combine 'tasks' with
  the most teachers, the baseline) and other students, each other student against the baseline by
  the report's paired test on the test problems both answered (two-sided sign-flip permutation
  test of per-problem correctness pooled over seeds, as `finder.paired`): single vs multitask
  ('pool'), one teacher vs all (a 'tasks' student with fewer teachers), 'route' and 'weighted', and
  whatever mode each was asked in. Holm's procedure over all of the section's comparisons controls
  the family-wise error rate at the report's alpha: a strategy is called different from TinyLLM's
  only when its Holm-adjusted p is at most alpha.

Both come back as `Section`s (a title, columns, rows, notes) that the pages render like any table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scalingdown.evaluate.metrics import Accuracy
from scalingdown.evaluate.replicates import PairedResult
from scalingdown.evaluate.stepdown import holm
from scalingdown.report.collect import ModelRecord
from scalingdown.report.finder import format_count, format_p, paired

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
    comparison: PairedResult  # two-sided, seeds pooled
    adjusted_p: float = 1.0  # Holm over the section's comparisons
    different: bool = False  # adjusted_p <= alpha

    def as_dict(self) -> dict:
        return {
            "parameters": self.parameters,
            "student": self.student,
            "baseline": self.baseline,
            "comparison": self.comparison.as_dict(),
            "holm_adjusted_p": self.adjusted_p,
            "different": self.different,
        }


def _percent(acc: Accuracy | None) -> str:
    return "-" if acc is None else f"{100 * acc.accuracy:.1f}%"


def _teachers(m: ModelRecord) -> str:
    return "+".join(m.teachers) if m.teachers else "none"


def _trained(models: list[ModelRecord]) -> list[ModelRecord]:
    """Students (references trained here too) that recorded how they combined their teachers."""
    return [
        m
        for m in models
        if m.kind in ("student", "reference") and m.combine is not None and not m.quantized_from
    ]


def mode_rows(models: list[ModelRecord]) -> Section:
    columns = ("Student", "Params", "Combine", "Teachers", "Mode", "Accuracy", "Every mode evaluated")
    rows = []
    for m in _trained(models):
        if m.mode_selected and m.mode_dev_accuracy:  # chosen on dev: every mode's figure is from there
            modes = "dev: " + ", ".join(
                f"{mode} {100 * acc:.1f}%" for mode, acc in m.mode_dev_accuracy.items()
            )
        else:
            modes = ", ".join(f"{mode} {_percent(acc)}" for mode, acc in m.mode_accuracy.items()) or "-"
        rows.append(
            [
                m.name,
                format_count(m.parameters) if m.parameters else "-",
                m.combine or "-",
                _teachers(m),
                f"select: {m.student_mode}" if m.mode_selected else (m.student_mode or "-"),
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
    if any(m.mode_selected for m in _trained(models)):
        notes.append(
            "select: the mode was chosen per seed on the dev slice (train problems held out of "
            "teaching and training; data.dev_size), never on the test set: the highest dev accuracy, "
            "ties to the answer task, then the rationale tasks, then the vote. 'x2' counts the seeds "
            "that chose a mode; the test accuracy is the procedure's, pooled over seeds, and 'dev:' "
            "lists each mode's dev accuracy (mean over seeds)."
        )
    return Section("Students: combination and inference mode", columns, rows, notes)


def _baseline(group: list[ModelRecord]) -> ModelRecord | None:
    candidates = [m for m in group if m.combine == BASELINE and m.teachers]
    return max(candidates, key=lambda m: len(m.teachers), default=None)


def strategy_comparisons(
    models: list[ModelRecord], *, alpha: float = 0.05, samples: int = 10000, seed: int = 0
) -> list[StrategyComparison]:
    """Each student against the TinyLLM ('tasks', most teachers) student of the same size, two-sided,
    with Holm-adjusted p values over all the comparisons returned."""
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
            result = paired(m, baseline, samples=samples, seed=seed, alternative="two-sided")
            if isinstance(result, str):
                continue  # no problem answered by both
            out.append(StrategyComparison(parameters, m.name, baseline.name, result))
    if out:
        family = holm([c.comparison.p for c in out], alpha)
        for c, adjusted, rejected in zip(out, family.adjusted, family.rejected, strict=True):
            c.adjusted_p, c.different = adjusted, rejected
    return out


def comparison_section(
    models: list[ModelRecord], comparisons: list[StrategyComparison], *, alpha: float, samples: int
) -> Section:
    columns = (
        "Params",
        "Student",
        "Combine",
        "Teachers",
        "Mode",
        "vs",
        "Difference (95% CI)",
        "p",
        "Holm p",
        "n",
    )
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
                format_p(d.p, samples, d.exact).removeprefix("= "),
                f"{c.adjusted_p:.3g}" + (" *" if c.different else ""),
                str(d.n),
            ]
        )
    notes = [
        f"Each student against the TinyLLM student of its size (combine '{BASELINE}', all its teachers), "
        "paired on the test problems both answered (two-sided sign-flip permutation test, seeds pooled); "
        f"{len(comparisons)} comparisons. Holm p is adjusted over all of them; * marks a difference at "
        f"family-wise level {alpha:g}.",
    ]
    if not comparisons:
        notes = ["No size has a TinyLLM ('tasks') student and another student to compare it with."]
    return Section("Combination strategies at one size", columns, rows, notes)


def method_sections(
    models: list[ModelRecord], *, alpha: float = 0.05, samples: int = 10000, seed: int = 0
) -> tuple[list[Section], list[StrategyComparison]]:
    """The two method tables (empty when no student recorded its combination strategy)."""
    if not _trained(models):
        return [], []
    comparisons = strategy_comparisons(models, alpha=alpha, samples=samples, seed=seed)
    sections = [mode_rows(models), comparison_section(models, comparisons, alpha=alpha, samples=samples)]
    return sections, comparisons

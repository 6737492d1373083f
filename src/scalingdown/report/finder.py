"""The finder: for each reference model, the smallest student that beats it, with the family-wise
error of the whole answer held at alpha.

The ladder is the study's students (or `report.ladder`), in a declared order: largest first. For each
reference every student gets a paired test pooling its seeds (`evaluate.replicates.pooled_paired_test`:
per-problem correctness averaged over seeds, one-sided sign-flip permutation p for "the student is
more accurate"). The answer is a fixed-sequence test down the ladder (Hsu & Berger 1999): the largest
student is tested first at the full level, the next only if it won, and so on; the smallest winner is
the last student that won before the first that did not. With several references (and the ladder in
bytes, where quantised rungs exist) the sequences share alpha by Holm's recycling
(`evaluate.stepdown.holm_fixed_sequences`). Every student's own one-sided p stays in the report as
detail, uncorrected; the finding is the procedure's, and `procedure` says which it was.

Where no student wins, the finding names the largest student's result (the first step) and where the
sequence stopped. A winner that is not smaller than the reference is still reported, flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scalingdown.evaluate.replicates import PairedResult, pooled_paired_test
from scalingdown.evaluate.stepdown import holm_fixed_sequences
from scalingdown.report.collect import ModelRecord
from scalingdown.report.replicates import outcome_matrix


@dataclass
class Finding:
    """The answer for one reference along one ladder (`scale`: 'parameters' or 'bytes')."""

    reference: str
    reference_parameters: int | None
    alpha: float
    samples: int
    scale: str = "parameters"
    ladder: list[str] = field(default_factory=list)  # the declared order, largest first
    sizes: dict[str, int | None] = field(default_factory=dict)  # parameters or bytes, by the scale
    reference_size: int | None = None
    tests: dict[str, PairedResult] = field(default_factory=dict)  # each student vs the reference
    decisions: dict[str, str] = field(default_factory=dict)  # rejected / not rejected / not tested
    level: float | None = None  # the level the sequence was last tested at
    procedure: str = ""
    winner: str | None = None
    comparison: PairedResult | None = None  # the winner's test (or the first step's, when none won)
    stopped_at: str | None = None  # the first student that did not win
    not_smaller: bool = False
    problem: str | None = None  # why no comparison could be made at all
    skipped: dict[str, str] = field(default_factory=dict)  # student -> why it has no test
    crossover: dict | None = None  # the fitted crossover size (scale 'parameters')

    @property
    def winner_size(self) -> int | None:
        return self.sizes.get(self.winner) if self.winner else None

    @property
    def winner_parameters(self) -> int | None:  # the older name, kept for the pages
        return self.winner_size if self.scale == "parameters" else None

    @property
    def size_ratio(self) -> float | None:
        """reference size / winner size (> 1: the winner is smaller)."""
        if not self.winner_size or not self.reference_size:
            return None
        return self.reference_size / self.winner_size

    @property
    def comparisons(self) -> dict[str, PairedResult]:  # the older name, kept for the pages
        return self.tests

    def statement(self) -> str:
        """The finding in one or two plain sentences, naming the procedure that gave it."""
        ref, unit = self.reference, "params" if self.scale == "parameters" else "bytes"
        if self.problem:
            return f"{ref}: no comparison possible - {self.problem}."
        how = f"({self.procedure})"
        if self.winner is not None and self.comparison is not None:
            size = f"{format_count(self.winner_size)} {unit}"
            ratio = self.size_ratio
            if ratio is not None and not self.not_smaller:
                size += f", {ratio:.1f}x smaller"
            elif self.not_smaller:
                size += f": NOT SMALLER than {ref}"
            statement = (
                f"In {self.scale}, the smallest student that beats {ref} is {self.winner} ({size}): "
                f"{describe(self.comparison, self.samples)} {how}."
            )
            if self.stopped_at:
                statement += f" The next smaller, {self.stopped_at}, did not win, so the sequence stopped."
            return statement
        head = f"In {self.scale}, no student beats {ref} {how}."
        first = self.ladder[0] if self.ladder else None
        if first is None or self.comparison is None:
            return head
        size = format_count(self.sizes.get(first))
        return f"{head} The largest, {first} ({size} {unit}), is {describe(self.comparison, self.samples)}."

    def as_dict(self) -> dict:
        return {
            "reference": self.reference,
            "scale": self.scale,
            "reference_size": self.reference_size,
            "reference_parameters": self.reference_parameters,
            "ladder": self.ladder,
            "sizes": self.sizes,
            "winner": self.winner,
            "winner_size": self.winner_size,
            "size_ratio": self.size_ratio,
            "not_smaller": self.not_smaller,
            "stopped_at": self.stopped_at,
            "comparison": self.comparison.as_dict() if self.comparison else None,
            "alpha": self.alpha,
            "level": self.level,
            "procedure": self.procedure,
            "problem": self.problem,
            "statement": self.statement(),
            "tests": {name: t.as_dict() for name, t in self.tests.items()},
            "decisions": self.decisions,
            "skipped": self.skipped,
            "crossover": self.crossover,
        }


def format_count(n: float | None) -> str:
    """12_300_000 -> '12.3M'; None -> 'unknown'."""
    if n is None:
        return "unknown"
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)


def format_p(p: float, samples: int, exact: bool = True) -> str:
    """p for people: three significant digits; a sampled p at its floor is shown as a bound."""
    if not exact and p <= 1 / samples:
        return f"< {1 / samples:.2g}"
    if p < 1e-3:
        return f"= {p:.1e}"
    return f"= {p:.3g}"


def describe(t: PairedResult, samples: int) -> str:
    """'+12.5 points (95% CI +4.0..+21.0), one-sided p = 0.003, 3 seeds, n = 200'."""
    side = {"greater": "one-sided", "less": "one-sided (less)", "two-sided": "two-sided"}[t.alternative]
    seeds = f"{t.student_seeds} seed{'s' if t.student_seeds != 1 else ''}"
    return (
        f"{100 * t.diff:+.1f} points (95% CI {100 * t.ci_low:+.1f}..{100 * t.ci_high:+.1f}), "
        f"{side} p {format_p(t.p, samples, t.exact)}, {seeds}, n = {t.n}"
    )


def paired(a: ModelRecord, b: ModelRecord, *, samples: int, seed: int, alternative: str = "greater"):
    """`pooled_paired_test` of a against b on the problems both answered (every seed of each), or
    a reason string when there are none."""
    a_out, b_out = a.outcomes(), b.outcomes()
    if not a_out or not b_out:
        return "no per-problem outcomes"
    ids = sorted(set.intersection(*(set(x) for x in [*a_out.values(), *b_out.values()])))
    if not ids:
        return "no test problem in common"
    return pooled_paired_test(
        outcome_matrix(a_out, ids),
        outcome_matrix(b_out, ids),
        samples=samples,
        seed=seed,
        alternative=alternative,
    )


def size_of(record: ModelRecord, scale: str) -> int | None:
    return record.parameters if scale == "parameters" else record.weight_bytes


def declared_ladder(students: list[ModelRecord], scale: str, order: list[str] | None) -> list[ModelRecord]:
    """The ladder, largest first: the declared `order` if given (report.ladder, with its quantised
    rungs placed by bytes on the bytes ladder), else every student by size, unknown sizes last."""
    chosen = students
    if order is not None:
        keep = set(order)
        chosen = [s for s in students if s.name in keep or (scale == "bytes" and s.quantized_from in keep)]
    if scale == "parameters":
        chosen = [s for s in chosen if s.quantized_from is None]
    return sorted(chosen, key=lambda s: (size_of(s, scale) is None, -(size_of(s, scale) or 0)))


def _tests_for(reference, ladder, finding, samples, seed) -> list[float]:
    p_values = []
    for student in ladder:
        result = paired(student, reference, samples=samples, seed=seed)
        if isinstance(result, str):
            finding.skipped[student.name] = student.missing[0] if student.missing else result
            p_values.append(1.0)  # untestable: the sequence stops here, as at a loss
        else:
            finding.tests[student.name] = result
            p_values.append(result.p)
    return p_values


def find_smallest_winners(
    models: list[ModelRecord],
    references: list[str],
    *,
    alpha: float = 0.05,
    samples: int = 10000,
    seed: int = 0,
    ladder: list[str] | None = None,
    floor: float = 0.0,
    crossover_samples: int = 1000,
) -> list[Finding]:
    """One `Finding` per reference in parameters (and, where quantised rungs were evaluated, one in
    bytes), all tested as one family at `alpha` (see the module docstring)."""
    students = [m for m in models if m.kind == "student"]
    scales = ["parameters"] + (["bytes"] if any(s.quantized_from for s in students) else [])
    findings: dict[tuple[str, str], Finding] = {}
    sequences: dict[tuple[str, str], list[float]] = {}
    for name in references:
        reference = next((m for m in models if m.name == name), None)
        for scale in scales:
            finding = Finding(
                reference=name,
                reference_parameters=reference.parameters if reference else None,
                alpha=alpha,
                samples=samples,
                scale=scale,
            )
            findings[(name, scale)] = finding
            if reference is None or not reference.comparable:
                why = reference.missing[0] if reference and reference.missing else f"no record of {name!r}"
                finding.problem = f"the reference has no per-problem results ({why})"
                continue
            finding.reference_size = size_of(reference, scale)
            candidates = [
                s
                for s in declared_ladder(students, scale, ladder)
                if s.name != name and s.quantized_from != name
            ]
            finding.ladder = [s.name for s in candidates]
            finding.sizes = {s.name: size_of(s, scale) for s in candidates}
            if not candidates:
                finding.problem = "the ladder is empty"
                continue
            sequences[(name, scale)] = _tests_for(reference, candidates, finding, samples, seed)
            if not finding.tests:
                finding.problem = "no student has per-problem results on the reference's test problems"
                del sequences[(name, scale)]
    if sequences:
        family = holm_fixed_sequences(sequences, alpha)
        many = len(sequences) > 1
        for key, result in family.sequences.items():
            finding = findings[key]
            finding.decisions = dict(zip(finding.ladder, result.decisions, strict=True))
            finding.level = family.levels[key]
            finding.procedure = (
                f"fixed-sequence test down the ladder, largest first, at level {finding.level:.3g}"
                + (f"; Holm across {len(sequences)} sequences, family-wise alpha {alpha:g}" if many else "")
            )
            _settle(finding, result.last_rejected)
    for (name, scale), finding in findings.items():
        if scale == "parameters" and finding.tests:
            reference = next(m for m in models if m.name == name)
            finding.crossover = crossover(finding, students, reference, floor, crossover_samples, seed)
    return list(findings.values())


def _settle(finding: Finding, last: int | None) -> None:
    ladder = finding.ladder
    if last is None:
        first = ladder[0]
        finding.comparison = finding.tests.get(first)
        finding.stopped_at = first
        return
    finding.winner = ladder[last]
    finding.comparison = finding.tests.get(finding.winner)
    finding.stopped_at = ladder[last + 1] if last + 1 < len(ladder) else None
    size, ref = finding.winner_size, finding.reference_size
    finding.not_smaller = size is not None and ref is not None and size >= ref


def crossover(finding: Finding, students, reference, floor: float, samples: int, seed: int) -> dict | None:
    """The fitted crossover size N* of the parameter ladder against `reference` (evaluate.crossover),
    as a dict with the curve sampled for the plot; None when it cannot be fitted."""
    from scalingdown.evaluate.crossover import fit_crossover

    by_name = {s.name: s for s in students}
    rungs = [by_name[n] for n in finding.ladder if n in finding.tests and by_name[n].parameters]
    if len({s.parameters for s in rungs}) < 2:
        return {"status": "not fitted", "reason": "fewer than two student sizes with results"}
    outs = [s.outcomes() for s in rungs] + [reference.outcomes()]
    ids = sorted(set.intersection(*(set(by_id) for o in outs for by_id in o.values())))
    try:
        fit = fit_crossover(
            [s.parameters for s in rungs],
            [outcome_matrix(s.outcomes(), ids) for s in rungs],
            outcome_matrix(reference.outcomes(), ids),
            floor,
            samples=samples,
            seed=seed,
        )
    except ValueError as exc:
        return {"status": "not fitted", "reason": str(exc)}
    low, high = min(s.parameters for s in rungs), max(s.parameters for s in rungs)
    grid = np.geomspace(low / 2, high * 2, 60)
    band_low, band_high = fit.band(grid)
    return {
        **fit.as_dict(),
        "grid": grid.tolist(),
        "curve": fit.curve(grid).tolist(),
        "band_low": band_low.tolist(),
        "band_high": band_high.tolist(),
    }


@dataclass
class AblationPair:
    """A multi-teacher student against a same-size student that learned from fewer teachers."""

    multi: str
    single: str
    multi_teachers: list[str]
    single_teachers: list[str]
    parameters: int | None
    comparison: PairedResult  # multi minus single, two-sided

    def statement(self, samples: int) -> str:
        few = "+".join(self.single_teachers) or "no teacher"
        many = "+".join(self.multi_teachers)
        return (
            f"At {format_count(self.parameters)} params, {self.multi} (teachers: {many}) vs "
            f"{self.single} ({few}): {describe(self.comparison, samples)}."
        )


def ablation_pairs(models: list[ModelRecord], *, samples: int = 10000, seed: int = 0) -> list[AblationPair]:
    """Same-size students whose teacher sets differ, the larger set a superset of the smaller: the
    multi- vs single-teacher ablation, as two-sided paired comparisons pooling seeds (the size is
    held fixed). Uncorrected: each pair is its own question, reported as such."""
    students = [
        m
        for m in models
        if m.kind in ("student", "reference") and m.teachers and m.comparable and not m.quantized_from
    ]
    pairs = []
    for multi in students:
        for single in students:
            if multi is single or multi.parameters != single.parameters:
                continue
            if not set(single.teachers) < set(multi.teachers):
                continue
            result = paired(multi, single, samples=samples, seed=seed, alternative="two-sided")
            if isinstance(result, str):
                continue
            pairs.append(
                AblationPair(
                    multi=multi.name,
                    single=single.name,
                    multi_teachers=list(multi.teachers),
                    single_teachers=list(single.teachers),
                    parameters=multi.parameters,
                    comparison=result,
                )
            )
    return pairs


def quantisation_losses(models: list[ModelRecord], *, samples: int = 10000, seed: int = 0) -> list[dict]:
    """Accuracy each quantised rung lost against its own student (two-sided paired test, pooled over
    seeds), with the bytes saved; one dict per rung."""
    by_name = {m.name: m for m in models}
    losses = []
    for rung in models:
        base = by_name.get(rung.quantized_from or "")
        if base is None or not rung.comparable or not base.comparable:
            continue
        result = paired(rung, base, samples=samples, seed=seed, alternative="two-sided")
        if isinstance(result, str):
            continue
        losses.append(
            {
                "rung": rung.name,
                "student": base.name,
                "kind": rung.quantization,
                "bytes": rung.weight_bytes,
                "student_bytes": base.weight_bytes,
                "comparison": result,
            }
        )
    return losses

"""Error control for "the smallest student that wins": fixed-sequence tests along the ladder, Holm
across references.

A ladder of K student sizes tested against a reference with K separate tests at level alpha makes
"at least one false win" far likelier than alpha (about 1 - (1 - alpha)^K for independent tests),
and the smallest false win is exactly the one a "smallest winner" rule reports. These procedures
bound the family-wise error rate (FWER: the chance of declaring any false win) at alpha.

- `ladder_order(parameters)`: the declared testing order, largest student first.
- `fixed_sequence(p_values, alpha)`: the fixed-sequence (step-down along a declared order) test
  of Maurer, Hothorn & Lehmacher (1995) and Hsu & Berger (1999, JASA 94:468): test the first
  hypothesis at the full alpha, go on while each is rejected, stop at the first that is not. No
  penalty for the ladder's length, because no hypothesis is tested unless all before it fell.
- `holm(p_values, alpha)`: Holm's (1979, Scand. J. Statist. 6:65) sequentially rejective
  Bonferroni procedure, with adjusted p values.
- `holm_fixed_sequences(sequences, alpha)`: several ladders at once (one per reference, or per
  reference and data set), each a fixed sequence, with Holm's alpha recycling between them; it is
  `fixed_sequence` for one ladder and `holm` for ladders of one step.

A hypothesis is rejected when p <= its level (Holm's and Hsu & Berger's convention; any valid p
value has P[p <= u] <= u under its null).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

REJECTED, NOT_REJECTED, NOT_TESTED = "rejected", "not rejected", "not tested"


def _check(p_values: Sequence[float], alpha: float) -> list[float]:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    values = [float(p) for p in p_values]
    for p in values:
        if not 0 <= p <= 1:  # also catches NaN
            raise ValueError(f"p values must lie in [0, 1], got {p}")
    return values


def ladder_order(parameters: Sequence[int]) -> list[int]:
    """Indices of `parameters` in testing order: largest first, ties in their given order.

    The order must be fixed before any result is seen; size is such an order, and largest first
    puts the students most likely to win at the front, where a failure ends the sequence.
    """
    return sorted(range(len(parameters)), key=lambda i: -parameters[i])


@dataclass(frozen=True)
class SequenceResult:
    """A fixed-sequence test along one declared order.

    `decisions[i]` is "rejected", "not rejected" or "not tested" for the i-th hypothesis in that
    order; `last_rejected` is the index of the last rejection (on a ladder ordered largest first,
    the smallest winner), None when the first was not rejected. `level` is the level every tested
    step used; `procedure` names the procedure in words for the report.
    """

    decisions: list[str]
    last_rejected: int | None
    level: float
    procedure: str

    @property
    def rejected(self) -> list[bool]:
        return [d == REJECTED for d in self.decisions]

    @property
    def complete(self) -> bool:
        """Every hypothesis in the sequence was rejected."""
        return all(d == REJECTED for d in self.decisions)

    def as_dict(self) -> dict:
        return asdict(self)


def fixed_sequence(p_values: Sequence[float], alpha: float, *, level: float | None = None) -> SequenceResult:
    """Fixed-sequence test of `p_values` given in the declared order (ladder: largest student first).

    H_1 is tested at `level` (default alpha); H_{i+1} is tested, at the same level, only if H_1..H_i
    were all rejected; the first non-rejection stops the sequence and later p values, however small,
    are not looked at. FWER <= level (Hsu & Berger 1999): if H_j is the first true null in the order,
    a false rejection needs H_j rejected, which happens with probability at most level.
    On [0.01, 0.03, 0.2, 0.001] at 0.05: decisions rejected, rejected, not rejected, not tested;
    last_rejected = 1.
    """
    values = _check(p_values, alpha)
    used = alpha if level is None else level
    decisions = []
    going = True
    for p in values:
        if not going:
            decisions.append(NOT_TESTED)
        elif p <= used:
            decisions.append(REJECTED)
        else:
            decisions.append(NOT_REJECTED)
            going = False
    rejected = [i for i, d in enumerate(decisions) if d == REJECTED]
    return SequenceResult(
        decisions=decisions,
        last_rejected=rejected[-1] if rejected else None,
        level=used,
        procedure=f"fixed-sequence test in declared order at level {used:g}",
    )


@dataclass(frozen=True)
class HolmResult:
    """Holm's procedure: which hypotheses fell, and each one's adjusted p value (reject iff <= alpha)."""

    rejected: list[bool]
    adjusted: list[float]
    alpha: float

    def as_dict(self) -> dict:
        return asdict(self)


def holm(p_values: Sequence[float], alpha: float) -> HolmResult:
    """Holm (1979): sort the m p values ascending; reject p_(1) if <= alpha/m, then p_(2) if
    <= alpha/(m-1), and so on, stopping at the first that is not. Strong FWER control at alpha
    under any dependence. Adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)), in input order.
    """
    values = _check(p_values, alpha)
    m = len(values)
    order = sorted(range(m), key=lambda i: values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[i]))
        adjusted[i] = running
    return HolmResult(rejected=[a <= alpha for a in adjusted], adjusted=adjusted, alpha=alpha)


@dataclass(frozen=True)
class FamilyResult:
    """Several fixed sequences under one FWER: one `SequenceResult` per key, in the input's order.

    `levels[key]` is the level that sequence was last tested at (alpha / number of sequences at
    first, more once others finished); `rounds` counts the passes of the procedure.
    """

    sequences: dict[Hashable, SequenceResult]
    levels: dict[Hashable, float]
    alpha: float
    rounds: int
    procedure: str

    def as_dict(self) -> dict:
        return {
            "sequences": {str(k): v.as_dict() for k, v in self.sequences.items()},
            "levels": {str(k): v for k, v in self.levels.items()},
            "alpha": self.alpha,
            "rounds": self.rounds,
            "procedure": self.procedure,
        }


def holm_fixed_sequences(sequences: Mapping[Hashable, Sequence[float]], alpha: float) -> FamilyResult:
    """Fixed-sequence tests of several ladders with Holm's recycling of alpha between them.

    `sequences` maps a key (a reference name, or a (reference, data set) pair) to its p values in
    the declared order. Each of the K sequences starts at level alpha / K. A sequence whose every
    hypothesis is rejected is finished and its share of alpha goes to the others: the remaining
    sequences are retested from their start at alpha / (number unfinished), and so on until no
    further sequence finishes. A sequence's decisions can only gain rejections between passes.

    FWER <= alpha, under any dependence between the sequences (which share students and problems).
    Sketch: let T be the set of sequences holding a true null, t = |T| >= 1, and h_k the first true
    null of sequence k in T. By Bonferroni, P[some h_k has p <= alpha / t] <= t * alpha / t = alpha.
    Outside that event no true null is rejected: in sequence k a true null can only be reached or
    rejected after h_k is, and sequence k cannot finish while h_k stands, so while no h_k has
    fallen all t sequences of T are unfinished, every level is <= alpha / t < p(h_k), and no h_k
    falls. This is the graphical procedure of Bretz, Maurer, Brannath & Posch (2009, Stat. Med.
    28:586) for chains that pass their weight on within the chain and, when finished, equally to
    the other chains; with one sequence it is `fixed_sequence`, with sequences of one hypothesis
    it is `holm`.
    """
    if not sequences:
        raise ValueError("no sequences to test")
    checked = {key: _check(p_values, alpha) for key, p_values in sequences.items()}
    finished: set[Hashable] = set()
    results: dict[Hashable, SequenceResult] = {}
    levels: dict[Hashable, float] = {}
    rounds = 0
    while True:
        rounds += 1
        active = [key for key in checked if key not in finished]
        if not active:
            break
        level = alpha / len(active)
        newly_finished = False
        for key in active:
            results[key] = fixed_sequence(checked[key], alpha, level=level)
            levels[key] = level
            if results[key].complete:
                finished.add(key)
                newly_finished = True
        if not newly_finished:
            break
    k = len(checked)
    procedure = (
        f"fixed-sequence test in declared order at level {alpha:g}"
        if k == 1
        else f"fixed-sequence test per ladder, Holm across {k} ladders (start at alpha/{k}, "
        f"alpha of finished ladders passed on), FWER {alpha:g}"
    )
    return FamilyResult(
        sequences={key: results[key] for key in checked},
        levels={key: levels[key] for key in checked},
        alpha=alpha,
        rounds=rounds,
        procedure=procedure,
    )

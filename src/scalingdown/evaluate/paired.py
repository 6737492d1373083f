"""Paired tests: is model A more accurate than model B on the same test problems?

Two models answering the same problems give paired outcomes, so a test on the pairs is far more
powerful than comparing two independent accuracies: a problem both get right (or both wrong) says
nothing about which is better; only the discordant problems do.

- `mcnemar_exact(b, c)`: the exact McNemar test. Under "equally accurate", each of the b + c
  discordant problems is A's win with probability 1/2, so min(b, c) is Binomial(b + c, 1/2) in its
  lower tail; p = min(1, 2 P[X <= min(b, c)]), computed with exact integers.
- `paired_bootstrap(a, b)`: resample problems with replacement and recompute the accuracy
  difference; the 95% interval is the percentile interval of the resampled differences.
- `compare(a_rows, b_rows)`: aligns two models' prediction rows by problem id and returns both.
  The p value comes from the chosen test; the interval of the difference always comes from the
  bootstrap (McNemar gives a p value, not an interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from scalingdown.errors import UserError

TESTS = ("mcnemar", "bootstrap")


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p value for `b` pairs won by A and `c` won by B; 1.0 when b + c == 0."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Exact integers, then one division: floats would underflow 2**-n for a few thousand problems.
    return min(1.0, 2 * tail / (1 << n))


def paired_bootstrap(
    a: Sequence[bool], b: Sequence[bool], *, samples: int = 10000, seed: int = 0
) -> tuple[float, float, float, float]:
    """Accuracy difference acc(a) - acc(b) with its 95% percentile interval and a two-sided p value.

    `a[i]` and `b[i]` say whether each model got problem i right. A resample draws n problems with
    replacement; since a problem's difference is +1, -1 or 0, the resampled difference depends only
    on how many +1 and -1 problems were drawn, which is Multinomial(n; b/n, c/n, rest). Drawing
    those counts is the same resampling as drawing indices, in O(samples) memory instead of
    O(samples * n).

    p: the share of resampled differences on the other side of 0 from the observed one (a
    resampled 0 counts as the other side), doubled, capped at 1. It is floored at 1 / samples, since
    `samples` resamples cannot resolve a smaller p; a difference of exactly 0 has p = 1.
    Returns (diff, ci_low, ci_high, p).
    """
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        raise ValueError("no paired outcomes to resample")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    wins = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    losses = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    diff = (wins - losses) / n
    rng = np.random.default_rng(seed)
    probabilities = [wins / n, losses / n, (n - wins - losses) / n]
    counts = rng.multinomial(n, probabilities, size=samples)
    resampled = (counts[:, 0] - counts[:, 1]) / n
    low, high = np.quantile(resampled, [0.025, 0.975])
    if diff == 0:
        p = 1.0
    else:
        other_side = np.count_nonzero(resampled <= 0) if diff > 0 else np.count_nonzero(resampled >= 0)
        p = min(1.0, max(2 * other_side / samples, 1 / samples))
    return diff, float(low), float(high), float(p)


@dataclass(frozen=True)
class Comparison:
    """Model A against model B on the `n` problems both answered.

    `diff` = acc_a - acc_b with its bootstrap 95% interval (ci_low, ci_high); `b` counts problems
    only A got right, `c` those only B got right; `p` is two-sided, from `test`.
    """

    n: int
    acc_a: float
    acc_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float
    b: int
    c: int
    test: str

    def as_dict(self) -> dict:
        return asdict(self)

    def wins(self, alpha: float) -> bool:
        """A is more accurate than B at level `alpha`."""
        return self.diff > 0 and self.p < alpha


def outcomes_by_id(rows: Sequence[dict], label: str = "predictions") -> dict[str, bool]:
    """`{problem id: correct}` of prediction rows; a row without them, or a repeated id, is a UserError."""
    out: dict[str, bool] = {}
    for number, row in enumerate(rows, start=1):
        pid, correct = row.get("id"), row.get("correct")
        if not isinstance(pid, str) or not isinstance(correct, bool):
            raise UserError(f"row {number} of {label} needs a string 'id' and a boolean 'correct'")
        if pid in out:
            raise UserError(f"problem id {pid!r} appears twice in {label}")
        out[pid] = correct
    return out


def align(
    a_rows: Sequence[dict], b_rows: Sequence[dict], *, labels: tuple[str, str] = ("A", "B")
) -> tuple[list[str], list[bool], list[bool]]:
    """The problem ids both models answered (in A's order) and each model's outcome on them."""
    a = outcomes_by_id(a_rows, labels[0])
    b = outcomes_by_id(b_rows, labels[1])
    ids = [pid for pid in a if pid in b]
    if not ids:
        raise UserError(f"{labels[0]} and {labels[1]} share no problem id, so they cannot be compared")
    return ids, [a[i] for i in ids], [b[i] for i in ids]


def compare(
    a_rows: Sequence[dict],
    b_rows: Sequence[dict],
    *,
    test: Literal["mcnemar", "bootstrap"] = "mcnemar",
    samples: int = 10000,
    seed: int = 0,
    labels: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Paired comparison of two models' prediction rows (dicts with `id` and `correct`).

    Only problems both answered count. Raises `UserError` when they share none.
    """
    if test not in TESTS:
        raise UserError(f"unknown paired test {test!r}; known: {', '.join(TESTS)}")
    _, a, b = align(a_rows, b_rows, labels=labels)
    n = len(a)
    wins = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    losses = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    diff, low, high, p_boot = paired_bootstrap(a, b, samples=samples, seed=seed)
    p = mcnemar_exact(wins, losses) if test == "mcnemar" else p_boot
    return Comparison(
        n=n,
        acc_a=sum(a) / n,
        acc_b=sum(b) / n,
        diff=diff,
        ci_low=low,
        ci_high=high,
        p=p,
        b=wins,
        c=losses,
        test=test,
    )

"""Accuracy with its n and a 95% confidence interval.

The interval is Wilson's score interval: unlike the normal approximation it stays inside [0, 1] and
keeps close to its nominal coverage at small n and at accuracies near 0 or 1, which is where tiny
students live.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion `correct / n`; (0, 1) when n == 0."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the bound is exactly 0 (1); rounding would otherwise leave a 1e-18 residue.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Accuracy:
    correct: int
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        low, high = 100 * self.ci_low, 100 * self.ci_high
        return f"{100 * self.accuracy:.1f}% (n={self.n}, 95% CI {low:.1f}-{high:.1f})"


def accuracy(flags: Sequence[bool]) -> Accuracy:
    """Accuracy of a list of per-problem correctness flags, with its Wilson 95% interval."""
    return accuracy_of(sum(bool(f) for f in flags), len(flags))


def accuracy_of(correct: int, n: int) -> Accuracy:
    """`correct` of `n` as an Accuracy with its Wilson 95% interval."""
    low, high = wilson_interval(correct, n)
    return Accuracy(correct=correct, n=n, accuracy=correct / n if n else 0.0, ci_low=low, ci_high=high)

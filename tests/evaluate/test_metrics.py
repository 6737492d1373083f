"""Accuracy and its Wilson interval against textbook values and a brute-force coverage check."""

from __future__ import annotations

import math
import random

import pytest

from scalingdown.evaluate.metrics import accuracy, wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # Wilson 95% intervals as tabulated by Newcombe (1998), Table I
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=6e-4) and hi == pytest.approx(high, abs=6e-4)


def test_interval_stays_in_unit_range_and_contains_the_estimate() -> None:
    for n in (1, 2, 5, 50, 1319):
        for k in range(0, n + 1, max(1, n // 7)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_coverage_is_near_nominal() -> None:
    rng = random.Random(0)
    n, p, trials = 200, 0.15, 2000
    covered = 0
    for _ in range(trials):
        k = sum(rng.random() < p for _ in range(n))
        lo, hi = wilson_interval(k, n)
        covered += lo <= p <= hi
    assert 0.93 <= covered / trials <= 0.97


def test_accuracy_of_flags() -> None:
    acc = accuracy([True, False, True, True])
    assert (acc.correct, acc.n, acc.accuracy) == (3, 4, 0.75)
    assert acc.ci_low < 0.75 < acc.ci_high
    empty = accuracy([])
    assert empty.n == 0 and (empty.ci_low, empty.ci_high) == (0.0, 1.0)
    assert "n=4" in str(acc) and not math.isnan(acc.ci_low)

"""Seeds as replicates: the two-level bootstrap against the problem bootstrap and a coverage
simulation with seed noise; the pooled paired test against McNemar, hand-worked tails, and its
null distribution."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from scalingdown.evaluate.metrics import wilson_interval
from scalingdown.evaluate.paired import mcnemar_exact
from scalingdown.evaluate.replicates import (
    exact_sign_flip_p,
    pooled_paired_test,
    seed_pooled_accuracy,
    sign_flip_p,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_per_seed_accuracies_mean_and_spread_are_the_plain_ones() -> None:
    x = np.zeros((3, 10), dtype=bool)
    x[0, :6] = True  # 0.6
    x[1, :7] = True  # 0.7
    x[2, :8] = True  # 0.8
    r = seed_pooled_accuracy(x, samples=500)
    assert r.per_seed == pytest.approx([0.6, 0.7, 0.8])
    assert r.mean == pytest.approx(0.7)
    assert r.seed_sd == pytest.approx(0.1)
    assert r.per_seed_ci == [wilson_interval(k, 10) for k in (6, 7, 8)]
    assert r.seeds == 3 and r.problems == 10 and r.seed_noise_included
    assert r.ci_low <= r.mean <= r.ci_high


def test_one_seed_reduces_to_the_problem_bootstrap_and_says_it_ignores_seed_noise() -> None:
    rng = np.random.default_rng(3)
    row = rng.random(400) < 0.6
    one = seed_pooled_accuracy(row, samples=4000, seed=7)
    assert not one.seed_noise_included and one.seed_sd is None
    assert "ignores seed" in one.note
    # An independent problem bootstrap (index resampling) gives the same interval up to MC error,
    # and both sit near Wilson's interval at n = 400.
    draws = np.random.default_rng(11).integers(0, 400, size=(4000, 400))
    low, high = np.quantile(row[draws].mean(axis=1), [0.025, 0.975])
    assert one.ci_low == pytest.approx(low, abs=0.006)
    assert one.ci_high == pytest.approx(high, abs=0.006)
    wilson = wilson_interval(int(row.sum()), 400)
    assert one.ci_low == pytest.approx(wilson[0], abs=0.01)
    assert one.ci_high == pytest.approx(wilson[1], abs=0.01)
    # Seeds that agree on every problem add no seed noise: exactly the one-seed interval.
    same = seed_pooled_accuracy(np.tile(row, (3, 1)), samples=4000, seed=7)
    assert (same.ci_low, same.ci_high) == pytest.approx((one.ci_low, one.ci_high), abs=1e-12)
    assert same.seed_noise_included and same.seed_sd == 0


def test_two_level_interval_covers_despite_seed_noise_where_a_problem_bootstrap_does_not() -> None:
    """Each simulated study trains 5 seeds whose accuracy shifts by a seed effect (logit sd 0.35)
    on 200 fresh problems of varied difficulty. The estimand is the recipe's accuracy over seeds
    and problems. The problem-only bootstrap treats the 5 seeds as fixed and undercovers; the
    two-level one keeps near 95%. 100 studies x 400 resamples: coverage s.e. is about 2.2 points,
    and the gap between the two (about 13 points in a 200-study pilot) is several times that."""
    rng = np.random.default_rng(5)
    centre, sd_problem, sd_seed = 0.2, 1.5, 0.35
    z = rng.standard_normal((2, 1_000_000))
    truth = _sigmoid(centre + sd_problem * z[0] + sd_seed * z[1]).mean()
    two_level = problem_only = 0
    studies = 100
    for i in range(studies):
        difficulty = rng.standard_normal(200) * sd_problem
        shift = rng.standard_normal((5, 1)) * sd_seed
        x = rng.random((5, 200)) < _sigmoid(centre + difficulty + shift)
        r = seed_pooled_accuracy(x, samples=400, seed=i)
        two_level += r.ci_low <= truth <= r.ci_high
        draws = rng.integers(0, 200, size=(400, 200))
        low, high = np.quantile(x.mean(axis=0)[draws].mean(axis=1), [0.025, 0.975])
        problem_only += low <= truth <= high
    assert two_level / studies >= 0.88
    assert problem_only / studies <= two_level / studies - 0.06


def test_outcomes_must_be_boolean_seeds_by_problems() -> None:
    with pytest.raises(ValueError, match="booleans"):
        seed_pooled_accuracy(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="non-empty"):
        seed_pooled_accuracy(np.zeros((2, 0), dtype=bool))
    with pytest.raises(ValueError, match="same problems"):
        pooled_paired_test(np.ones((2, 5), dtype=bool), np.ones((1, 6), dtype=bool))


def test_one_seed_each_is_mcnemar_and_one_sided_is_the_binomial_tail() -> None:
    # 9 problems only the student solves, 2 only the reference, 29 both or neither.
    student = np.array([True] * 9 + [False] * 2 + [True] * 15 + [False] * 14)
    reference = np.array([False] * 9 + [True] * 2 + [True] * 15 + [False] * 14)
    two = pooled_paired_test(student, reference, alternative="two-sided")
    assert two.exact and two.p == pytest.approx(mcnemar_exact(9, 2), rel=1e-12)
    one = pooled_paired_test(student, reference)
    tail = sum(comb(11, k) for k in range(9, 12)) / 2**11  # P[Bin(11, 1/2) >= 9]
    assert one.p == pytest.approx(tail, rel=1e-12)
    assert one.diff == pytest.approx(7 / 40)
    assert one.wins(0.05)
    worse = pooled_paired_test(reference, student)
    assert worse.p == pytest.approx(1 - (1 + 11) / 2**11, rel=1e-12)  # P[Bin(11, 1/2) >= 2]
    assert not worse.wins(0.05)


def test_seeds_are_averaged_per_problem_before_the_test() -> None:
    rng = np.random.default_rng(2)
    student = rng.random((3, 120)) < 0.6
    reference = rng.random((2, 120)) < 0.5
    r = pooled_paired_test(student, reference, samples=3000, seed=4)
    d = student.mean(axis=0) - reference.mean(axis=0)
    assert r.diff == pytest.approx(d.mean())
    assert (r.student_seeds, r.reference_seeds, r.n) == (3, 2, 120)
    assert not r.exact
    # Same statistic, same signs: the p value is sign_flip_p's on the pooled differences.
    assert r.p == pytest.approx(sign_flip_p(d * 6, samples=3000, seed=4)[0])
    assert r.ci_low < r.diff < r.ci_high


def test_exact_enumeration_counts_every_sign_pattern() -> None:
    # d = (1, 1, 1/3): the sums of the 8 sign patterns that reach 7/3 are only the identity.
    assert exact_sign_flip_p(np.array([3, 3, 1, 0, 0])) == pytest.approx(1 / 8)
    # d = (1, 1, -1): sums >= 1 are (+,+,-), (+,+,+), (+,-,+), (-,+,+): 4 of 8.
    assert exact_sign_flip_p(np.array([1, 1, -1])) == pytest.approx(4 / 8)
    assert exact_sign_flip_p(np.zeros(5)) == 1.0
    tie = pooled_paired_test(np.ones((2, 30), dtype=bool), np.ones((1, 30), dtype=bool))
    assert tie.diff == 0 and tie.p == 1.0


def test_pooled_p_is_uniform_under_the_null_and_has_power_against_a_real_gain() -> None:
    """200 studies in which student (3 seeds) and reference (1 seed) share every problem's
    difficulty and are equally accurate: the p values' rejection rates stay within 3 s.e. of
    uniform. 300 permutations per test are enough to resolve rates at 0.05, 0.1 and 0.5."""
    rng = np.random.default_rng(8)
    ps = []
    for i in range(200):
        difficulty = rng.beta(0.8, 1.2, 200)
        student = rng.random((3, 200)) < difficulty
        reference = rng.random((1, 200)) < difficulty
        ps.append(pooled_paired_test(student, reference, samples=300, seed=i).p)
    ps = np.array(ps)
    for level in (0.05, 0.1, 0.5):
        se = np.sqrt(level * (1 - level) / len(ps))
        assert abs(np.mean(ps <= level) - level) <= 3 * se + 1 / 301
    difficulty = rng.beta(0.8, 1.2, 300)
    better = np.clip(difficulty + 0.15, 0, 1)
    gain = pooled_paired_test(rng.random((3, 300)) < better, rng.random(300) < difficulty, samples=2000)
    assert gain.p < 0.01 and gain.ci_low > 0

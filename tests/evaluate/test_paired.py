"""Paired tests: exact McNemar against scipy and hand-computed tails, the bootstrap's coverage,
and alignment of two models' predictions by problem id."""

from __future__ import annotations

import random
from fractions import Fraction
from math import comb

import pytest

from scalingdown.errors import UserError
from scalingdown.evaluate.paired import compare, mcnemar_exact, paired_bootstrap


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [  # 2 * P[X <= min(b, c)], X ~ Bin(b + c, 1/2), worked by hand
        (0, 5, Fraction(2, 32)),  # 2 * 1/32
        (1, 9, Fraction(2 * (1 + 10), 1024)),  # 2 * (C(10,0) + C(10,1)) / 2^10
        (2, 8, Fraction(2 * (1 + 10 + 45), 1024)),
        (3, 3, Fraction(1)),  # 2 * 42/64 > 1, capped
        (0, 1, Fraction(1)),  # one discordant pair proves nothing
    ],
)
def test_mcnemar_matches_hand_computed_tails(b: int, c: int, expected: Fraction) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(float(expected), rel=1e-12)


def test_mcnemar_matches_scipy_binomtest() -> None:
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(4, 17), (30, 45), (12, 12), (0, 30), (101, 140), (7, 0)]:
        expected = stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_is_symmetric_and_handles_no_discordant_pairs() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    for b, c in [(3, 11), (40, 25), (0, 9)]:
        assert mcnemar_exact(b, c) == mcnemar_exact(c, b)
    # More lopsided splits of the same discordant total give smaller p.
    assert mcnemar_exact(10, 10) > mcnemar_exact(7, 13) > mcnemar_exact(3, 17) > mcnemar_exact(0, 20)


def test_mcnemar_stays_exact_for_thousands_of_discordant_pairs() -> None:
    # 2**-3000 underflows a float; the exact integer tail does not.
    p = mcnemar_exact(1400, 1600)
    exact = Fraction(2 * sum(comb(3000, i) for i in range(1401)), 2**3000)
    assert p == pytest.approx(float(exact), rel=1e-12)
    assert 0 < p < 0.001


def test_bootstrap_difference_interval_and_p() -> None:
    rng = random.Random(3)
    a = [rng.random() < 0.7 for _ in range(300)]
    b = [rng.random() < 0.4 for _ in range(300)]
    diff, low, high, p = paired_bootstrap(a, b, samples=2000, seed=0)
    assert diff == pytest.approx((sum(a) - sum(b)) / 300)
    assert low < diff < high
    assert low > 0  # a 30-point gap on 300 problems is far from 0
    assert p == pytest.approx(1 / 2000)  # no resample crosses 0: p sits at its floor
    # Swapping the models mirrors the difference and, up to resampling noise, its interval.
    diff2, low2, high2, p2 = paired_bootstrap(b, a, samples=2000, seed=0)
    assert diff2 == pytest.approx(-diff)
    assert (low2, high2) == pytest.approx((-high, -low), abs=0.015)
    assert p2 == p


def test_bootstrap_identical_models_have_zero_difference_and_p_one() -> None:
    a = [True, False, True, True, False] * 20
    diff, low, high, p = paired_bootstrap(a, a, samples=500, seed=1)
    assert (diff, low, high, p) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_interval_covers_the_true_difference_at_about_95_percent() -> None:
    # Joint law of (A right, B right): both 0.45, A only 0.17, B only 0.08, neither 0.30.
    true_diff = 0.17 - 0.08
    rng = random.Random(11)
    trials, n, covered = 400, 200, 0
    for trial in range(trials):
        a, b = [], []
        for _ in range(n):
            u = rng.random()
            a.append(u < 0.62)  # [0, 0.45) both, [0.45, 0.62) A only
            b.append(u < 0.45 or 0.62 <= u < 0.70)  # [0.62, 0.70) B only
        _, low, high, _ = paired_bootstrap(a, b, samples=1000, seed=trial)
        covered += low <= true_diff <= high
    assert 0.91 <= covered / trials <= 0.98


def test_bootstrap_p_is_roughly_uniform_under_the_null() -> None:
    # Equal accuracies: p < 0.05 should happen about 5% of the time, not 20%.
    rng = random.Random(5)
    trials, rejections = 300, 0
    for trial in range(trials):
        a = [rng.random() < 0.5 for _ in range(150)]
        b = [rng.random() < 0.5 for _ in range(150)]
        rejections += paired_bootstrap(a, b, samples=1000, seed=trial)[3] < 0.05
    assert rejections / trials < 0.10


def _rows(flags: dict[str, bool]) -> list[dict]:
    return [{"id": pid, "correct": ok, "answer": "x"} for pid, ok in flags.items()]


def test_compare_aligns_rows_by_id_not_by_position() -> None:
    a = _rows({"p1": True, "p2": True, "p3": False, "p4": True, "only-a": True})
    # B lists the same problems in another order, plus one A lacks.
    b = _rows({"p4": False, "p3": True, "only-b": False, "p1": True, "p2": False})
    result = compare(a, b, test="mcnemar", samples=500, seed=0)
    assert result.n == 4
    assert (result.b, result.c) == (2, 1)  # A alone: p2, p4; B alone: p3
    assert result.acc_a == pytest.approx(3 / 4) and result.acc_b == pytest.approx(2 / 4)
    assert result.diff == pytest.approx(0.25)
    assert result.p == pytest.approx(mcnemar_exact(2, 1))


def test_compare_p_comes_from_the_chosen_test_and_the_interval_from_the_bootstrap() -> None:
    rng = random.Random(8)
    flags_a = {f"q{i}": rng.random() < 0.6 for i in range(120)}
    flags_b = {f"q{i}": rng.random() < 0.45 for i in range(120)}
    a, b = _rows(flags_a), _rows(flags_b)
    mc = compare(a, b, test="mcnemar", samples=1000, seed=2)
    boot = compare(a, b, test="bootstrap", samples=1000, seed=2)
    _, low, high, p_boot = paired_bootstrap(
        list(flags_a.values()), list(flags_b.values()), samples=1000, seed=2
    )
    assert (mc.ci_low, mc.ci_high) == (boot.ci_low, boot.ci_high) == (low, high)
    assert mc.p == mcnemar_exact(mc.b, mc.c) and boot.p == p_boot
    assert mc.test == "mcnemar" and boot.test == "bootstrap"
    assert mc.wins(0.05) == (mc.diff > 0 and mc.p < 0.05)


def test_compare_without_shared_ids_is_a_user_error() -> None:
    with pytest.raises(UserError, match="share no problem id"):
        compare(_rows({"a1": True}), _rows({"b1": True}), labels=("s1", "ref"))


def test_compare_rejects_repeated_ids_and_rows_without_correct() -> None:
    with pytest.raises(UserError, match="appears twice"):
        compare([{"id": "p", "correct": True}] * 2, _rows({"p": False}))
    with pytest.raises(UserError, match="boolean 'correct'"):
        compare([{"id": "p"}], _rows({"p": False}))

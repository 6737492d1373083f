"""Fixed-sequence and Holm: hand-worked examples, the equivalences between them, and a simulation
of the family-wise error rate of "the smallest winner" against the uncorrected rule."""

from __future__ import annotations

import numpy as np
import pytest

from scalingdown.evaluate.replicates import sign_flip_p
from scalingdown.evaluate.stepdown import (
    NOT_REJECTED,
    NOT_TESTED,
    REJECTED,
    fixed_sequence,
    holm,
    holm_fixed_sequences,
    ladder_order,
)


def test_fixed_sequence_stops_at_the_first_failure_and_ignores_what_follows() -> None:
    r = fixed_sequence([0.01, 0.03, 0.2, 0.001], 0.05)
    assert r.decisions == [REJECTED, REJECTED, NOT_REJECTED, NOT_TESTED]
    assert r.last_rejected == 1  # the 0.001 after a failure does not count
    assert r.rejected == [True, True, False, False] and not r.complete
    assert fixed_sequence([0.2, 0.001, 0.001], 0.05).last_rejected is None
    done = fixed_sequence([0.001, 0.05, 0.04], 0.05)  # p == level rejects (Holm's convention)
    assert done.complete and done.last_rejected == 2
    assert fixed_sequence([], 0.05).last_rejected is None


def test_ladder_order_is_largest_first_with_ties_in_given_order() -> None:
    assert ladder_order([135, 1500, 360, 1500, 500]) == [1, 3, 4, 2, 0]


def test_holm_matches_a_hand_worked_example() -> None:
    # Sorted: 0.005 <= 0.05/4 rejects, 0.01 <= 0.05/3 rejects, 0.03 > 0.05/2 stops.
    r = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert r.rejected == [True, False, False, True]
    # Adjusted: 4 * 0.005, 3 * 0.01, max(0.03, 2 * 0.03), max(0.06, 1 * 0.04).
    assert r.adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.9], 0.05).adjusted == pytest.approx([1.0, 1.0])


def test_a_finished_ladder_passes_its_alpha_to_the_others() -> None:
    # Round 1 at 0.05/2: A rejects 0.01, stops at 0.03; B rejects both and is finished.
    # Round 2 at 0.05: A now rejects 0.03 too and stops at 0.2.
    r = holm_fixed_sequences({"A": [0.01, 0.03, 0.2], "B": [0.001, 0.004]}, 0.05)
    assert r.sequences["A"].last_rejected == 1 and r.sequences["B"].last_rejected == 1
    assert r.levels == {"A": 0.05, "B": 0.025} and r.rounds == 2
    assert "Holm across 2" in r.procedure
    # Without a finished ladder nothing is recycled: Bonferroni's alpha/2 for each.
    r = holm_fixed_sequences({"A": [0.01, 0.03, 0.2], "B": [0.001, 0.2]}, 0.05)
    assert r.sequences["A"].last_rejected == 0 and r.sequences["B"].last_rejected == 0
    assert r.levels == {"A": 0.025, "B": 0.025}


def test_family_procedure_is_fixed_sequence_for_one_ladder_and_holm_for_single_steps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = list(rng.uniform(0, 0.08, size=5))
        one = holm_fixed_sequences({"ref": p}, 0.05).sequences["ref"]
        assert one.decisions == fixed_sequence(p, 0.05).decisions
        singles = holm_fixed_sequences({i: [v] for i, v in enumerate(p)}, 0.05)
        assert [singles.sequences[i].complete for i in range(5)] == holm(p, 0.05).rejected


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        fixed_sequence([0.1], 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, float("nan")], 0.05)
    with pytest.raises(ValueError, match="no sequences"):
        holm_fixed_sequences({}, 0.05)


STUDIES, STUDENTS, SEEDS, PROBLEMS, ALPHA = 2000, 4, 3, 200, 0.05


@pytest.fixture(scope="module")
def null_studies() -> np.ndarray:
    """Sign-flip p values `(studies, references, students)` of studies with no real winner.

    Every study draws each problem's solve rate from Beta(0.8, 1.2) (so models are correlated: all
    find the same problems hard) and gives it to every model: 4 students x 3 seeds and 2
    references x 1 seed, all equally accurate, on 200 problems. p values come from the pooled
    test's own statistic and permutation p (`sign_flip_p`, 1,000 sign draws shared across tests,
    which keeps each p valid) on the seed-averaged per-problem differences.
    """
    rng = np.random.default_rng(13)
    rate = rng.beta(0.8, 1.2, size=(STUDIES, 1, 1, PROBLEMS))
    students = (rng.random((STUDIES, STUDENTS, SEEDS, PROBLEMS)) < rate).mean(axis=2)
    references = (rng.random((STUDIES, 2, 1, PROBLEMS)) < rate)[:, :, 0, :].astype(float)
    d = students[:, None, :, :] - references[:, :, None, :]  # (studies, references, students, problems)
    return sign_flip_p(d.reshape(-1, PROBLEMS), samples=1000, seed=1).reshape(STUDIES, 2, STUDENTS)


def _mc_bound() -> float:
    return ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / STUDIES)


def test_fixed_sequence_keeps_the_false_win_rate_at_alpha_and_the_uncorrected_rule_does_not(
    null_studies: np.ndarray,
) -> None:
    """With every student equal to the reference, any declared winner is a false one. The ladder
    procedure declares one in at most alpha + 3 MC s.e. of 2,000 studies; the uncorrected rule
    (the smallest student with p <= alpha in 4 separate tests) clearly exceeds that."""
    p = null_studies[:, 0, :]  # one reference; students already in ladder order (largest first)
    ours = np.mean([fixed_sequence(row, ALPHA).last_rejected is not None for row in p])
    naive = np.mean((p <= ALPHA).any(axis=1))
    assert ours <= _mc_bound()
    assert naive > _mc_bound() + 0.02


def test_holm_across_two_references_keeps_the_family_error_at_alpha(null_studies: np.ndarray) -> None:
    ours = np.mean(
        [
            any(
                r.last_rejected is not None
                for r in holm_fixed_sequences({"r1": row[0], "r2": row[1]}, ALPHA).sequences.values()
            )
            for row in null_studies
        ]
    )
    naive = np.mean((null_studies <= ALPHA).any(axis=(1, 2)))
    assert ours <= _mc_bound()
    assert naive > _mc_bound() + 0.05


def test_true_winners_at_the_top_do_not_license_a_false_smallest_winner() -> None:
    """Strong control: the two largest students really are better (solve rate r + 0.15 (1 - r)),
    the two smallest equal the reference. A false finding is a win declared for either of the
    two small ones, and the ladder makes it in at most alpha + 3 MC s.e. of 2,000 studies while
    still finding the real winners (the uncorrected rule, with only two null students to pick
    from, names a small one more often)."""
    rng = np.random.default_rng(21)
    rate = rng.beta(0.8, 1.2, size=(STUDIES, 1, 1, PROBLEMS))
    better = rate + 0.15 * (1 - rate)
    rates = np.concatenate(
        [
            np.broadcast_to(better, (STUDIES, 2, 1, PROBLEMS)),
            np.broadcast_to(rate, (STUDIES, 2, 1, PROBLEMS)),
        ],
        axis=1,
    )
    students = (rng.random((STUDIES, STUDENTS, SEEDS, PROBLEMS)) < rates).mean(axis=2)
    reference = (rng.random((STUDIES, 1, PROBLEMS)) < rate[:, :, 0, :]).astype(float)
    p = sign_flip_p((students - reference).reshape(-1, PROBLEMS), samples=1000, seed=2).reshape(
        STUDIES, STUDENTS
    )
    last = [fixed_sequence(row, ALPHA).last_rejected for row in p]
    false_win = np.mean([k is not None and k >= 2 for k in last])
    found_both = np.mean([k is not None and k >= 1 for k in last])
    naive_false = np.mean((p[:, 2:] <= ALPHA).any(axis=1))
    assert false_win <= _mc_bound()
    assert found_both > 0.7
    assert naive_false > false_win

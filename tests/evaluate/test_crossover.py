"""The fitted crossover: the maximum-likelihood fit against a known curve, every status label on
constructed ladders, and the coverage of N*'s bootstrap interval in simulated studies."""

from __future__ import annotations

import numpy as np
import pytest

from scalingdown.evaluate.crossover import fit_crossover, fit_logistic

SIZES3 = [10**7, 10**8, 10**9]


def _exact(accuracies: list[float], seeds: int = 2, problems: int = 200) -> list[np.ndarray]:
    """Outcome arrays with exactly round(acc * problems) right answers per seed."""
    return [np.tile(np.arange(problems) < round(a * problems), (seeds, 1)) for a in accuracies]


def _reference(accuracy: float, problems: int = 200) -> np.ndarray:
    return (np.arange(problems) < round(accuracy * problems))[None, :]


def _curve(n: np.ndarray, a: float, b: float, floor: float) -> np.ndarray:
    return floor + (1 - floor) / (1 + np.exp(-(a + b * np.log(n))))


def test_fit_recovers_the_curve_that_generated_the_counts() -> None:
    # Counts equal to their expectations (n = 10^6 per size): the MLE is the generating curve.
    a, b, floor = -14.0, 0.75, 0.2
    sizes = np.array([1e7, 3e7, 1e8, 3e8, 1e9])
    x = np.log(sizes) - np.log(sizes).mean()
    n = np.full((1, 5), 1e6)
    k = n * _curve(sizes, a, b, floor)
    theta, converged = fit_logistic(x, k, n, floor)
    assert converged[0]
    assert theta[0, 1] == pytest.approx(b, rel=1e-6)
    assert theta[0, 0] - theta[0, 1] * np.log(sizes).mean() == pytest.approx(a, rel=1e-6)
    # Many data sets at once give each its own fit: a row of noisy counts does not disturb another.
    k2 = np.vstack([k, n * 0.5])
    theta2, converged2 = fit_logistic(x, k2, np.vstack([n, n]), floor)
    assert converged2.all() and theta2[0] == pytest.approx(theta[0]) and abs(theta2[1, 1]) < 1e-6


def test_bracketed_crossover_lies_between_the_rungs_and_the_curve_passes_through_it() -> None:
    c = fit_crossover(SIZES3, _exact([0.3, 0.5, 0.7]), _reference(0.55), 0.0, samples=300)
    assert c.status == "bracketed" and c.bracketed and c.direction is None
    assert 10**8 < c.n_star < 10**9
    assert c.ci_low < c.n_star < c.ci_high
    assert c.curve([c.n_star])[0] == pytest.approx(0.55, abs=1e-9)
    assert c.observed == pytest.approx([0.3, 0.5, 0.7])
    low, high = c.band(SIZES3)
    fit = c.curve(SIZES3)
    assert (low <= fit).all() and (fit <= high).all()
    assert set(c.as_dict()) >= {"n_star", "ci_low", "ci_high", "status", "intercept", "slope"}
    assert "boot_params" not in c.as_dict()


@pytest.mark.parametrize(
    ("accuracies", "reference", "floor", "status", "direction"),
    [
        ([0.3, 0.4, 0.5], 0.7, 0.0, "extrapolated", "above"),  # rising, but past the largest rung
        ([0.5, 0.6, 0.7], 0.4, 0.0, "extrapolated", "below"),  # even the smallest rung is above
        ([0.5, 0.4, 0.3], 0.6, 0.0, "never reaches", None),  # accuracy falls with size
        ([0.3, 0.5, 0.7], 1.0, 0.0, "never reaches", None),  # a perfect reference
        ([0.3, 0.5, 0.7], 0.2, 0.2, "always above", None),  # a reference at chance
        ([0.0, 0.0, 0.0], 0.3, 0.0, "fit failed", None),  # nothing to fit
        ([0.0, 0.0, 1.0], 0.5, 0.0, "fit failed", None),  # separated: no finite maximum
        ([0.1, 0.15, 0.5], 0.3, 0.2, "fit failed", None),  # one rung above the floor
    ],
)
def test_status_labels_on_constructed_ladders(
    accuracies: list[float], reference: float, floor: float, status: str, direction: str | None
) -> None:
    c = fit_crossover(SIZES3, _exact(accuracies), _reference(reference), floor, samples=200)
    assert c.status == status and c.direction == direction
    assert not c.bracketed
    if status == "extrapolated":
        assert (c.n_star > 10**9) if direction == "above" else (c.n_star < 10**7)
        assert c.ci_low < c.n_star < c.ci_high
    else:
        assert c.n_star is None
    if status == "never reaches":
        assert c.ci_high == np.inf  # no replicate reaches it either: unbounded, not a number
    if status == "fit failed":
        assert c.ci_low is None and c.ci_high is None


def test_sizes_below_the_floor_still_fit_when_enough_rungs_rise_above_it() -> None:
    sizes = [10**7, 3 * 10**7, 10**8, 3 * 10**8, 10**9]
    c = fit_crossover(sizes, _exact([0.1, 0.15, 0.3, 0.5, 0.7]), _reference(0.4), 0.2, samples=200)
    assert c.status == "bracketed" and 10**8 < c.n_star < 3 * 10**8


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct"):
        fit_crossover([10, 10], _exact([0.2, 0.3]), _reference(0.2), 0.0)
    with pytest.raises(ValueError, match="2 sizes but 3"):
        fit_crossover([10, 20], _exact([0.2, 0.3, 0.4]), _reference(0.2), 0.0)
    with pytest.raises(ValueError, match="floor"):
        fit_crossover([10, 20], _exact([0.2, 0.3]), _reference(0.2), 1.0)
    with pytest.raises(ValueError, match="same 199 problems"):
        fit_crossover([10, 20], _exact([0.2, 0.3]), _reference(0.2, 199), 0.0)


def test_the_interval_covers_a_known_crossover_in_at_least_90_percent_of_studies() -> None:
    """100 studies: 5 sizes (2e7 to 7.5e8) x 3 seeds, 300 five-option problems (floor 0.2), a
    reference at 50% and a true curve that reaches 50% at N* = 1e8. Models are correlated (half the
    time a model's draw on a problem is the problem's shared one, which keeps every marginal
    rate exact). 200 resamples per study: enough for 2.5% and 97.5% percentiles whose Monte Carlo
    error (a few % of the interval's width) is small next to the gap between the nominal 95% and
    the 90% asserted; a pilot covered 99 of 100."""
    floor, slope, reference, n_star = 0.2, 0.8, 0.5, 1e8
    q = (reference - floor) / (1 - floor)
    intercept = np.log(q / (1 - q)) - slope * np.log(n_star)
    sizes = [2 * 10**7, 5 * 10**7, 12 * 10**7, 3 * 10**8, 75 * 10**7]
    rng = np.random.default_rng(4)

    def draw(rate: float, seeds: int, shared: np.ndarray) -> np.ndarray:
        own = rng.random((seeds, shared.size))
        return np.where(rng.random((seeds, shared.size)) < 0.5, shared, own) < rate

    covered = bracketed = 0
    for study in range(100):
        shared = rng.random(300)
        outcomes = [draw(_curve(np.array(n), intercept, slope, floor), 3, shared) for n in sizes]
        fit = fit_crossover(sizes, outcomes, draw(reference, 1, shared), floor, samples=200, seed=study)
        covered += fit.ci_low <= n_star <= fit.ci_high
        bracketed += fit.bracketed
    assert covered >= 90
    assert bracketed >= 95

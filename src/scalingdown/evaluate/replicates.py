"""Seeds as replicates: accuracy and paired tests over problems *and* training seeds.

A student size is trained several times with different seeds; every run answers the same test
problems. The outcomes of one size are a `(seeds, problems)` boolean array, and "the accuracy of
this size" is a claim about both factors: another seed would give another student, another test
set other problems. These functions keep both sources of noise in view.

- `seed_pooled_accuracy(outcomes)`: the mean accuracy over seeds and problems, each seed's own
  accuracy, and a two-level bootstrap interval (resample seeds, then problems).
- `pooled_paired_test(student, reference)`: is the student size more accurate than the reference on
  the same problems? Per-problem correctness is averaged over each model's seeds; the p value comes
  from a paired sign-flip permutation test of the per-problem differences, the interval from the
  same two-level bootstrap as above.
- `sign_flip_p(differences)`: the permutation p value alone, vectorised over many tests at once
  (the error-control simulations use it on thousands of studies).

The bootstrap here is the *pigeonhole* (two-way) bootstrap for crossed factors (Owen 2007, Ann.
Appl. Stat. 1(2):386-411): a replicate draws seeds with replacement and, independently, one set of problem
indices with replacement that serves every seed of that replicate. One shared problem draw is right
because the problems are shared: every seed answered the very same test set, so the test set's
luck (easy or hard problems) is common to all seeds and must move them together. Drawing problems
afresh per seed would average that luck down as if each seed had its own test set and give too
narrow an interval. Owen shows this scheme is mildly conservative for the mean (it counts the
seed x problem interaction twice); with few seeds the seed half is mildly liberal instead (a
resample of S values has (S - 1) / S of their variance), which is why the report also lists every
seed's accuracy. References: Efron & Tibshirani (1993), *An Introduction to the Bootstrap*;
Davison & Hinkley (1997), *Bootstrap Methods and their Application*, ch. 3.8 (hierarchical data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from scalingdown.evaluate.metrics import wilson_interval

Alternative = Literal["greater", "less", "two-sided"]
ALTERNATIVES = ("greater", "less", "two-sided")
# Bootstrap replicates are processed in blocks of at most this many (replicate, problem) cells,
# so 10,000 replicates on a 1,319-problem test set never hold a 100 MB matrix at once.
_CELLS_PER_BLOCK = 2_000_000


def as_outcomes(outcomes: np.ndarray, label: str = "outcomes") -> np.ndarray:
    """`outcomes` as a `(seeds, problems)` bool array; a 1-D array is one seed. Raises ValueError."""
    array = np.asarray(outcomes)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{label} must be a non-empty (seeds, problems) array, got shape {array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{label} must hold booleans (or 0/1), one per seed and problem")
    return array.astype(bool)


def replicate_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the seed draws and the problem draws of one bootstrap.

    Two streams rather than one, so the problem draws do not depend on how many seeds there are:
    with identical seeds a two-level bootstrap gives exactly the one-seed problem bootstrap.
    """
    seeds_ss, problems_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(seeds_ss), np.random.default_rng(problems_ss)


def bootstrap_blocks(samples: int, problems: int) -> Iterator[int]:
    """Sizes of the blocks that `samples` replicates are processed in (they sum to `samples`)."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    block = max(1, _CELLS_PER_BLOCK // max(problems, 1))
    for start in range(0, samples, block):
        yield min(block, samples - start)


def resample_counts(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """`(size, n)` counts: row r says how often each of n items is drawn in n draws with replacement.

    One bincount over row-offset indices does all rows at once; numpy's multinomial, the same law,
    is several times slower for many rows.
    """
    draws = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)


def seed_resampled_means(outcomes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`(size, problems)` per-problem means over seeds drawn with replacement, one draw per row."""
    seeds = outcomes.shape[0]
    if seeds == 1:  # one seed: every resample is that seed
        return np.broadcast_to(outcomes.astype(float), (size, outcomes.shape[1]))
    # Cast first: an int64 @ float64 product skips BLAS and is five times slower.
    return resample_counts(size, seeds, rng).astype(float) @ outcomes.astype(float) / seeds


def problem_weights(size: int, problems: int, rng: np.random.Generator) -> np.ndarray:
    """`(size, problems)` counts of how often each problem is drawn in a resample of all problems."""
    return resample_counts(size, problems, rng)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap `values` (Efron & Tibshirani 1993, ch. 13)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PooledAccuracy:
    """One model size over its seeds: the mean accuracy, its two-level interval, every seed's own.

    `mean` pools all seeds and problems (each seed answered all `problems`, so it is also the mean
    of `per_seed`). `per_seed_ci` holds each seed's Wilson 95% interval (problem noise only).
    `seed_sd` is the sample standard deviation of `per_seed` (None with one seed).
    `seed_noise_included` is False with one seed: the interval is then a problem bootstrap and
    says nothing about how another seed would have done; `note` says so in words.
    """

    mean: float
    ci_low: float
    ci_high: float
    per_seed: list[float]
    per_seed_ci: list[tuple[float, float]]
    seed_sd: float | None
    seeds: int
    problems: int
    confidence: float
    samples: int
    seed_noise_included: bool
    note: str

    def as_dict(self) -> dict:
        return asdict(self)


def seed_pooled_accuracy(
    outcomes: np.ndarray, *, samples: int = 10000, seed: int = 0, confidence: float = 0.95
) -> PooledAccuracy:
    """Mean accuracy of a `(seeds, problems)` bool array with a two-level bootstrap interval.

    Each of `samples` replicates draws the seeds with replacement and, independently, one set of
    problem indices with replacement shared by all its seeds (see the module docstring for why one
    shared draw), and takes the mean; the interval is the percentile interval of those means.
    With one seed this is the ordinary problem bootstrap, and `note` says the interval ignores
    seed-to-seed noise. A 1-D array counts as one seed.
    """
    x = as_outcomes(outcomes)
    n_seeds, n_problems = x.shape
    seed_rng, problem_rng = replicate_rngs(seed)
    means = []
    for size in bootstrap_blocks(samples, n_problems):
        per_problem = seed_resampled_means(x, size, seed_rng)
        weights = problem_weights(size, n_problems, problem_rng)
        means.append((per_problem * weights).sum(axis=1) / n_problems)
    low, high = percentile_interval(np.concatenate(means), confidence)
    per_seed = [float(v) for v in x.mean(axis=1)]
    correct = x.sum(axis=1)
    if n_seeds == 1:
        note = (
            "one seed: the interval resamples problems only and ignores seed-to-seed noise; "
            "another training seed could land outside it"
        )
    else:
        note = f"two-level bootstrap over {n_seeds} seeds and {n_problems} problems"
    return PooledAccuracy(
        mean=float(x.mean()),
        ci_low=low,
        ci_high=high,
        per_seed=per_seed,
        per_seed_ci=[wilson_interval(int(k), n_problems) for k in correct],
        seed_sd=float(np.std(per_seed, ddof=1)) if n_seeds > 1 else None,
        seeds=n_seeds,
        problems=n_problems,
        confidence=confidence,
        samples=samples,
        seed_noise_included=n_seeds > 1,
        note=note,
    )


def sign_flip_p(
    differences: np.ndarray,
    *,
    samples: int = 10000,
    seed: int = 0,
    alternative: Alternative = "greater",
) -> np.ndarray:
    """Paired sign-flip permutation p values, one per row of `differences` `(tests, problems)`.

    The statistic is the sum of a row's per-problem differences. Under the null that, on each
    problem, the two models' outcomes are exchangeable, every difference is as likely to carry the
    opposite sign, so the statistic's null law is that of the sum with random signs. p is
    (1 + #{flipped sums at least as extreme}) / (1 + samples): counting the observed sum as one of
    the permutations makes p a valid p value for any number of samples (P[p <= u] <= u; Phipson &
    Smyth 2010), floored at 1 / (1 + samples). All rows share the same sign draws, which keeps
    each row's p valid on its own (rows' p values are then correlated, which no use here relies
    on). Input of one row, 1-D, gives a 1-element result. Problems whose difference is 0 cannot
    change the sum, so they do not need dropping.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    d = np.atleast_2d(np.asarray(differences, dtype=float))
    observed = d.sum(axis=1)
    rng = np.random.default_rng(seed)
    # Sums are compared with a tolerance: a flip of every sign reproduces -observed exactly in
    # exact arithmetic, and rounding must not turn a tie into a miss.
    tol = 1e-9 * np.maximum(1.0, np.abs(d).sum(axis=1))
    extreme = np.zeros(d.shape[0], dtype=np.int64)
    for size in bootstrap_blocks(samples, d.shape[1]):
        signs = rng.integers(0, 2, size=(size, d.shape[1])) * 2.0 - 1.0
        flipped = d @ signs.T  # (tests, size)
        extreme += _count_extreme(flipped, observed, tol, alternative)
    return (1 + extreme) / (1 + samples)


def _count_extreme(
    flipped: np.ndarray, observed: np.ndarray, tol: np.ndarray, alternative: str
) -> np.ndarray:
    """Per row, how many flipped sums are at least as extreme as the observed one."""
    obs, tol = observed[:, None], tol[:, None]
    if alternative == "greater":
        hits = flipped >= obs - tol
    elif alternative == "less":
        hits = flipped <= obs + tol
    else:
        hits = np.abs(flipped) >= np.abs(obs) - tol
    return hits.sum(axis=1)


def exact_sign_flip_p(differences: np.ndarray, alternative: Alternative = "greater") -> float:
    """The sign-flip p value over all 2^m sign patterns of the m non-zero differences (m <= 20)."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    if d.size > 20:
        raise ValueError(f"exact enumeration is for at most 20 non-zero differences, got {d.size}")
    patterns = ((np.arange(1 << d.size)[:, None] >> np.arange(d.size)) & 1) * 2.0 - 1.0
    flipped = (patterns @ d)[None, :]
    tol = np.array([1e-9 * max(1.0, np.abs(d).sum())])
    hits = _count_extreme(flipped, np.array([d.sum()]), tol, alternative)
    # The identity pattern is among the 2^m, so the observed sum already counts itself.
    return float(hits[0] / (1 << d.size))


@dataclass(frozen=True)
class PairedResult:
    """A student size against a reference on the same `n` problems, seeds pooled.

    `diff` = student accuracy - reference accuracy (each the mean over its seeds and the problems),
    with its two-level bootstrap interval (ci_low, ci_high) at `confidence`. `p` tests
    `alternative` ("greater": the student is more accurate) by `method`; `exact` says whether it
    enumerated every sign pattern. `wins(alpha)` is the one-directional claim a ladder step makes.
    """

    n: int
    student_seeds: int
    reference_seeds: int
    student_accuracy: float
    reference_accuracy: float
    diff: float
    ci_low: float
    ci_high: float
    p: float
    alternative: str
    method: str
    exact: bool
    samples: int
    confidence: float

    def as_dict(self) -> dict:
        return asdict(self)

    def wins(self, alpha: float) -> bool:
        """The student is more accurate than the reference at level `alpha` (one-sided p <= alpha)."""
        return self.alternative == "greater" and self.diff > 0 and self.p <= alpha


def pooled_paired_test(
    student: np.ndarray,
    reference: np.ndarray,
    *,
    samples: int = 10000,
    seed: int = 0,
    alternative: Alternative = "greater",
    confidence: float = 0.95,
) -> PairedResult:
    """Paired test of a student size `(S, n)` against a reference `(R, n)`, seeds pooled per problem.

    Column i of both arrays is the same test problem (align by problem id first). Each model's
    correctness on problem i is averaged over its seeds, d_i = student_i - reference_i, and the
    statistic is mean(d) = the difference in pooled accuracy. A reference may have one seed (a
    fixed pre-trained model answering greedily); a 1-D array counts as one seed.

    p value: the paired sign-flip permutation test of the d_i (`sign_flip_p`), exact over all sign
    patterns when there are at most log2(samples) non-zero d_i. It is a randomisation test of the
    pairing itself: with as many seeds on both sides it is exact under "the two models are
    exchangeable on every problem", and for "equal mean accuracy" in general it is asymptotically
    valid, since the flipped sums have variance sum(d_i^2), an unbiased or conservative estimate
    of the statistic's variance when E[d] = 0. McNemar (evaluate/paired.py) is its special case for
    one seed on each side; the permutation form takes the fractional d_i that pooled seeds give.
    The p value conditions on the trained seeds: it asks whether *these* students, averaged, beat
    the reference on the population of problems. Seed-to-seed spread enters through the interval
    and the per-seed table, not through p.

    One-sided by default: a ladder step claims one thing, "the student is more accurate", and a
    one-sided test at alpha bounds the rate of exactly that false claim by alpha. A two-sided test
    at alpha would spend half its alpha on "the student is worse", a claim the ladder never makes.
    A study that wants the stringency of a conventional two-sided 0.05 sets alpha = 0.025.

    Interval: the two-level bootstrap of `seed_pooled_accuracy`, applied to the difference; one
    problem draw per replicate serves both models, which is what makes it paired.
    """
    s, r = as_outcomes(student, "student"), as_outcomes(reference, "reference")
    if s.shape[1] != r.shape[1]:
        raise ValueError(f"student and reference must answer the same problems, got {s.shape} and {r.shape}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    n = s.shape[1]
    # Integer differences (in units of 1 / (S R)) keep ties exact in the permutation test.
    d_units = r.shape[0] * s.sum(axis=0).astype(np.int64) - s.shape[0] * r.sum(axis=0).astype(np.int64)
    nonzero = int(np.count_nonzero(d_units))
    exact = nonzero <= 20 and (1 << nonzero) <= samples
    if exact:
        p = exact_sign_flip_p(d_units, alternative)
    else:
        p = float(sign_flip_p(d_units, samples=samples, seed=seed, alternative=alternative)[0])
    seed_rng, problem_rng = replicate_rngs(seed)
    diffs = []
    for size in bootstrap_blocks(samples, n):
        per_problem = seed_resampled_means(s, size, seed_rng) - seed_resampled_means(r, size, seed_rng)
        weights = problem_weights(size, n, problem_rng)
        diffs.append((per_problem * weights).sum(axis=1) / n)
    low, high = percentile_interval(np.concatenate(diffs), confidence)
    return PairedResult(
        n=n,
        student_seeds=s.shape[0],
        reference_seeds=r.shape[0],
        student_accuracy=float(s.mean()),
        reference_accuracy=float(r.mean()),
        diff=float(s.mean() - r.mean()),
        ci_low=low,
        ci_high=high,
        p=float(p),
        alternative=alternative,
        method="paired sign-flip permutation, seeds averaged per problem",
        exact=exact,
        samples=samples,
        confidence=confidence,
    )

"""The fitted crossover size N*: where accuracy, fitted against log(parameters), reaches the reference.

The ladder's tests say which sizes win; the crossover says where winning starts, between the rungs.
Model, for a student of N parameters on a task whose chance floor is c (0 for numeric answers,
0.2 for five options):

    acc(N) = c + (1 - c) * sigmoid(a + b * log N)

Two parameters, because a ladder often has only three to six sizes: a fitted ceiling (accuracy
levelling off below 1) would need sizes far beyond the crossover to be identified, and where it
matters, above the ladder, an N* is an extrapolation and labelled as one anyway. The fit is maximum
likelihood on the binomial counts (correct answers of each size and seed; seeds share the curve),
by Fisher scoring with step halving, vectorised over bootstrap replicates.

N* solves acc(N*) = the reference's accuracy (pooled over its seeds). Its interval resamples
problems (one draw shared by every size and the reference, since they answered the same problems)
and the seeds of every model, refits, and takes percentiles of log N*. A replicate whose curve never
reaches the reference counts as N* = infinity and one that is above it everywhere as N* = 0, so an
interval may be unbounded, which is the honest answer when the data cannot rule those out.

Status: "bracketed" when the reference accuracy lies between the fitted accuracies at the smallest
and largest ladder sizes; "extrapolated" when N* exists outside the ladder (`direction` says
"above" or "below"); "never reaches" when the fitted curve stays below the reference for every N
(accuracy not rising with size, or a reference at 100%); "always above" when it is above for every
N (a reference at or below the chance floor, or no rise and the smallest student already above);
"fit failed" when the fit did not converge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scalingdown.evaluate.replicates import (
    as_outcomes,
    bootstrap_blocks,
    problem_weights,
    replicate_rngs,
    seed_resampled_means,
)

STATUSES = ("bracketed", "extrapolated", "never reaches", "always above", "fit failed")
_EPS = 1e-12
_MAX_ITER = 100
_HALVINGS = 12


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # no overflow warning for large |z|


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _loglik(theta: np.ndarray, x: np.ndarray, k: np.ndarray, n: np.ndarray, floor: float) -> np.ndarray:
    """Binomial log-likelihood of `theta` (..., 2) for counts k of n at centred log sizes x; (...).

    In log space throughout: clipping p would flatten the likelihood far out, where a fit to
    separated data must keep climbing (and so be seen not to converge) instead of stopping.
    """
    eta = theta[..., :1] + theta[..., 1:] * x
    log_p = (
        _log_sigmoid(eta) if floor == 0 else np.logaddexp(np.log(floor), np.log1p(-floor) + _log_sigmoid(eta))
    )
    log_q = np.log1p(-floor) + _log_sigmoid(-eta)  # log(1 - p) = log((1 - floor)(1 - sigmoid))
    return (k * log_p + (n - k) * log_q).sum(axis=-1)


def fit_logistic(x: np.ndarray, k: np.ndarray, n: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood (a, b) of acc = floor + (1 - floor) sigmoid(a + b x), for many data sets.

    x: (J,) predictor values (centred log sizes); k, n: (B, J) correct and total counts of B data
    sets. Returns theta (B, 2) and converged (B,) bool. Fisher scoring from a least-squares start on
    the logits, each step halved until the likelihood does not fall; a data set converges when its
    step is below 1e-8 within 100 iterations. Where no finite maximum exists (every size at the
    floor, or the sizes split into all-wrong and all-right, or only one size above the floor) the
    parameters run off and the fit is flagged as not converged, never returned as a fit.
    """
    k, n = np.atleast_2d(k).astype(float), np.atleast_2d(n).astype(float)
    q = np.clip((k / n - floor) / (1 - floor), 0.02, 0.98)
    z = np.log(q / (1 - q))
    xc = x - x.mean()
    slope = (z * xc).sum(axis=1) / max(float((xc * xc).sum()), _EPS)
    theta = np.stack([z.mean(axis=1) - slope * x.mean(), slope], axis=1)
    converged = np.zeros(len(theta), dtype=bool)
    broken = np.zeros(len(theta), dtype=bool)
    ll = _loglik(theta, x, k, n, floor)
    steps = 0.5 ** np.arange(_HALVINGS)
    for _ in range(_MAX_ITER):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = _sigmoid(theta[:, :1] + theta[:, 1:] * x)
            p = floor + (1 - floor) * s
            dp = (1 - floor) * s * (1 - s)
            # dp / (p (1 - p)) = s / p = 1 / ((1 - floor) + floor / s): finite as s -> 0 or 1.
            ratio = 1 / ((1 - floor) + floor / s)
            resid, w = (k - n * p) * ratio, n * dp * ratio  # score terms and Fisher weights
            g0, g1 = resid.sum(axis=1), (resid * x).sum(axis=1)
            i00, i01, i11 = w.sum(axis=1), (w * x).sum(axis=1), (w * x * x).sum(axis=1)
            ridge = 1e-10 * (i00 + i11) + 1e-300
            det = (i00 + ridge) * (i11 + ridge) - i01 * i01
            # The 2x2 Fisher system solved in closed form, for every data set at once.
            delta = np.stack(
                [((i11 + ridge) * g0 - i01 * g1) / det, ((i00 + ridge) * g1 - i01 * g0) / det], 1
            )
        broken |= ~np.isfinite(delta).all(axis=1)
        delta = np.where(broken[:, None], 0.0, delta)
        # The longest of the steps 1, 1/2, 1/4, ... that does not lower the likelihood. The full
        # step almost always does, so only the data sets where it fails try the shorter ones.
        scale = np.ones(len(theta))
        full = _loglik(theta + delta, x, k, n, floor)
        new_ll, moved = full, full >= ll - 1e-12 * np.abs(ll)
        retry = np.flatnonzero(~moved)
        if retry.size:
            cand = theta[retry, None, :] + steps[None, 1:, None] * delta[retry, None, :]
            lls = _loglik(cand, x, k[retry, None, :], n[retry, None, :], floor)
            ok = lls >= ll[retry, None] - 1e-12 * np.abs(ll[retry, None])
            best = ok.argmax(axis=1)
            scale[retry] = np.where(ok.any(axis=1), steps[1:][best], 0.0)
            new_ll[retry] = np.where(ok.any(axis=1), lls[np.arange(retry.size), best], ll[retry])
            moved[retry] = ok.any(axis=1)
        # No step at all that keeps the likelihood means that, within rounding, this is the maximum.
        theta = theta + scale[:, None] * delta
        ll = new_ll
        converged |= ~moved | (np.abs(scale[:, None] * delta).max(axis=1) < 1e-8)
        if (converged | broken).all():
            break
    return theta, converged & ~broken & np.isfinite(theta).all(axis=1)


def _solve(theta: np.ndarray, x_lo: float, x_hi: float, target: np.ndarray, floor: float) -> np.ndarray:
    """Centred log N* per row of theta (B, 2), with -inf for "always above" and +inf for "never"."""
    a, b = theta[:, 0], theta[:, 1]
    q = (target - floor) / (1 - floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(q) - np.log1p(-q)
        x_star = (logit - a) / b
    at_lo = floor + (1 - floor) * _sigmoid(a + b * x_lo)
    above = q <= 0
    never = q >= 1
    flat = b <= 0
    out = np.where(flat, np.where(at_lo >= target, -np.inf, np.inf), x_star)
    return np.where(above, -np.inf, np.where(never, np.inf, out))


@dataclass(frozen=True, eq=False)
class Crossover:
    """The fitted crossover of one student ladder against one reference.

    `n_star`: parameters at which the fit reaches `reference_accuracy` (None unless status is
    "bracketed" or "extrapolated"); (ci_low, ci_high): its bootstrap percentile interval at
    `confidence` (0 or inf where unbounded; None when the fit failed). `intercept`, `slope`: the
    fit's a and b for log(N) in natural log units. `observed`: each size's pooled accuracy, in the
    order given. `failed_replicates`: bootstrap refits that did not converge (they still count).
    `curve(sizes)` and `band(sizes)` give the fitted accuracy and its pointwise interval for plots.
    """

    n_star: float | None
    ci_low: float | None
    ci_high: float | None
    bracketed: bool
    status: str
    direction: str | None
    intercept: float
    slope: float
    floor: float
    reference_accuracy: float
    sizes: list[int]
    observed: list[float]
    confidence: float
    samples: int
    failed_replicates: int
    boot_params: np.ndarray = field(repr=False)

    def curve(self, sizes: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fitted accuracy at each of `sizes` (parameters)."""
        logs = np.log(np.asarray(sizes, dtype=float))
        return self.floor + (1 - self.floor) * _sigmoid(self.intercept + self.slope * logs)

    def band(self, sizes: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise bootstrap percentile band (low, high) of the fitted accuracy at `sizes`."""
        logs = np.log(np.asarray(sizes, dtype=float))
        eta = self.boot_params[:, :1] + self.boot_params[:, 1:] * logs[None, :]
        curves = self.floor + (1 - self.floor) * _sigmoid(eta)
        tail = (1 - self.confidence) / 2
        low, high = np.quantile(curves, [tail, 1 - tail], axis=0)
        return low, high

    def as_dict(self) -> dict:
        """Everything but the bootstrap draws, JSON-ready (inf stays a float)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "boot_params"}


def fit_crossover(
    sizes: Sequence[int],
    outcomes: Sequence[np.ndarray],
    reference: np.ndarray,
    floor: float,
    *,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Crossover:
    """Fit the ladder's accuracy against log(parameters) and find where it reaches the reference.

    sizes: parameters of each student size (at least two distinct); outcomes: for each size a
    `(seeds, problems)` bool array (seed counts may differ between sizes); reference: the
    reference's `(seeds, problems)` array (1-D: one seed); every array's column i is the same
    problem. floor: the task's chance accuracy in [0, 1). Raises ValueError on malformed input.
    """
    if len(sizes) != len(outcomes):
        raise ValueError(f"{len(sizes)} sizes but {len(outcomes)} outcome arrays")
    if len(set(sizes)) < 2 or min(sizes) <= 0:
        raise ValueError(f"need at least two distinct positive sizes, got {list(sizes)}")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must lie in [0, 1), got {floor}")
    arrays = [as_outcomes(o, f"outcomes of size {s}") for s, o in zip(sizes, outcomes, strict=True)]
    ref = as_outcomes(reference, "reference")
    n = ref.shape[1]
    if any(a.shape[1] != n for a in arrays):
        raise ValueError(f"every model must answer the same {n} problems")
    logs = np.log(np.asarray(sizes, dtype=float))
    centre = float(logs.mean())  # centring keeps a and b nearly uncorrelated, so scoring converges fast
    x = logs - centre
    totals = np.array([a.size for a in arrays], dtype=float)
    k = np.array([a.sum() for a in arrays], dtype=float)
    target = float(ref.mean())
    theta, converged = fit_logistic(x, k[None, :], totals[None, :], floor)

    seed_rng, problem_rng = replicate_rngs(seed)
    boot_theta, boot_target, failed = [], [], 0
    for size in bootstrap_blocks(samples, n * (len(arrays) + 1)):
        weights = problem_weights(size, n, problem_rng)
        kb = np.stack(
            [(seed_resampled_means(a, size, seed_rng) * weights).sum(axis=1) * a.shape[0] for a in arrays],
            axis=1,
        )
        rb = (seed_resampled_means(ref, size, seed_rng) * weights).sum(axis=1) / n
        tb, cb = fit_logistic(x, kb, np.broadcast_to(totals, kb.shape), floor)
        boot_theta.append(tb)
        boot_target.append(rb)
        failed += int((~cb).sum())
    boot_theta, boot_target = np.concatenate(boot_theta), np.concatenate(boot_target)
    x_lo, x_hi = float(x.min()), float(x.max())
    # Parameters for raw log N: a + b (log N - centre) = (a - b centre) + b log N.
    raw = np.stack([theta[:, 0] - theta[:, 1] * centre, theta[:, 1]], axis=1)[0]
    boot_raw = np.stack([boot_theta[:, 0] - boot_theta[:, 1] * centre, boot_theta[:, 1]], axis=1)
    common = dict(
        intercept=float(raw[0]),
        slope=float(raw[1]),
        floor=floor,
        reference_accuracy=target,
        sizes=[int(s) for s in sizes],
        observed=[float(v) for v in k / totals],
        confidence=confidence,
        samples=samples,
        failed_replicates=failed,
        boot_params=boot_raw,
    )
    if not converged[0] or not np.isfinite(theta).all():
        return Crossover(None, None, None, False, "fit failed", None, **common)

    x_star = float(_solve(theta, x_lo, x_hi, np.array([target]), floor)[0])
    # Replicates at +-inf make interpolating between order statistics meaningless (inf - inf), so
    # the interval's ends are order statistics themselves (the inverted-CDF percentile).
    tail = (1 - confidence) / 2
    boot_x = _solve(boot_theta, x_lo, x_hi, boot_target, floor)
    low, high = np.quantile(boot_x, [tail, 1 - tail], method="inverted_cdf")
    with np.errstate(over="ignore"):
        ci_low, ci_high = float(np.exp(low + centre)), float(np.exp(high + centre))
    if x_star == np.inf:
        status, direction, n_star = "never reaches", None, None
    elif x_star == -np.inf:
        status, direction, n_star = "always above", None, None
    else:
        with np.errstate(over="ignore"):
            n_star = float(np.exp(x_star + centre))
        if x_lo <= x_star <= x_hi:
            status, direction = "bracketed", None
        else:
            status, direction = "extrapolated", "above" if x_star > x_hi else "below"
    return Crossover(n_star, ci_low, ci_high, status == "bracketed", status, direction, **common)

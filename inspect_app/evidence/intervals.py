"""Binomial bounds: how far a rate seen in a sample can be from the true rate.

Every bound is Clopper-Pearson (exact, conservative) rather than Wilson, so the two-sided
intervals shown to a supervisor and the one-sided bounds the gate uses come from the same
binomial model and can never disagree about a count of zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

CONFIDENCE = 0.95


def check_counts(k: NDArray[np.float64], n: NDArray[np.float64]) -> None:
    """Refuse impossible counts: a bug upstream must fail loudly, not print a plausible bound."""
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError(f"counts must satisfy 0 <= errors <= n (got errors={k}, n={n})")


def _beta_ppf(q: float, a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """The beta quantile, with scipy.stats imported at the first bound, not with the module.

    Every CLI command and every `serve` imports this package. Most of them never compute a
    bound, and scipy.stats costs 1.5 s of each start (`python -X importtime`).
    """
    from scipy.stats import beta

    return beta.ppf(q, a, b)


def clopper_pearson_upper_array(
    errors: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE
) -> NDArray[np.float64]:
    """One-sided upper bound for every (errors, n) pair; 1.0 where nothing was seen.

    `errors` may be fractional: `labels_needed` asks what the bound would be at an expected
    count, and the beta quantile is defined there too.
    """
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    check_counts(k, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = _beta_ppf(confidence, k + 1.0, m - k)
    return np.where((m == 0) | (k >= m), 1.0, bound)


def clopper_pearson_lower_array(
    errors: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE
) -> NDArray[np.float64]:
    """One-sided lower bound for every (errors, n) pair; 0.0 where no error was seen."""
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    check_counts(k, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = _beta_ppf(1.0 - confidence, k, m - k + 1.0)
    return np.where(k <= 0, 0.0, bound)


def clopper_pearson_upper(errors: float, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper bound of a rate after `errors` in `n` (zero errors: 1 - alpha**(1/n))."""
    return float(clopper_pearson_upper_array(errors, n, confidence))


def clopper_pearson_lower(errors: float, n: int, confidence: float = CONFIDENCE) -> float:
    return float(clopper_pearson_lower_array(errors, n, confidence))


def clopper_pearson_interval(
    errors: int, n: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Two-sided interval: each tail gets half of 1 - confidence."""
    tail = (1.0 + confidence) / 2.0
    return clopper_pearson_lower(errors, n, tail), clopper_pearson_upper(errors, n, tail)


def zero_error_sample_size(target: float, confidence: float = CONFIDENCE) -> int:
    """The fewest parts whose upper bound can reach `target` at all (with no error seen).

    1 - (1 - confidence)**(1/n) <= target  <=>  n >= ln(1 - confidence) / ln(1 - target).
    For a 0.5% target at 95% that is 598 parts: fewer can never pass, whatever they show.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"a target rate must lie strictly between 0 and 1, got {target}")
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target) - 1e-9)


def labels_needed(
    rate: float, target: float, confidence: float = CONFIDENCE, *, cap: int = 10**9
) -> int | None:
    """The fewest parts at which the upper bound reaches `target` if errors keep coming at `rate`.

    None when `rate >= target`: no number of labels can show a rate below the target when the
    observed rate is not below it (stricter thresholds are needed instead).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a rate must lie in [0, 1], got {rate}")
    if rate >= target:
        return None
    if rate == 0.0:
        return zero_error_sample_size(target, confidence)

    def reaches(n: int) -> bool:
        return clopper_pearson_upper(rate * n, n, confidence) <= target

    low, high = 1, zero_error_sample_size(target, confidence)
    while not reaches(high):
        low, high = high, high * 2
        if high > cap:
            return None
    while low < high:  # the bound falls as n grows at a fixed rate: bisect for the first n
        mid = (low + high) // 2
        if reaches(mid):
            high = mid
        else:
            low = mid + 1
    return high


@dataclass(frozen=True)
class RateEstimate:
    """A rate with the count behind it and its two-sided 95% Clopper-Pearson interval."""

    count: int
    n: int
    rate: float | None  # None when n == 0: no data is not a rate of zero
    lower: float
    upper: float


def rate_estimate(count: int, n: int, confidence: float = CONFIDENCE) -> RateEstimate:
    lower, upper = clopper_pearson_interval(count, n, confidence)
    return RateEstimate(
        count=int(count),
        n=int(n),
        rate=count / n if n else None,
        lower=lower,
        upper=upper,
    )

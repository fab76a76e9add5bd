"""The binomial bounds are right: against the beta quantile, the binomial itself and
published tables; and the sample sizes the gate asks for."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta, binom

from inspect_app.evidence import (
    clopper_pearson_interval,
    clopper_pearson_lower,
    clopper_pearson_upper,
    clopper_pearson_upper_array,
    labels_needed,
    rate_estimate,
    zero_error_sample_size,
)

COUNT_GRID = [(k, n) for n in (1, 2, 3, 5, 10, 30, 100, 598, 1000, 5000) for k in range(n + 1)
              if k <= 12 or k in (n // 2, n - 1, n)]  # fmt: skip


@pytest.mark.parametrize(("k", "n"), COUNT_GRID)
def test_upper_bound_is_the_beta_quantile_and_leaves_five_percent_in_the_lower_tail(
    k: int, n: int
) -> None:
    upper = clopper_pearson_upper(k, n)
    if k == n:
        assert upper == 1.0
        return
    assert upper == pytest.approx(beta.ppf(0.95, k + 1, n - k), abs=1e-6)
    # The definition, independently of the beta identity: at the bound, seeing k or fewer
    # errors has probability exactly 5%.
    assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-6)


@pytest.mark.parametrize(("k", "n"), COUNT_GRID)
def test_lower_bound_leaves_five_percent_in_the_upper_tail(k: int, n: int) -> None:
    lower = clopper_pearson_lower(k, n)
    if k == 0:
        assert lower == 0.0
        return
    assert lower == pytest.approx(beta.ppf(0.05, k, n - k + 1), abs=1e-6)
    assert binom.sf(k - 1, n, lower) == pytest.approx(0.05, abs=1e-6)


@pytest.mark.parametrize("n", [1, 2, 5, 10, 59, 100, 300, 598, 1000, 10_000])
def test_zero_errors_gives_the_rule_of_three_form(n: int) -> None:
    assert clopper_pearson_upper(0, n) == pytest.approx(1 - 0.05 ** (1 / n), abs=1e-9)


def test_published_clopper_pearson_values() -> None:
    # Two-sided 95% exact intervals as tabulated (e.g. Clopper & Pearson 1934; any exact
    # binomial CI table): 0/10 -> (0, 0.3085), 1/10 -> (0.0025, 0.4450), 5/10 ->
    # (0.1871, 0.8129), 0/30 -> (0, 0.1157).
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert clopper_pearson_interval(1, 10) == pytest.approx((0.0025, 0.4450), abs=1e-4)
    assert clopper_pearson_interval(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson_interval(0, 30) == pytest.approx((0.0, 0.1157), abs=1e-4)
    # One-sided 95% with no error in 1 part: the bound is 0.95 itself.
    assert clopper_pearson_upper(0, 1) == pytest.approx(0.95, abs=1e-12)


def test_no_data_gives_the_vacuous_bound_and_no_rate() -> None:
    assert clopper_pearson_upper(0, 0) == 1.0
    estimate = rate_estimate(0, 0)
    assert estimate.rate is None
    assert (estimate.lower, estimate.upper) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "n"), [(-1, 5), (6, 5), (0, -1)])
def test_impossible_counts_are_refused(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="errors <= n"):
        clopper_pearson_upper(k, n)


def test_vectorised_bound_matches_the_scalar_one() -> None:
    ks = np.array([[0, 1, 2], [3, 0, 10]])
    ns = np.array([[10, 10, 10], [50, 0, 10]])
    bounds = clopper_pearson_upper_array(ks, ns)
    assert bounds.shape == (2, 3)
    for idx in np.ndindex(ks.shape):
        assert bounds[idx] == clopper_pearson_upper(int(ks[idx]), int(ns[idx]))


def test_zero_error_sample_size_is_the_first_n_that_can_pass() -> None:
    for target in (0.005, 0.01, 0.02, 0.1):
        n = zero_error_sample_size(target)
        assert clopper_pearson_upper(0, n) <= target < clopper_pearson_upper(0, n - 1)
    assert zero_error_sample_size(0.005) == 598


@pytest.mark.parametrize(("rate", "target"), [(0.0, 0.005), (0.001, 0.005), (0.01, 0.02)])
def test_labels_needed_is_the_first_sample_size_whose_bound_reaches_the_target(
    rate: float, target: float
) -> None:
    n = labels_needed(rate, target)
    assert n is not None
    assert clopper_pearson_upper(rate * n, n) <= target
    assert clopper_pearson_upper(rate * (n - 1), n - 1) > target


def test_labels_cannot_help_when_the_rate_is_not_below_the_target() -> None:
    assert labels_needed(0.005, 0.005) is None
    assert labels_needed(0.02, 0.005) is None

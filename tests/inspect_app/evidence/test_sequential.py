"""The live audit test's false-alarm and detection rates by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspect_app.evidence import (
    DEMOTION_ALTERNATIVE_FACTOR,
    DEMOTION_FALSE_ALARM,
    audit_alarm,
    audit_log_likelihood_ratio,
    clopper_pearson_upper_array,
)


def _alarm_paths(rate: float, target: float, reps: int, audits: int, seed: int) -> np.ndarray:
    """For each simulated audit stream, whether the live test ever fired, and when."""
    rng = np.random.default_rng(seed)
    errors = np.cumsum(rng.random((reps, audits)) < rate, axis=1)
    seen = np.arange(1, audits + 1)
    llr = audit_log_likelihood_ratio(errors, seen, target)
    fired = llr >= math.log(1 / DEMOTION_FALSE_ALARM)
    return np.where(fired.any(axis=1), fired.argmax(axis=1), -1)


@pytest.mark.parametrize("target", [0.005, 0.02])
def test_audits_at_the_target_rate_rarely_demote(target: float) -> None:
    # 40 expected errors per stream at the target rate, checked after every audit.
    audits = int(40 / target)
    first_alarm = _alarm_paths(target, target, reps=2000, audits=audits, seed=1)
    assert np.mean(first_alarm >= 0) <= DEMOTION_FALSE_ALARM
    # The naive rule ("upper bound above target") would fire on nearly every such stream.
    rng = np.random.default_rng(2)
    errors = rng.binomial(audits, target, size=2000)
    assert np.mean(clopper_pearson_upper_array(errors, audits) > target) > 0.5


@pytest.mark.parametrize("target", [0.005, 0.02])
def test_audits_revealing_escapes_well_above_target_demote(target: float) -> None:
    audits = int(40 / target)
    first_alarm = _alarm_paths(4 * target, target, reps=2000, audits=audits, seed=3)
    assert np.mean(first_alarm >= 0) >= 0.99
    # ... and about when Wald's approximation says: log(20) over the mean step of the
    # statistic at the true rate (a few hundred audits at a 0.5% target).
    true_rate, alternative = 4 * target, DEMOTION_ALTERNATIVE_FACTOR * target
    mean_step = true_rate * math.log(alternative / target) + (1 - true_rate) * math.log(
        (1 - alternative) / (1 - target)
    )
    expected = math.log(1 / DEMOTION_FALSE_ALARM) / mean_step
    assert 0.5 * expected < np.median(first_alarm) < 2 * expected


def test_audit_alarm_reports_its_figures() -> None:
    quiet = audit_alarm("escape_rate", errors=1, n=400, target=0.005)
    assert not quiet.alarm
    assert quiet.estimate.rate == pytest.approx(0.0025)
    loud = audit_alarm("escape_rate", errors=8, n=400, target=0.005)
    assert loud.alarm
    assert loud.log_likelihood_ratio == pytest.approx(
        8 * math.log(3) + 392 * math.log(0.985 / 0.995)
    )
    assert loud.estimate.lower > 0.005  # here the evidence is clear by any reading
    with pytest.raises(ValueError, match="errors <= n"):
        audit_alarm("escape_rate", errors=5, n=4, target=0.005)

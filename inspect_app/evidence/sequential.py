"""The live audit test that demotes a line: a sequential probability ratio test on the
audited parts at the line's current settings, checked after every audit label."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from inspect_app.evidence.intervals import (
    RateEstimate,
    check_counts,
    clopper_pearson_upper,
    rate_estimate,
)

# Live audit test (see `audit_alarm`): the rate it is tuned to catch, as a multiple of the
# target, and the chance of a false alarm at the target rate over a whole settings era.
DEMOTION_ALTERNATIVE_FACTOR = 3.0
DEMOTION_FALSE_ALARM = 0.05


def audit_log_likelihood_ratio(
    errors: ArrayLike, n: ArrayLike, target: float, *, factor: float = DEMOTION_ALTERNATIVE_FACTOR
) -> NDArray[np.float64]:
    """log P(audits | rate = factor x target) / P(audits | rate = target), for every (errors, n).

    It depends on the counts only, so a whole simulated stream is one cumulative sum away.
    """
    if not 0.0 < target < 1.0 / factor:
        raise ValueError(f"target {target} must lie in (0, 1/{factor})")
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    check_counts(k, m)
    alternative = factor * target
    return k * math.log(alternative / target) + (m - k) * math.log(
        (1.0 - alternative) / (1.0 - target)
    )


@dataclass(frozen=True)
class AuditAlarm:
    """The live test on one side's audits at the line's current settings."""

    figure: Literal["escape_rate", "false_reject_rate"]
    n: int  # audited parts on this side
    errors: int
    target: float
    estimate: RateEstimate
    upper_bound: float  # one-sided 95%: shown to the supervisor, not what demotes
    log_likelihood_ratio: float
    alarm_at: float  # log(1 / false-alarm probability)
    alarm: bool


def audit_alarm(
    figure: Literal["escape_rate", "false_reject_rate"],
    errors: int,
    n: int,
    target: float,
    *,
    factor: float = DEMOTION_ALTERNATIVE_FACTOR,
    false_alarm: float = DEMOTION_FALSE_ALARM,
) -> AuditAlarm:
    """Wald's sequential probability ratio test of "rate = target" against "rate = factor x
    target", one-sided, with no acceptance boundary, checked after every audit label.

    Why this rule rather than "the live upper bound crossed the target": at a true rate equal
    to the target the one-sided 95% upper bound exceeds the target most of the time, so that
    rule would demote good lines on noise. Why not "the 95% lower bound crossed the target":
    checked after every label, a fixed-level test is run thousands of times and its false-alarm
    chance grows with every look. The likelihood ratio of the audits is a non-negative
    martingale when the true rate equals the target (a supermartingale below it), so by
    Ville's inequality the chance that it EVER reaches 1 / false_alarm is at most false_alarm:
    at or below the target, a line is wrongly demoted with probability <= 5% over its whole
    era at these settings, however often it is checked. Against a rate of factor x target the
    test fires after about log(1/false_alarm) / KL(factor x target || target) audits (a few
    hundred on the escape side at the 0.5% default), and any rate above ~1.8 x target is
    caught eventually; rates only slightly above target are not the test's business.

    Limitation: the statistic only depends on the counts of the current era, so after a long
    clean run it sits far below zero and a later deterioration needs more audits to show. An
    era restarts whenever the level, thresholds or model change.
    """
    llr = float(audit_log_likelihood_ratio(errors, n, target, factor=factor))
    alarm_at = math.log(1.0 / false_alarm)
    return AuditAlarm(
        figure=figure,
        n=n,
        errors=errors,
        target=target,
        estimate=rate_estimate(errors, n),
        upper_bound=clopper_pearson_upper(errors, n),
        log_likelihood_ratio=llr,
        alarm_at=alarm_at,
        alarm=llr >= alarm_at,
    )

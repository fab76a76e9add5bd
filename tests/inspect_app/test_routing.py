"""Routing follows design.md's level table exactly; the audit lottery holds its rate."""

from __future__ import annotations

import random

import pytest
from scipy.stats import binomtest

from inspect_app.domain import (
    AutomationLevel,
    DecidedBy,
    Decision,
    LinePolicy,
    Prediction,
    Route,
    TaskReason,
)
from inspect_app.routing import route_inspection


def prediction(p_ok: float) -> Prediction:
    rest = (1.0 - p_ok) / 4
    return Prediction(
        probabilities={
            "ok": p_ok,
            "scratch": rest,
            "crack": rest,
            "pit": rest,
            "discoloration": rest,
        },
        model_version="test",
    )


NO_AUDIT = 0.99  # a draw above any audit rate used here
AUDIT = 0.0  # a draw below any positive audit rate


@pytest.mark.parametrize(
    ("level", "show_model"),
    [
        (AutomationLevel.SHADOW, False),
        (AutomationLevel.ASSIST, True),
    ],
)
@pytest.mark.parametrize("p_ok", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("draw", [AUDIT, NO_AUDIT])
def test_shadow_and_assist_always_go_to_a_human(
    level: AutomationLevel, show_model: bool, p_ok: float, draw: float
) -> None:
    outcome = route_inspection(prediction(p_ok), LinePolicy(level=level), draw)
    assert outcome.route is Route.REVIEW
    assert outcome.decision is Decision.PENDING
    assert outcome.decided_by is None
    assert outcome.show_model is show_model
    assert outcome.task_reason is TaskReason.DECIDE


def test_human_only_needs_no_prediction() -> None:
    outcome = route_inspection(None, LinePolicy(level=AutomationLevel.HUMAN_ONLY), AUDIT)
    assert outcome.route is Route.REVIEW
    assert outcome.decision is Decision.PENDING
    assert outcome.show_model is False
    assert outcome.task_reason is TaskReason.DECIDE


@pytest.mark.parametrize(
    "level", [AutomationLevel.SHADOW, AutomationLevel.ASSIST, AutomationLevel.PARTIAL]
)
def test_a_level_that_runs_the_model_refuses_a_missing_prediction(level: AutomationLevel) -> None:
    with pytest.raises(ValueError, match="no prediction"):
        route_inspection(None, LinePolicy(level=level), NO_AUDIT)


PARTIAL = LinePolicy(
    level=AutomationLevel.PARTIAL, pass_threshold=0.95, fail_threshold=0.9, audit_rate=0.05
)


@pytest.mark.parametrize(
    ("p_ok", "route", "decision"),
    [
        (1.0, Route.AUTO, Decision.PASS),
        (0.95, Route.AUTO, Decision.PASS),  # exactly at pass_threshold passes
        (0.9499, Route.REVIEW, Decision.PENDING),
        (0.5, Route.REVIEW, Decision.PENDING),
        (0.1001, Route.REVIEW, Decision.PENDING),
        (0.1, Route.AUTO, Decision.FAIL),  # P(defect) = 0.9 exactly at fail_threshold fails
        (0.0, Route.AUTO, Decision.FAIL),
    ],
)
def test_partial_uses_both_thresholds(p_ok: float, route: Route, decision: Decision) -> None:
    outcome = route_inspection(prediction(p_ok), PARTIAL, NO_AUDIT)
    assert outcome.route is route
    assert outcome.decision is decision
    if route is Route.AUTO:
        assert outcome.decided_by is DecidedBy.MODEL
        assert outcome.task_reason is None
    else:
        assert outcome.decided_by is None
        assert outcome.show_model is True  # uncertain parts are reviewed like assist
        assert outcome.task_reason is TaskReason.DECIDE


@pytest.mark.parametrize(("p_ok", "decision"), [(0.99, Decision.PASS), (0.01, Decision.FAIL)])
def test_partial_audit_keeps_the_decision_and_is_blind(p_ok: float, decision: Decision) -> None:
    outcome = route_inspection(prediction(p_ok), PARTIAL, draw=0.049)
    assert outcome.route is Route.AUDIT
    assert outcome.decision is decision
    assert outcome.decided_by is DecidedBy.MODEL
    assert outcome.show_model is False
    assert outcome.task_reason is TaskReason.AUDIT


def test_partial_never_audits_a_part_a_human_decides_anyway() -> None:
    outcome = route_inspection(prediction(0.5), PARTIAL, draw=AUDIT)
    assert outcome.route is Route.REVIEW
    assert outcome.task_reason is TaskReason.DECIDE


def test_partial_with_overlapping_thresholds_asks_a_human() -> None:
    loose = LinePolicy(level=AutomationLevel.PARTIAL, pass_threshold=0.4, fail_threshold=0.4)
    assert route_inspection(prediction(0.5), loose, NO_AUDIT).route is Route.REVIEW


@pytest.mark.parametrize(
    ("p_ok", "decision"),
    [(1.0, Decision.PASS), (0.5, Decision.PASS), (0.4999, Decision.FAIL), (0.0, Decision.FAIL)],
)
def test_full_decides_every_part_by_the_binary_argmax(p_ok: float, decision: Decision) -> None:
    # Thresholds do not matter at full: the model decides everything.
    policy = LinePolicy(level=AutomationLevel.FULL, pass_threshold=0.999, fail_threshold=0.999)
    outcome = route_inspection(prediction(p_ok), policy, NO_AUDIT)
    assert outcome.route is Route.AUTO
    assert outcome.decision is decision
    assert outcome.decided_by is DecidedBy.MODEL
    assert outcome.task_reason is None


def test_full_audits_are_blind_and_keep_the_decision() -> None:
    policy = LinePolicy(level=AutomationLevel.FULL, audit_rate=0.02)
    outcome = route_inspection(prediction(0.2), policy, draw=0.0199)
    assert outcome.route is Route.AUDIT
    assert outcome.decision is Decision.FAIL
    assert outcome.show_model is False
    assert outcome.task_reason is TaskReason.AUDIT
    assert route_inspection(prediction(0.2), policy, draw=0.02).route is Route.AUTO


def test_a_zero_audit_rate_never_audits() -> None:
    policy = LinePolicy(level=AutomationLevel.FULL, audit_rate=0.0)
    assert route_inspection(prediction(0.9), policy, draw=0.0).route is Route.AUTO


@pytest.mark.parametrize("audit_rate", [0.02, 0.1])
def test_the_audit_rate_holds_over_many_draws(audit_rate: float) -> None:
    rng = random.Random(1234)
    policy = LinePolicy(level=AutomationLevel.FULL, audit_rate=audit_rate)
    n = 20_000
    audits = sum(
        route_inspection(prediction(0.9), policy, rng.random()).route is Route.AUDIT
        for _ in range(n)
    )
    result = binomtest(audits, n, audit_rate)
    assert result.pvalue > 0.01
    interval = result.proportion_ci(confidence_level=0.99)
    assert interval.low <= audit_rate <= interval.high


@pytest.mark.parametrize(
    ("pass_threshold", "fail_threshold", "p_ok", "route", "decision"),
    [
        # never auto-pass: confident defects are auto-failed, everything else to a human
        (None, 0.65, 0.999, Route.REVIEW, Decision.PENDING),
        (None, 0.65, 0.5, Route.REVIEW, Decision.PENDING),
        (None, 0.65, 0.3, Route.AUTO, Decision.FAIL),
        # never auto-fail: confident ok parts are auto-passed, everything else to a human
        (0.98, None, 0.99, Route.AUTO, Decision.PASS),
        (0.98, None, 0.001, Route.REVIEW, Decision.PENDING),
        # both never: the model decides nothing (as at assist)
        (None, None, 0.999, Route.REVIEW, Decision.PENDING),
        (None, None, 0.001, Route.REVIEW, Decision.PENDING),
    ],
)
def test_a_never_side_at_partial_routes_its_parts_to_a_human(
    pass_threshold: float | None,
    fail_threshold: float | None,
    p_ok: float,
    route: Route,
    decision: Decision,
) -> None:
    policy = LinePolicy(AutomationLevel.PARTIAL, pass_threshold, fail_threshold, audit_rate=0.0)
    outcome = route_inspection(prediction(p_ok), policy, NO_AUDIT)
    assert (outcome.route, outcome.decision) == (route, decision)
    if route is Route.REVIEW:
        # the uncertain part is shown with the model's output, as any partial review
        assert outcome.show_model and outcome.task_reason is TaskReason.DECIDE


def test_a_never_side_is_still_audited_on_the_side_that_automates() -> None:
    policy = LinePolicy(AutomationLevel.PARTIAL, None, 0.65, audit_rate=0.5)
    outcome = route_inspection(prediction(0.01), policy, AUDIT)
    assert (outcome.route, outcome.decision, outcome.show_model) == (
        Route.AUDIT,
        Decision.FAIL,
        False,
    )


@pytest.mark.parametrize("p_ok", [0.1, 0.9])
def test_thresholds_including_never_play_no_part_at_full(p_ok: float) -> None:
    policy = LinePolicy(AutomationLevel.FULL, None, None, audit_rate=0.0)
    outcome = route_inspection(prediction(p_ok), policy, NO_AUDIT)
    assert outcome.route is Route.AUTO
    assert outcome.decision is (Decision.PASS if p_ok >= 0.5 else Decision.FAIL)

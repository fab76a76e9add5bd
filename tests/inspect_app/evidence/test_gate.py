"""What-if automates exactly what routing would, and the gate's verdicts and numbers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import beta

from inspect_app.domain import AutomationLevel, LinePolicy, Prediction, Route
from inspect_app.evidence import GateTargets, automated_masks, check_gate, labels_needed, what_if
from inspect_app.routing import route_inspection

LabeledStream = Callable[..., tuple[np.ndarray, np.ndarray]]  # the fixture in conftest.py


# ----------------------------------------------------------------------------- what-if


def _prediction(p_ok: float) -> Prediction:
    rest = (1.0 - p_ok) / 4
    return Prediction(
        probabilities={
            "ok": p_ok,
            "scratch": rest,
            "crack": rest,
            "pit": rest,
            "discoloration": rest,
        },
        model_version="t",
    )


@pytest.mark.parametrize(
    ("level", "pass_threshold", "fail_threshold"),
    [
        (AutomationLevel.PARTIAL, 0.98, 0.98),
        (AutomationLevel.PARTIAL, 0.9, 0.6),
        (AutomationLevel.PARTIAL, 0.4, 0.4),  # overlapping: both-confident goes to a human
        (AutomationLevel.PARTIAL, 0.5, 0.5),
        (AutomationLevel.PARTIAL, None, 0.65),  # one-sided: never auto-pass
        (AutomationLevel.PARTIAL, 0.97, None),  # one-sided: never auto-fail
        (AutomationLevel.PARTIAL, None, None),
        (AutomationLevel.FULL, 0.99, 0.99),  # thresholds play no part at full
        (AutomationLevel.FULL, None, None),
        (AutomationLevel.SHADOW, 0.9, 0.9),
    ],
)
def test_what_if_automates_exactly_what_routing_would(
    level: AutomationLevel, pass_threshold: float | None, fail_threshold: float | None
) -> None:
    p_ok = np.concatenate([np.linspace(0, 1, 201), [0.02, 0.4, 0.5, 0.6, 0.98, 0.9, 0.1]])
    passed, failed = automated_masks(p_ok, level, pass_threshold, fail_threshold)
    policy = LinePolicy(level, pass_threshold, fail_threshold, audit_rate=0.0)
    for i, p in enumerate(p_ok):
        outcome = route_inspection(_prediction(float(p)), policy, draw=0.5)
        auto = outcome.route is Route.AUTO
        assert passed[i] == (auto and outcome.decision == "pass"), p
        assert failed[i] == (auto and outcome.decision == "fail"), p


def test_what_if_counts_escapes_and_false_rejects() -> None:
    p_ok = [0.999, 0.995, 0.99, 0.7, 0.3, 0.02, 0.01]
    defect = [False, True, False, True, False, True, False]
    result = what_if(
        p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=0.99, fail_threshold=0.98
    )
    assert (result.auto_pass.n, result.auto_pass.errors) == (3, 1)  # 0.995 was a defect
    assert (result.auto_fail.n, result.auto_fail.errors) == (2, 1)  # 0.01 was ok
    assert result.to_human == 2
    assert result.coverage == pytest.approx(5 / 7)
    assert result.auto_pass.upper_bound == pytest.approx(beta.ppf(0.95, 2, 2))


def test_what_if_refuses_ragged_or_impossible_input() -> None:
    with pytest.raises(ValueError, match="equal 1-D"):
        what_if([0.5], [True, False], level=AutomationLevel.FULL, pass_threshold=0.5,
                fail_threshold=0.5)  # fmt: skip
    with pytest.raises(ValueError, match="P\\(ok\\)"):
        what_if([1.5], [True], level=AutomationLevel.FULL, pass_threshold=0.5,
                fail_threshold=0.5)  # fmt: skip


# ----------------------------------------------------------------------------- the gate


def _gate(p_ok, defect, targets: GateTargets):
    return check_gate(
        what_if(
            p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=0.99, fail_threshold=0.99
        ),
        targets,
    )


def test_gate_accepts_sufficient_evidence(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    result = _gate(*labeled_stream(n_pass=1000, escapes=0, n_fail=400, false_rejects=1), targets)
    assert result.passed
    assert result.escape.upper_bound == pytest.approx(1 - 0.05 ** (1 / 1000))
    assert result.escape.upper_bound <= 0.005 and result.false_reject.upper_bound <= 0.02
    assert "supports partial" in result.reason


def test_gate_refuses_too_few_labels_even_with_no_error(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    result = _gate(*labeled_stream(n_pass=1000, escapes=0, n_fail=150, false_rejects=0), targets)
    assert not result.passed
    check = result.false_reject
    assert not check.passed
    assert check.labels_short == 50
    assert check.upper_bound == pytest.approx(1 - 0.05 ** (1 / 150))
    assert check.upper_bound <= 0.02  # the bound alone would pass: only the count fell short
    assert check.more_on_side_needed == 50
    assert "only 150 of the 200 required would-be auto-failed parts" in result.reason
    assert result.escape.passed


def test_gate_refuses_when_the_bound_exceeds_the_target_and_says_by_how_much(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    p_ok, defect = labeled_stream(n_pass=1000, escapes=2, n_fail=400, false_rejects=0, n_human=600)
    result = _gate(p_ok, defect, targets)
    assert not result.passed
    check = result.escape
    bound = beta.ppf(0.95, 3, 998)  # 2 escapes in 1000: about 0.63%
    assert check.upper_bound == pytest.approx(bound, abs=1e-9)
    assert check.bound_excess == pytest.approx(bound - 0.005, abs=1e-9)
    # At the observed 0.2% rate the bound reaches 0.5% at n* parts on the pass side ...
    n_star = labels_needed(0.002, 0.005)
    assert n_star is not None
    assert check.more_on_side_needed == n_star - 1000
    # ... and the pass side is 1000 of 2000 labeled parts, so twice as many labels overall.
    assert check.more_labels_needed == math.ceil((n_star - 1000) / 0.5)
    assert f"{100 * bound:.2f}%" in result.reason
    assert f"{100 * (bound - 0.005):.2f}% above the 0.50% target" in result.reason
    assert f"about {check.more_labels_needed:,} more labeled parts" in result.reason
    assert result.false_reject.passed


def test_gate_says_when_more_labels_cannot_help(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    result = _gate(*labeled_stream(n_pass=1000, escapes=10, n_fail=400, false_rejects=0), targets)
    assert not result.passed
    assert result.escape.more_on_side_needed is None
    assert "stricter thresholds" in result.reason


def test_gate_targets_are_validated() -> None:
    with pytest.raises(ValueError, match="max_escape_rate"):
        GateTargets(max_escape_rate=0.0, max_false_reject_rate=0.02, min_labels=10)


# ----------------------------------------------------------------------------- one-sided


def test_a_one_sided_policy_is_gated_only_on_the_side_that_automates(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    """Never auto-pass: the pass side has no parts by construction, which must not fail the
    gate, and its escapes (3 of 700 here, far over target) do not count."""
    p_ok, defect = labeled_stream(n_pass=700, escapes=3, n_fail=300, false_rejects=0)
    result = check_gate(
        what_if(p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=None,
                fail_threshold=0.9),
        targets,
    )  # fmt: skip
    assert result.passed
    assert (result.escape.automated, result.escape.n, result.escape.passed) == (False, 0, True)
    assert result.escape.labels_short == 0 and result.escape.bound_excess == 0.0
    assert result.false_reject.automated and result.false_reject.n == 300
    assert result.what_if.coverage == pytest.approx(0.3)
    assert "partial at pass never / fail 0.9" in result.reason
    assert "nothing is auto-passed (never)" in result.reason
    # The same evidence with both sides automated is refused on the pass side.
    both = check_gate(
        what_if(p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=0.99,
                fail_threshold=0.9),
        targets,
    )  # fmt: skip
    assert not both.passed and not both.escape.passed


def test_the_automated_side_of_a_one_sided_policy_must_still_meet_its_target(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    p_ok, defect = labeled_stream(n_pass=700, escapes=0, n_fail=100, false_rejects=0)
    result = check_gate(
        what_if(p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=0.99,
                fail_threshold=None),
        targets,
    )  # fmt: skip
    assert result.passed and not result.false_reject.automated
    short = check_gate(
        what_if(p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=None,
                fail_threshold=0.9),
        targets,
    )  # fmt: skip
    assert not short.passed
    assert short.false_reject.labels_short == 100  # 100 of the 200 required
    assert "only 100 of the 200 required would-be auto-failed parts" in short.reason
    assert "nothing is auto-passed (never)" in short.reason


def test_a_policy_that_automates_neither_side_never_passes(
    targets: GateTargets, labeled_stream: LabeledStream
) -> None:
    p_ok, defect = labeled_stream(n_pass=1000, escapes=0, n_fail=1000, false_rejects=0)
    result = check_gate(
        what_if(p_ok, defect, level=AutomationLevel.PARTIAL, pass_threshold=None,
                fail_threshold=None),
        targets,
    )  # fmt: skip
    assert not result.passed
    assert result.what_if.coverage == 0.0
    assert "both sides never" in result.reason

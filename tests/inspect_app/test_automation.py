"""The gate refuses and accepts on the right evidence with the right numbers, and the live
audit test demotes a line when audits reveal escapes, through the real review queue."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest
from scipy.stats import beta
from sqlmodel import Session, select

from inspect_app import lines
from inspect_app.accounts import add_user
from inspect_app.domain import Role
from inspect_app.evidence import labels_needed
from inspect_app.review_queue import claim_next_task, submit_label
from inspect_app.storage.tables import Event, Line, User, utcnow

AddParts = Callable[..., list[int]]


@pytest.fixture
def inspector(session: Session) -> User:
    lines.add_line(session, "line-1", min_labels=200)
    return add_user(session, "ida", Role.INSPECTOR, "inspector-pw")


@pytest.fixture
def supervisor(session: Session) -> User:
    return add_user(session, "sue", Role.SUPERVISOR, "supervisor-pw")


def _events(session: Session, kind: str) -> list[Event]:
    return list(session.exec(select(Event).where(Event.kind == kind).order_by(Event.id)))


def _shadow_labels(
    session: Session,
    add: AddParts,
    user: User,
    *,
    n_pass: int,
    escapes: int,
    n_fail: int,
    false_rejects: int,
    unsure: int = 0,
    unsure_label: str = "ok",
) -> None:
    """Blind shadow labels: confident-ok parts (P(ok) 0.999), confident-defect parts
    (P(ok) 0.001) and uncertain ones (P(ok) 0.7), with the given human verdicts."""
    p_ok = [0.999] * n_pass + [0.001] * n_fail + [0.7] * unsure
    labels = (
        ["crack"] * escapes
        + ["ok"] * (n_pass - escapes)
        + ["ok"] * false_rejects
        + ["pit"] * (n_fail - false_rejects)
        + [unsure_label] * unsure
    )
    add(session, "line-1", p_ok, labels, user_id=user.id)


def _raise(session: Session, supervisor: User, level: str = "partial", **thresholds: float):
    return lines.change_automation(
        session, "line-1", level=level, reason="evidence looks good", actor=supervisor,
        **thresholds,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the gate


def test_a_line_without_predictions_cannot_be_raised(
    session: Session, inspector: User, supervisor: User
) -> None:
    with pytest.raises(lines.AutomationRefused, match="no model predictions") as refused:
        _raise(session, supervisor)
    assert refused.value.verdict.evidence["n_labeled"] == 0


def test_too_few_labels_are_refused_even_without_errors(
    session: Session, inspector: User, supervisor: User, add_labeled_parts: AddParts
) -> None:
    _shadow_labels(session, add_labeled_parts, inspector, n_pass=700, escapes=0, n_fail=150,
                   false_rejects=0)  # fmt: skip
    with pytest.raises(lines.AutomationRefused) as refused:
        _raise(session, supervisor)
    evidence = refused.value.verdict.evidence
    assert evidence["escape"]["passed"]
    assert not evidence["false_reject"]["passed"]
    assert evidence["false_reject"]["labels_short"] == 50
    assert evidence["false_reject"]["more_on_side_needed"] == 50
    assert "only 150 of the 200 required would-be auto-failed parts" in refused.value.verdict.reason
    assert session.get(Line, "line-1").level == "shadow"  # type: ignore[union-attr]
    (event,) = _events(session, "level_change_refused")
    assert event.details["evidence"]["false_reject"]["n"] == 150  # type: ignore[index]


def test_a_bound_above_target_is_refused_with_the_shortfall_and_labels_needed(
    session: Session, inspector: User, supervisor: User, add_labeled_parts: AddParts
) -> None:
    _shadow_labels(session, add_labeled_parts, inspector, n_pass=1000, escapes=3, n_fail=200,
                   false_rejects=0)  # fmt: skip
    with pytest.raises(lines.AutomationRefused) as refused:
        _raise(session, supervisor, pass_threshold=0.99, fail_threshold=0.99)
    escape = refused.value.verdict.evidence["escape"]
    bound = beta.ppf(0.95, 4, 997)  # 3 escapes in 1000: about 0.775%
    assert escape["upper_bound"] == pytest.approx(bound, abs=1e-9)
    assert escape["bound_excess"] == pytest.approx(bound - 0.005, abs=1e-9)
    needed = labels_needed(0.003, 0.005)
    assert needed is not None
    assert escape["more_on_side_needed"] == needed - 1000
    # 1000 of the 1200 labeled parts land on the pass side
    assert escape["more_labels_needed"] == math.ceil((needed - 1000) / (1000 / 1200))
    assert refused.value.verdict.evidence["false_reject"]["passed"]
    assert f"{100 * bound:.2f}%" in refused.value.verdict.reason


def test_sufficient_evidence_raises_the_line_and_logs_the_evidence(
    session: Session, inspector: User, supervisor: User, add_labeled_parts: AddParts
) -> None:
    # 700 clean auto-passes: bound 1 - 0.05**(1/700) = 0.427% <= 0.5%;
    # 200 clean auto-fails: bound 1.49% <= 2%.
    _shadow_labels(session, add_labeled_parts, inspector, n_pass=700, escapes=0, n_fail=200,
                   false_rejects=0, unsure=100)  # fmt: skip
    line = _raise(session, supervisor)
    assert line.level == "partial"
    (event,) = _events(session, "level_change")
    evidence = event.details["evidence"]  # type: ignore[index]
    assert evidence["passed"]
    assert evidence["escape"]["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 700))
    assert evidence["coverage"] == pytest.approx(0.9)
    assert evidence["model_version"] == "test"


def test_full_judges_every_part_at_p_ok_one_half(
    session: Session, inspector: User, supervisor: User, add_labeled_parts: AddParts
) -> None:
    # Uncertain parts (P(ok) 0.7) that humans call defective: partial sends them to people,
    # full would auto-pass every one of them.
    _shadow_labels(session, add_labeled_parts, inspector, n_pass=700, escapes=0, n_fail=200,
                   false_rejects=0, unsure=30, unsure_label="scratch")  # fmt: skip
    with pytest.raises(lines.AutomationRefused) as refused:
        _raise(session, supervisor, level="full")
    escape = refused.value.verdict.evidence["escape"]
    assert (escape["n"], escape["errors"]) == (730, 30)
    assert escape["more_on_side_needed"] is None  # no number of labels fixes a 4% rate
    assert "stricter thresholds" in refused.value.verdict.reason
    assert _raise(session, supervisor, level="partial").level == "partial"


def test_labels_given_with_the_model_shown_are_not_evidence(
    session: Session, inspector: User, supervisor: User, add_labeled_parts: AddParts
) -> None:
    add_labeled_parts(session, "line-1", [0.999] * 700 + [0.001] * 200,
                      ["ok"] * 700 + ["pit"] * 200, user_id=inspector.id, level="assist",
                      model_shown=True)  # fmt: skip
    with pytest.raises(lines.AutomationRefused) as refused:
        _raise(session, supervisor)
    assert refused.value.verdict.evidence["n_labeled"] == 0
    assert "blind labels only" in refused.value.verdict.evidence["source"]


# ----------------------------------------------------------------------------- live audits


def _at(session: Session, level: str, **settings: object) -> None:
    """Put the line at a level directly, as if an earlier raise had been allowed."""
    line = session.get(Line, "line-1")
    assert line is not None
    line.level = level
    for name, value in settings.items():
        setattr(line, name, value)
    line.updated_at = utcnow()
    session.add(line)
    session.commit()


def _audits(
    session: Session, add: AddParts, user: User, p_ok: float, labels: list[str], **overrides
) -> None:
    settings = {"level": "partial", "route": "audit", "pass_threshold": 0.98,
                "fail_threshold": 0.98} | overrides  # fmt: skip
    add(session, "line-1", [p_ok] * len(labels), labels, user_id=user.id, **settings)


def _label_one_more_audit(
    session: Session, add: AddParts, user: User, p_ok: float, label: str, **overrides
) -> None:
    """The last audit goes through the real queue: claim, label, after_label."""
    settings = {"level": "partial", "route": "audit", "pass_threshold": 0.98,
                "fail_threshold": 0.98} | overrides  # fmt: skip
    add(session, "line-1", [p_ok], [None], user_id=user.id, **settings)
    task = claim_next_task(session, user, lease_seconds=60, line_id="line-1")
    assert task is not None and task.reason == "audit"
    submit_label(session, task.task_id, user, label)


def _level(session: Session) -> str:
    line = session.get(Line, "line-1", populate_existing=True)
    assert line is not None
    return line.level


def test_audits_revealing_escapes_demote_the_line(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    _at(session, "partial")
    # 12 escapes in 300 audited auto-passes: 4%, eight times the 0.5% target
    _audits(session, add_labeled_parts, inspector, 0.995, ["crack"] * 12 + ["ok"] * 288)
    _label_one_more_audit(session, add_labeled_parts, inspector, 0.995, "ok")
    assert _level(session) == "assist"
    (event,) = _events(session, "auto_demotion")
    assert event.actor == "system"
    assert "escape rate is 3.99% (12 escapes in 301 audits" in event.reason
    assert "from partial to assist" in event.reason
    checks = {c["figure"]: c for c in event.details["checks"]}  # type: ignore[index]
    assert checks["escape_rate"]["alarm"] and not checks["false_reject_rate"]["alarm"]


def test_audits_at_a_clean_rate_keep_the_level(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    _at(session, "partial")
    _audits(session, add_labeled_parts, inspector, 0.995, ["crack"] + ["ok"] * 299)
    _label_one_more_audit(session, add_labeled_parts, inspector, 0.995, "crack")
    assert _level(session) == "partial"
    assert _events(session, "auto_demotion") == []


def test_audits_of_other_settings_are_not_pooled(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    _at(session, "partial")
    _audits(session, add_labeled_parts, inspector, 0.995, ["crack"] * 12 + ["ok"] * 288,
            pass_threshold=0.95)  # fmt: skip
    _label_one_more_audit(session, add_labeled_parts, inspector, 0.995, "ok")
    assert _level(session) == "partial"


def test_auto_demotion_off_keeps_the_level_and_warns(
    session: Session,
    inspector: User,
    add_labeled_parts: AddParts,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _at(session, "partial", auto_demote=False)
    _audits(session, add_labeled_parts, inspector, 0.995, ["crack"] * 12 + ["ok"] * 288)
    with caplog.at_level(logging.WARNING, logger="inspect_app.automation"):
        _label_one_more_audit(session, add_labeled_parts, inspector, 0.995, "ok")
    assert _level(session) == "partial"
    assert "Auto-demotion is off" in caplog.text


def test_false_rejects_demote_full_to_partial_one_level_only(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    _at(session, "full")
    # 20 false rejects in 100 audited auto-fails: 20% against a 2% target
    _audits(session, add_labeled_parts, inspector, 0.01, ["ok"] * 20 + ["pit"] * 80,
            level="full")  # fmt: skip
    _label_one_more_audit(session, add_labeled_parts, inspector, 0.01, "pit", level="full")
    assert _level(session) == "partial"
    (event,) = _events(session, "auto_demotion")
    assert "false-reject rate" in event.reason


def test_a_line_raised_again_starts_a_fresh_era(
    session: Session, inspector: User, add_labeled_parts: AddParts
) -> None:
    _at(session, "partial")
    _audits(session, add_labeled_parts, inspector, 0.995, ["crack"] * 12 + ["ok"] * 288)
    _label_one_more_audit(session, add_labeled_parts, inspector, 0.995, "ok")
    assert _level(session) == "assist"
    _at(session, "partial")  # same thresholds, after a supervisor re-raised it
    _label_one_more_audit(session, add_labeled_parts, inspector, 0.995, "ok")
    assert _level(session) == "partial"
    assert len(_events(session, "auto_demotion")) == 1

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from inspect_app import automation, lines
from inspect_app.accounts import add_user
from inspect_app.automation import GateVerdict
from inspect_app.domain import AutomationLevel, LinePolicy, Role
from inspect_app.review_queue import relabel
from inspect_app.storage.tables import Event, Line, User, utcnow

L = AutomationLevel


@pytest.fixture
def supervisor(session: Session) -> User:
    return add_user(session, "sue", Role.SUPERVISOR, "supervisor-pw")


def _force_level(session: Session, line_id: str, level: AutomationLevel) -> None:
    """Put a line at a level directly, as if an earlier raise had been allowed."""
    line = session.get(Line, line_id)
    assert line is not None
    line.level = level.value
    session.add(line)
    session.commit()


def _events(session: Session, kind: str) -> list[Event]:
    return list(session.exec(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_a_new_line_has_the_default_policy(session: Session) -> None:
    line = lines.add_line(session, "line-1", audit_rate=0.05)
    assert lines.policy_of(line) == LinePolicy(L.SHADOW, 0.98, 0.98, 0.05)
    assert [x.id for x in lines.list_lines(session)] == ["line-1"]
    assert lines.get_line(session, "line-1").audit_rate == 0.05
    assert _events(session, "line_added")[0].line_id == "line-1"


def test_an_unknown_line_is_reported_by_name(session: Session) -> None:
    with pytest.raises(lines.LineNotFound, match="no line 'line-7'"):
        lines.get_line(session, "line-7")


@pytest.mark.parametrize(
    ("line_id", "level", "settings", "message"),
    [
        ("line 1", "shadow", {}, "invalid line id"),
        ("line-1", "partial", {}, "cannot start at partial"),
        ("line-1", "full", {}, "cannot start at full"),
        ("line-1", "turbo", {}, "unknown automation level"),
        ("line-1", "shadow", {"pass_threshold": 0.5}, r"pass_threshold must be in \(0.5, 1\]"),
        ("line-1", "shadow", {"audit_rate": -0.1}, r"audit_rate must be in \[0, 1\]"),
        ("line-1", "shadow", {"colour": "red"}, "unknown line setting"),
    ],
)
def test_bad_line_input_is_refused(
    session: Session, line_id: str, level: str, settings: dict, message: str
) -> None:
    with pytest.raises(lines.InvalidLineSettings, match=message):
        lines.add_line(session, line_id, level, **settings)


def test_a_line_id_is_taken_once(session: Session) -> None:
    lines.add_line(session, "line-1")
    with pytest.raises(lines.LineExists):
        lines.add_line(session, "line-1")


@pytest.mark.parametrize(
    ("current", "target", "gated"),
    [
        (LinePolicy(L.SHADOW), LinePolicy(L.ASSIST), False),
        (LinePolicy(L.HUMAN_ONLY), LinePolicy(L.ASSIST), False),
        (LinePolicy(L.ASSIST), LinePolicy(L.PARTIAL), True),
        (LinePolicy(L.SHADOW), LinePolicy(L.FULL), True),
        (LinePolicy(L.PARTIAL), LinePolicy(L.FULL), True),
        (LinePolicy(L.FULL), LinePolicy(L.PARTIAL), False),
        (LinePolicy(L.FULL), LinePolicy(L.HUMAN_ONLY), False),
        (LinePolicy(L.PARTIAL, 0.98, 0.98), LinePolicy(L.PARTIAL, 0.95, 0.98), True),
        (LinePolicy(L.PARTIAL, 0.98, 0.98), LinePolicy(L.PARTIAL, 0.98, 0.90), True),
        (LinePolicy(L.PARTIAL, 0.95, 0.95), LinePolicy(L.PARTIAL, 0.99, 0.99), False),
        (LinePolicy(L.FULL, audit_rate=0.02), LinePolicy(L.FULL, audit_rate=0.1), False),
    ],
)
def test_only_changes_that_let_the_model_decide_more_need_evidence(
    current: LinePolicy, target: LinePolicy, gated: bool
) -> None:
    assert lines.needs_evidence(current, target) is gated


@pytest.mark.parametrize("start", [L.FULL, L.PARTIAL, L.ASSIST, L.SHADOW])
def test_lowering_is_always_allowed_and_recorded(
    session: Session, supervisor: User, start: AutomationLevel
) -> None:
    lines.add_line(session, "line-1")
    _force_level(session, "line-1", start)
    line = lines.change_automation(
        session, "line-1", level=L.HUMAN_ONLY, reason="camera moved", actor=supervisor
    )
    assert line.level == "human_only"
    assert lines.get_line(session, "line-1").level == "human_only"
    event = _events(session, "level_change")[-1]
    assert (event.actor, event.reason, event.line_id) == ("sue", "camera moved", "line-1")
    assert event.details is not None
    assert event.details["old"]["level"] == start.value
    assert event.details["new"]["level"] == "human_only"


def test_raising_below_partial_is_not_gated_but_recorded(
    session: Session, supervisor: User, caplog: pytest.LogCaptureFixture
) -> None:
    lines.add_line(session, "line-1")
    with caplog.at_level(logging.INFO, logger="inspect_app.lines"):
        lines.change_automation(
            session, "line-1", level="assist", reason="show the model", actor=supervisor
        )
    assert lines.get_line(session, "line-1").level == "assist"
    assert _events(session, "level_change")[-1].details["gate"] == {"gated": False}  # type: ignore[index]
    assert "shadow -> assist" in caplog.text and "show the model" in caplog.text


def test_raising_to_partial_is_refused_by_the_gate_and_the_refusal_recorded(
    session: Session, supervisor: User, caplog: pytest.LogCaptureFixture
) -> None:
    lines.add_line(session, "line-1", level="assist")
    with (
        caplog.at_level(logging.INFO, logger="inspect_app.lines"),
        pytest.raises(lines.AutomationRefused) as refused,
    ):
        lines.change_automation(
            session, "line-1", level="partial", pass_threshold=0.97, reason="go", actor=supervisor
        )
    expected = automation.evaluate_raise(
        session, lines.get_line(session, "line-1"), LinePolicy(L.PARTIAL, 0.97, 0.98)
    )
    assert not refused.value.verdict.allowed
    assert refused.value.verdict.reason == expected.reason
    line = lines.get_line(session, "line-1")
    assert (line.level, line.pass_threshold) == ("assist", 0.98)  # nothing changed
    event = _events(session, "level_change_refused")[-1]
    assert event.details is not None and event.details["gate"]["allowed"] is False
    assert event.details["new"] == {
        "level": "partial", "pass_threshold": 0.97, "fail_threshold": 0.98, "audit_rate": 0.02
    }  # fmt: skip
    assert "refused assist -> partial" in caplog.text
    assert not _events(session, "level_change")


def test_an_allowed_raise_is_applied_with_its_evidence(
    session: Session, supervisor: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's verdict decides; here a gate that allows, to see the change go through."""
    asked: list[LinePolicy] = []

    def allow(session: Session, line: Line, target: LinePolicy) -> GateVerdict:
        asked.append(target)
        return GateVerdict(allowed=True, reason="bounds met", evidence={"escape_upper": 0.004})

    monkeypatch.setattr(automation, "evaluate_raise", allow)
    lines.add_line(session, "line-1", level="assist")
    line = lines.change_automation(
        session, "line-1", level="partial", pass_threshold=0.99, reason="ready", actor=supervisor
    )
    assert (line.level, line.pass_threshold) == ("partial", 0.99)
    assert asked == [LinePolicy(L.PARTIAL, 0.99, 0.98, 0.02)]
    event = _events(session, "level_change")[-1]
    assert event.details is not None and event.details["evidence"] == {"escape_upper": 0.004}


def test_an_inspector_may_not_change_a_line(session: Session) -> None:
    inspector = add_user(session, "ann", Role.INSPECTOR, "inspector-pw")
    lines.add_line(session, "line-1")
    with pytest.raises(lines.NotPermitted, match="supervisors only"):
        lines.change_automation(session, "line-1", level="human_only", reason="x", actor=inspector)
    assert lines.get_line(session, "line-1").level == "shadow"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"level": "shadow", "reason": "  "}, "a reason is required"),
        ({"level": "shadow", "reason": "x", "pass_threshold": 0.5}, "pass_threshold"),
        ({"level": "shadow", "reason": "x", "fail_threshold": 1.01}, "fail_threshold"),
        ({"level": "shadow", "reason": "x", "audit_rate": 1.5}, "audit_rate"),
        ({"level": "ludicrous", "reason": "x"}, "unknown automation level"),
    ],
)
def test_bad_changes_are_refused_with_a_clear_message(
    session: Session, supervisor: User, change: dict, message: str
) -> None:
    lines.add_line(session, "line-1")
    with pytest.raises(lines.InvalidLineSettings, match=message):
        lines.change_automation(session, "line-1", actor=supervisor, **change)


def test_changing_an_unknown_line_says_so(session: Session, supervisor: User) -> None:
    with pytest.raises(lines.LineNotFound):
        lines.change_automation(session, "nope", level="shadow", reason="x", actor=supervisor)


def test_counts_by_line_since_a_time(
    session: Session, supervisor: User, add_labeled_parts: Callable[..., list[int]]
) -> None:
    lines.add_line(session, "line-1")
    lines.add_line(session, "line-2")
    inspector = add_user(session, "ida", Role.INSPECTOR, "inspector-pw")
    now = utcnow()
    yesterday = now - timedelta(days=1)
    parts = add_labeled_parts(
        session, "line-1", [0.99, 0.1, 0.9], ["ok", "pit", None], user_id=inspector.id
    )
    add_labeled_parts(session, "line-2", [0.99], ["ok"], user_id=inspector.id)
    add_labeled_parts(
        session, "line-2", [0.99], [None], user_id=inspector.id, received_at=yesterday
    )
    relabel(session, parts[0], supervisor, "scratch")  # replaces a label, adds none
    since = now - timedelta(hours=1)
    assert lines.inspection_counts_by_line(session, since) == {"line-1": 3, "line-2": 1}
    assert lines.inspection_counts_by_line(session, yesterday) == {"line-1": 3, "line-2": 2}
    assert lines.label_counts_by_line(session, since) == {"line-1": 2, "line-2": 1}
    later = utcnow() + timedelta(hours=1)
    assert lines.inspection_counts_by_line(session, later) == {}
    assert lines.label_counts_by_line(session, later) == {}

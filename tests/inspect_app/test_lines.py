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

AddParts = Callable[..., list[int]]

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
        # one-sided: turning a side off tightens, turning it on (at any threshold) loosens
        (LinePolicy(L.PARTIAL, 0.98, 0.98), LinePolicy(L.PARTIAL, None, 0.98), False),
        (LinePolicy(L.PARTIAL, None, 0.98), LinePolicy(L.PARTIAL, 0.9999, 0.98), True),
        (LinePolicy(L.PARTIAL, None, 0.9), LinePolicy(L.PARTIAL, None, 0.8), True),
        (LinePolicy(L.PARTIAL, None, 0.9), LinePolicy(L.PARTIAL, None, 0.95), False),
        (LinePolicy(L.ASSIST, None, 0.9), LinePolicy(L.PARTIAL, None, 0.9), True),
        (LinePolicy(L.PARTIAL, None, 0.9), LinePolicy(L.FULL, None, 0.9), True),
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


# -- one-sided partial automation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [("never", None), (" Never ", None), ("0.97", 0.97), (0.9, 0.9), (1, 1.0)],
)
def test_a_threshold_is_a_number_or_never(given: float | str, stored: float | None) -> None:
    assert lines.parse_threshold("pass_threshold", given) == stored


@pytest.mark.parametrize("given", ["always", "", "0.5", 0.5, 1.01, float("nan"), True])
def test_a_threshold_that_is_neither_is_refused(given: float | str) -> None:
    with pytest.raises(lines.InvalidLineSettings, match=r"pass_threshold must be .*'never'"):
        lines.parse_threshold("pass_threshold", given)


def _one_sided_evidence(session: Session, add_labeled_parts: AddParts) -> None:
    """line-1 at shadow with blind labels: a pass side with 3 escapes in 700 (far over the
    0.5% target at any threshold), a clean fail side of 300."""
    lines.add_line(session, "line-1")
    ida = add_user(session, "ida", Role.INSPECTOR, "inspector-pw")
    add_labeled_parts(
        session, "line-1", [0.9995] * 700, ["crack"] * 3 + ["ok"] * 697, user_id=ida.id
    )
    add_labeled_parts(session, "line-1", [0.001] * 300, ["pit"] * 300, user_id=ida.id)


def test_a_line_goes_to_partial_on_one_side_on_that_sides_evidence(
    session: Session, supervisor: User, add_labeled_parts: AddParts
) -> None:
    _one_sided_evidence(session, add_labeled_parts)
    with pytest.raises(lines.AutomationRefused, match="escape rate bound"):
        lines.change_automation(
            session, "line-1", level="partial", pass_threshold=0.999, fail_threshold=0.9,
            reason="both sides", actor=supervisor,
        )  # fmt: skip
    line = lines.change_automation(
        session, "line-1", level="partial", pass_threshold="never", fail_threshold=0.9,
        reason="auto-fail only", actor=supervisor,
    )  # fmt: skip
    assert (line.level, line.pass_threshold, line.fail_threshold) == ("partial", None, 0.9)
    assert lines.policy_of(lines.get_line(session, "line-1")) == LinePolicy(L.PARTIAL, None, 0.9)
    event = _events(session, "level_change")[-1]
    assert event.details is not None
    assert event.details["new"]["pass_threshold"] == "never"
    assert event.details["gate"] == {
        "gated": True, "allowed": True, "reason": event.details["gate"]["reason"]
    }  # fmt: skip
    assert event.details["evidence"]["escape"]["automated"] is False
    assert event.details["evidence"]["false_reject"]["n"] == 300
    # Turning auto-pass on again is a loosening: gated, and refused on this evidence.
    with pytest.raises(lines.AutomationRefused):
        lines.change_automation(
            session, "line-1", level="partial", pass_threshold=0.9999, reason="try",
            actor=supervisor,
        )  # fmt: skip
    assert lines.get_line(session, "line-1").pass_threshold is None


def test_turning_a_side_off_is_a_tightening_and_needs_no_evidence(
    session: Session, supervisor: User
) -> None:
    lines.add_line(session, "line-1")
    _force_level(session, "line-1", L.PARTIAL)
    line = lines.change_automation(
        session, "line-1", level="partial", pass_threshold="never", reason="escapes reported",
        actor=supervisor,
    )  # fmt: skip
    assert (line.level, line.pass_threshold, line.fail_threshold) == ("partial", None, 0.98)
    assert _events(session, "level_change")[-1].details["gate"]["gated"] is False  # type: ignore[index]


def test_partial_with_both_sides_never_is_refused(session: Session, supervisor: User) -> None:
    lines.add_line(session, "line-1", level="assist", pass_threshold="never")
    assert lines.get_line(session, "line-1").pass_threshold is None
    lines.change_automation(
        session, "line-1", level="assist", fail_threshold="never", reason="x", actor=supervisor
    )  # at assist the thresholds decide nothing: allowed
    with pytest.raises(lines.InvalidLineSettings, match="both thresholds never"):
        lines.change_automation(session, "line-1", level="partial", reason="go", actor=supervisor)
    assert lines.get_line(session, "line-1").level == "assist"
    assert not _events(session, "level_change_refused")


# -- targets ---------------------------------------------------------------------------------


def test_targets_are_changed_with_old_new_and_who_and_never_raise_a_line(
    session: Session, supervisor: User
) -> None:
    lines.add_line(session, "line-1", level="assist")
    before = lines.get_line(session, "line-1").updated_at
    change = lines.set_targets(
        session, "line-1", max_escape_rate=0.01, min_labels=300, auto_demote=False,
        reason="customer spec rev B", actor=supervisor,
    )  # fmt: skip
    line = lines.get_line(session, "line-1")
    assert (line.max_escape_rate, line.max_false_reject_rate, line.min_labels) == (0.01, 0.02, 300)
    assert line.auto_demote is False and line.level == "assist"
    assert line.updated_at == before  # the live audits' era does not restart
    assert change.gate is None and change.live is None
    assert "apply to the next raise" in change.message
    event = _events(session, "targets_change")[-1]
    assert (event.actor, event.reason) == ("sue", "customer spec rev B")
    assert event.details is not None
    assert event.details["old"] == {
        "max_escape_rate": 0.005, "max_false_reject_rate": 0.02, "min_labels": 200,
        "auto_demote": True,
    }  # fmt: skip
    assert event.details["new"]["min_labels"] == 300


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reason": "x"}, "nothing to change"),
        ({"reason": " ", "min_labels": 5}, "a reason is required"),
        ({"reason": "x", "max_escape_rate": 0.0}, "max_escape_rate must be from 1e-06 to 0.25"),
        ({"reason": "x", "max_false_reject_rate": 0.3}, "max_false_reject_rate must be from"),
        ({"reason": "x", "min_labels": 0}, "min_labels must be a whole number from 1"),
        ({"reason": "x", "min_labels": 10**7}, "min_labels must be a whole number from 1"),
    ],
)
def test_bad_targets_are_refused_with_a_clear_message(
    session: Session, supervisor: User, change: dict, message: str
) -> None:
    lines.add_line(session, "line-1")
    with pytest.raises(lines.InvalidLineSettings, match=message):
        lines.set_targets(session, "line-1", actor=supervisor, **change)
    assert not _events(session, "targets_change")


def test_an_inspector_may_not_change_targets(session: Session) -> None:
    inspector = add_user(session, "ann", Role.INSPECTOR, "inspector-pw")
    lines.add_line(session, "line-1")
    with pytest.raises(lines.NotPermitted, match="supervisors only"):
        lines.set_targets(session, "line-1", min_labels=1, reason="x", actor=inspector)
    assert lines.get_line(session, "line-1").min_labels == 200


def _partial_with_audits(session: Session, add_labeled_parts: AddParts) -> None:
    """line-1 at partial (0.98/0.98) with 400 audited auto-passes, 4 of them escapes (1%):
    not clearly above the 0.5% default target, clearly above a 0.1% one."""
    lines.add_line(session, "line-1")
    _force_level(session, "line-1", L.PARTIAL)
    ida = add_user(session, "ida", Role.INSPECTOR, "inspector-pw")
    add_labeled_parts(
        session, "line-1", [0.999] * 400, ["scratch"] * 4 + ["ok"] * 396, user_id=ida.id,
        level="partial", route="audit",
    )  # fmt: skip


@pytest.mark.parametrize("auto_demote", [True, False])
def test_a_stricter_target_the_live_audits_clearly_exceed_lowers_the_line_at_once(
    session: Session, supervisor: User, add_labeled_parts: AddParts, auto_demote: bool
) -> None:
    _partial_with_audits(session, add_labeled_parts)
    loose = lines.set_targets(
        session, "line-1", max_escape_rate=0.005, auto_demote=auto_demote, reason="same",
        actor=supervisor,
    )  # fmt: skip
    assert loose.live is not None and not loose.live.alarmed
    assert loose.line.level == "partial" and "the level stays partial" in loose.message
    assert loose.gate is not None  # the gate at the current settings is reported

    strict = lines.set_targets(
        session, "line-1", max_escape_rate=0.001, reason="new customer spec", actor=supervisor
    )
    assert strict.live is not None and strict.live.alarmed
    line = lines.get_line(session, "line-1")
    event = _events(session, "targets_change")[-1]
    assert event.details is not None and event.details["live"]["alarmed"] is True
    if auto_demote:
        assert line.level == "assist" and strict.live.demoted_to is L.ASSIST
        assert "Lowered from partial to assist at once" in strict.message
        demotion = _events(session, "auto_demotion")[-1]
        assert demotion.details is not None
        assert demotion.details["triggered_by_event"] == event.id
        assert event.details["live"]["demoted_to"] == "assist"
    else:
        assert line.level == "partial" and strict.live.demoted_to is None
        assert "Auto-demotion is off" in strict.message
        assert not _events(session, "auto_demotion")


def test_a_looser_target_never_raises_a_line(
    session: Session, supervisor: User, add_labeled_parts: AddParts
) -> None:
    _one_sided_evidence(session, add_labeled_parts)  # evidence that would pass a looser gate
    change = lines.set_targets(
        session, "line-1", max_escape_rate=0.2, min_labels=1, reason="x", actor=supervisor
    )
    assert change.line.level == "shadow" and not _events(session, "level_change")

"""What the Monitoring page and the API read: the monitor's stored values, alarms with their
states and edits, history and actions, the latest drift reports, and the gate's refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from inspect_app.lines import LineNotFound, add_line
from inspect_app.monitoring import queries
from inspect_app.monitoring.alarms import DEFAULT_RULES
from inspect_app.monitoring.service import set_line_rule
from inspect_app.storage.tables import Event, MonitorSample
from tests.inspect_app.monitoring.monitoring_world import (
    PARTS,
    T0,
    MonitoringWorld,
    inspection,
    seed_monitoring,
)


@pytest.fixture
def world(session: Session) -> MonitoringWorld:
    seeded = seed_monitoring(session)
    # a second line's records must never show on line-1's page
    add_line(session, "line-2")
    session.add(MonitorSample(line_id="line-2", at=T0, metric="gate_refusal_rate", value=0.9))
    session.add(inspection("line-2", T0, gate_codes="blank"))
    session.add(Event(line_id="line-2", kind="alarm_firing", actor="system", details={}))
    session.commit()
    return seeded


def test_a_series_is_the_newest_evaluations_with_a_value_oldest_first(
    session: Session, world: MonitoringWorld
) -> None:
    series = queries.monitored_series(session, "line-1", "input_drift")
    assert [p.at for p in series] == [T0 + timedelta(minutes=k) for k in range(1, 12)]
    assert series[0].value == pytest.approx(0.1) and series[-1].value == pytest.approx(1e-11)
    assert series[0].at.tzinfo is not None  # aware UTC from either database
    newest = queries.monitored_series(session, "line-1", "gate_refusal_rate", limit=3)
    assert [p.value for p in newest] == pytest.approx([0.18, 0.2, 0.22])
    since = queries.monitored_series(
        session, "line-1", "gate_refusal_rate", since=T0 + timedelta(minutes=10)
    )
    assert len(since) == 2
    # the embedding test ran once in the 12 evaluations: one point, not eleven gaps
    assert len(queries.monitored_series(session, "line-1", "embedding_drift")) == 1


def test_alarms_are_the_shipped_rules_with_the_lines_state_and_edits(
    session: Session, world: MonitoringWorld
) -> None:
    set_line_rule(
        session, "line-1", "input_drift", {"threshold": 1e-5, "enabled": False},
        actor="sam", reason="lamp being replaced",
    )  # fmt: skip
    session.commit()
    alarms = {a.name: a for a in queries.line_alarms(session, "line-1")}
    assert list(alarms) == [r.name for r in DEFAULT_RULES]
    gate = alarms["gate_refusals_high"]
    assert (gate.status, gate.since, gate.value) == ("firing", T0 + timedelta(minutes=10), 0.22)
    assert gate.metric_label == "image gate refusal rate"
    assert gate.actions == ["stop_automation", "notify"] and gate.edits == {}
    edited = alarms["input_drift"]
    assert (edited.threshold, edited.enabled, edited.status) == (1e-5, False, "ok")
    assert edited.edits == {"threshold": 1e-5, "enabled": False}
    assert (edited.edited_by, edited.edit_reason) == ("sam", "lamp being replaced")
    assert edited.edited_at is not None and edited.since is None
    # the other line keeps the shipped rule
    other = queries.line_alarm(session, "line-2", "input_drift")
    assert (other.threshold, other.enabled) == (1e-4, True)
    with pytest.raises(LookupError, match="no alarm rule 'lamp'"):
        queries.line_alarm(session, "line-1", "lamp")


def test_history_and_actions_are_the_lines_alarm_events_newest_first(
    session: Session, world: MonitoringWorld
) -> None:
    history = queries.monitoring_events(session, "line-1", queries.HISTORY_KINDS)
    assert [e.kind for e in history] == ["alarm_firing", "alarm_pending"]
    firing = history[0]
    assert (firing.alarm, firing.severity, firing.from_status, firing.to_status) == (
        "gate_refusals_high",
        "critical",
        "pending",
        "firing",
    )
    assert firing.value == 0.22
    actions = queries.monitoring_events(session, "line-1", queries.ACTION_KINDS)
    assert {e.kind for e in actions} == {"alarm_stop_automation", "alarm_notify"}
    assert all(e.alarm == "gate_refusals_high" for e in actions)
    assert len(queries.monitoring_events(session, "line-1", queries.HISTORY_KINDS, limit=1)) == 1


def test_the_latest_drift_report_of_each_kind_with_the_responsible_parts(
    session: Session, world: MonitoringWorld
) -> None:
    reports = queries.latest_drift(session, "line-1")
    assert [r.kind for r in reports] == ["input", "embedding"]  # no prediction test ran yet
    latest_input = reports[0]
    assert latest_input.drifted and latest_input.p_value == pytest.approx(1e-11)
    assert latest_input.details["metrics"][0]["metric"] == "brightness"
    assert latest_input.responsible == []
    embedding = reports[1]
    # in the report's order, the id of a part no longer stored left out
    expected = [i for i in world.responsible if i in world.inspection_ids]
    assert [p.inspection_id for p in embedding.responsible] == expected
    assert all(len(p.image_sha256) == 64 for p in embedding.responsible)
    assert embedding.responsible[0].gate_codes == ["underexposed", "blurred"]  # the last part
    capped = queries.latest_drift(session, "line-1", responsible_limit=1)
    assert len(capped[1].responsible) == 1


def test_gate_refusals_and_their_counts_by_reason(session: Session, world: MonitoringWorld) -> None:
    refusals = queries.gate_refusals(session, "line-1")
    assert [r.inspection_id for r in refusals] == world.gated_ids[::-1]
    assert refusals[0].codes == ["underexposed", "blurred"]
    assert refusals[0].reason and "too dark" in refusals[0].reason
    counts = queries.gate_counts(session, "line-1")
    assert (counts.parts, counts.refused) == (PARTS, len(world.gated_ids))
    assert counts.by_code == {"underexposed": 6, "blurred": 3}
    recent = queries.gate_counts(session, "line-1", parts=20)
    assert (recent.parts, recent.refused, recent.by_code) == (
        20,
        2,
        {"underexposed": 2, "blurred": 1},
    )


def test_an_input_metric_per_part_oldest_first_with_the_gates_verdict(
    session: Session, world: MonitoringWorld
) -> None:
    session.add(inspection("line-1", T0 + timedelta(hours=1), clipped_dark=None))
    session.commit()
    points = queries.input_metric_series(session, "line-1", "brightness", 10)
    assert [p.value for p in points[:-1]] == [130.0 - i for i in range(51, 60)]
    assert points[-1].value == 120.0  # the part added last
    assert [p.gated for p in points].count(True) == 1  # part 59
    # a part measured before the clipped shares existed has none: left out, not zero
    dark = queries.input_metric_series(session, "line-1", "clipped_dark", 1000)
    assert len(dark) == PARTS
    with pytest.raises(ValueError, match="unknown input metric 'id'"):
        queries.input_metric_series(session, "line-1", "id", 10)


def test_the_overview_puts_the_page_together(session: Session, world: MonitoringWorld) -> None:
    overview = queries.monitoring_overview(session, "line-1")
    assert (overview.line_id, overview.level, overview.model_version) == (
        "line-1",
        "shadow",
        "test",
    )
    assert overview.evaluated_at == T0 + timedelta(minutes=11)
    assert set(overview.series) >= {"gate_refusal_rate", "input_drift", "embedding_drift"}
    assert len(overview.series["gate_refusal_rate"]) == 12
    assert overview.series["defect_rate_shift"] == []
    assert [a.status for a in overview.alarms].count("firing") == 1
    assert [e.kind for e in overview.history] == ["alarm_firing", "alarm_pending"]
    assert len(overview.actions) == 2 and len(overview.drift) == 2
    assert overview.gate_counts.refused == len(overview.gate_refusals) == 6
    later = queries.monitoring_overview(session, "line-1", since=T0 + timedelta(minutes=10))
    assert len(later.series["gate_refusal_rate"]) == 2
    assert [e.kind for e in later.history] == ["alarm_firing"]
    with pytest.raises(LineNotFound, match="no line 'line-9'"):
        queries.monitoring_overview(session, "line-9")
    other = queries.monitoring_overview(session, "line-2")
    assert other.evaluated_at == T0 and other.drift == [] and other.actions == []
    assert [e.kind for e in other.history] == ["alarm_firing"]
    assert other.gate_counts.by_code == {"blank": 1}
    assert [p.value for p in other.series["gate_refusal_rate"]] == [0.9]

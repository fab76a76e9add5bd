"""What a supervisor reads about a line's monitoring: the Monitoring page and the API both
call these, so the two never show different numbers.

Read-only: the values come from what `inspect_app.monitoring.service.LineMonitor` stored
(`MonitorSample`, `DriftReport`, `AlarmStateRow`, the `alarm_*` events) and from the
inspection rows themselves (input metrics, gate verdicts). Nothing here computes a statistic
or steps an alarm; a page that shows a number the monitor did not act on would mislead.

Every list is bounded (a line runs for years), newest first except the series, which are
oldest first because that is how they are plotted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from inspect_app.lines import LineNotFound
from inspect_app.monitoring.alarms import MONITORED_METRICS, AlarmRule, AlarmState
from inspect_app.monitoring.service import DRIFT_METRICS, alarm_states, line_rules
from inspect_app.storage.tables import (
    AlarmRuleOverride,
    DriftReport,
    Event,
    Inspection,
    Line,
    MonitorSample,
)
from inspect_app.timeutil import as_utc

# The events an alarm's life writes (`LineMonitor._record_transition`), and a supervisor's
# edit of a rule: the history. What the alarms did to the line: the actions.
HISTORY_KINDS: tuple[str, ...] = (
    "alarm_pending",
    "alarm_firing",
    "alarm_resolved",
    "alarm_ok",
    "alarm_rule_changed",
)
ACTION_KINDS: tuple[str, ...] = (
    "alarm_stop_automation",
    "alarm_raise_audit_rate",
    "alarm_notify",
    "alarm_rollback_candidate",
)
DRIFT_KINDS: tuple[str, ...] = ("input", "embedding", "prediction", "concept")
# Input metrics stored per inspection that have a reference band in the profile.
INPUT_METRICS: tuple[str, ...] = DRIFT_METRICS

SERIES_LIMIT = 500  # evaluations per metric: about 5,000 parts at one every 10
EVENTS_LIMIT = 50
REFUSALS_LIMIT = 50
GATE_WINDOW_PARTS = 1000  # the refusal counts by code are over the line's last this many parts
RESPONSIBLE_LIMIT = 24  # images most responsible for an embedding drift, per report


@dataclass(frozen=True)
class SeriesPoint:
    at: datetime
    value: float


@dataclass(frozen=True)
class MetricPoint:
    """One part's input metric, for plotting against the reference band."""

    inspection_id: int
    at: datetime
    value: float
    gated: bool  # the image gate refused this frame


@dataclass(frozen=True)
class LineAlarm:
    """One rule as it applies on the line (the shipped default with the line's edits) and
    where it stands now."""

    name: str
    metric: str
    metric_label: str
    comparison: str
    threshold: float
    clear_threshold: float
    severity: str
    description: str
    window_parts: int | None
    window_seconds: float | None
    hold: int
    hold_seconds: float
    clear_hold: int
    clear_hold_seconds: float
    actions: list[str]
    audit_rate: float | None
    enabled: bool
    status: str  # alarms.AlarmStatus
    since: datetime | None  # when it entered `status`; None: never left ok
    value: float | None  # the last value the rule saw
    # the line's edit of the shipped rule, if any: the fields changed, who, why, when
    edits: dict[str, Any] = field(default_factory=dict)
    edited_by: str | None = None
    edit_reason: str | None = None
    edited_at: datetime | None = None


@dataclass(frozen=True)
class MonitoringEvent:
    """An alarm's state change, a rule edit, or an action an alarm took."""

    id: int
    at: datetime
    kind: str
    actor: str
    reason: str
    alarm: str | None  # the rule's name
    severity: str | None
    from_status: str | None
    to_status: str | None
    value: float | None
    details: dict[str, Any] | None


@dataclass(frozen=True)
class ResponsiblePart:
    inspection_id: int
    received_at: datetime
    image_sha256: str
    image_format: str
    gate_codes: list[str]


@dataclass(frozen=True)
class DriftSummary:
    """The latest drift test of one kind on the line."""

    id: int
    kind: str  # input | embedding | prediction | concept
    at: datetime
    model_version: str | None
    window: int  # recent parts tested
    p_value: float | None
    drifted: bool
    details: dict[str, Any]
    # embedding drift: the parts that told the window from the reference best, most first
    responsible: list[ResponsiblePart]


@dataclass(frozen=True)
class GateRefusal:
    inspection_id: int
    at: datetime
    codes: list[str]
    reason: str | None
    ood_distance: float | None


@dataclass(frozen=True)
class GateCounts:
    """The image gate over the line's last `parts` inspections (or fewer, since `since`)."""

    parts: int
    refused: int
    by_code: dict[str, int]  # a frame refused for two reasons counts under both


@dataclass(frozen=True)
class MonitoringOverview:
    line_id: str
    level: str
    audit_rate: float
    evidence_since: datetime | None  # an alarm stopped automation: evidence restarts here
    evaluated_at: datetime | None  # the monitor's latest evaluation of the line
    model_version: str | None  # the model of that evaluation's window
    series: dict[str, list[SeriesPoint]]  # monitored metric -> its values, oldest first
    alarms: list[LineAlarm]
    history: list[MonitoringEvent]  # newest first
    actions: list[MonitoringEvent]  # newest first
    drift: list[DriftSummary]  # the latest of each kind that has run, in DRIFT_KINDS order
    gate_refusals: list[GateRefusal]  # newest first
    gate_counts: GateCounts


def _line(session: Session, line_id: str) -> Line:
    line = session.get(Line, line_id)
    if line is None:
        raise LineNotFound(f"no line {line_id!r}")
    return line


def _at(value: datetime) -> datetime:
    return as_utc(value) or value


def _codes(text: str | None) -> list[str]:
    return [c for c in text.split(",") if c] if text else []


# -- alarms


def alarm_view(
    rule: AlarmRule, state: AlarmState | None = None, override: AlarmRuleOverride | None = None
) -> LineAlarm:
    """A rule as `line_alarms` shows it (a rule never evaluated is ok, since never)."""
    state = state or AlarmState()
    return LineAlarm(
        name=rule.name,
        metric=rule.metric,
        metric_label=rule.watched.label,
        comparison=rule.comparison.value,
        threshold=rule.threshold,
        clear_threshold=rule.clear_threshold,
        severity=rule.severity.value,
        description=rule.description,
        window_parts=rule.window_parts,
        window_seconds=rule.window_seconds,
        hold=rule.hold,
        hold_seconds=rule.hold_seconds,
        clear_hold=rule.clear_hold,
        clear_hold_seconds=rule.clear_hold_seconds,
        actions=[a.value for a in rule.actions],
        audit_rate=rule.audit_rate,
        enabled=rule.enabled,
        status=state.status.value,
        since=as_utc(state.since),
        value=state.value,
        edits=dict(override.changes) if override is not None else {},
        edited_by=override.updated_by if override is not None else None,
        edit_reason=override.reason if override is not None else None,
        edited_at=as_utc(override.updated_at) if override is not None else None,
    )


def line_alarms(session: Session, line_id: str) -> list[LineAlarm]:
    """The line's rules in the shipped order, each with its state and the line's edit.

    Raises LineNotFound for an unknown line.
    """
    _line(session, line_id)
    states = alarm_states(session, line_id)
    overrides = {
        o.rule: o
        for o in session.exec(
            select(AlarmRuleOverride).where(AlarmRuleOverride.line_id == line_id)
        ).all()
    }
    return [
        alarm_view(rule, states.get(rule.name), overrides.get(rule.name))
        for rule in line_rules(session, line_id)
    ]


def line_alarm(session: Session, line_id: str, rule: str) -> LineAlarm:
    """One rule of `line_alarms`; LookupError (LineNotFound for the line) if unknown."""
    for alarm in line_alarms(session, line_id):
        if alarm.name == rule:
            return alarm
    raise LookupError(f"no alarm rule {rule!r} (known: {', '.join(rule_names(session, line_id))})")


def rule_names(session: Session, line_id: str) -> list[str]:
    return [r.name for r in line_rules(session, line_id)]


# -- events


def _event(e: Event) -> MonitoringEvent:
    details = e.details or {}
    value = details.get("value")
    return MonitoringEvent(
        id=e.id or 0,
        at=_at(e.at),
        kind=e.kind,
        actor=e.actor,
        reason=e.reason,
        alarm=details.get("alarm") or details.get("rule"),
        severity=details.get("severity"),
        from_status=details.get("from_status"),
        to_status=details.get("to_status"),
        value=float(value) if isinstance(value, int | float) else None,
        details=e.details,
    )


def monitoring_events(
    session: Session,
    line_id: str,
    kinds: Sequence[str],
    *,
    since: datetime | None = None,
    limit: int = EVENTS_LIMIT,
) -> list[MonitoringEvent]:
    """The line's events of `kinds`, newest first."""
    query = select(Event).where(Event.line_id == line_id, col(Event.kind).in_(list(kinds)))
    if since is not None:
        query = query.where(col(Event.at) >= as_utc(since))
    query = query.order_by(col(Event.at).desc(), col(Event.id).desc()).limit(limit)
    return [_event(e) for e in session.exec(query)]


# -- series


def monitored_series(
    session: Session,
    line_id: str,
    metric: str,
    *,
    since: datetime | None = None,
    limit: int = SERIES_LIMIT,
) -> list[SeriesPoint]:
    """The monitor's values of `metric` on the line, oldest first: the newest `limit`
    evaluations that had a value (a window too short, or a slow test that did not run at
    that evaluation, stores no value and is left out)."""
    query = select(MonitorSample.at, MonitorSample.value).where(
        MonitorSample.line_id == line_id,
        MonitorSample.metric == metric,
        col(MonitorSample.value).is_not(None),
    )
    if since is not None:
        query = query.where(col(MonitorSample.at) >= as_utc(since))
    rows = session.exec(
        query.order_by(col(MonitorSample.at).desc(), col(MonitorSample.id).desc()).limit(limit)
    ).all()
    return [SeriesPoint(at=_at(at), value=float(value)) for at, value in reversed(rows)]


def input_metric_series(
    session: Session,
    line_id: str,
    metric: str,
    limit: int = SERIES_LIMIT,
    *,
    since: datetime | None = None,
) -> list[MetricPoint]:
    """Each of the line's newest `limit` parts' value of an input metric, oldest first.

    `metric` is one of `INPUT_METRICS` (ValueError otherwise: the name picks a column).
    Parts from before the metric was measured (None) are left out.
    """
    if metric not in INPUT_METRICS:
        raise ValueError(f"unknown input metric {metric!r} (known: {', '.join(INPUT_METRICS)})")
    column = getattr(Inspection, metric)
    query = select(Inspection.id, Inspection.received_at, column, Inspection.gate_codes).where(
        Inspection.line_id == line_id, col(column).is_not(None)
    )
    if since is not None:
        query = query.where(col(Inspection.received_at) >= as_utc(since))
    rows = session.exec(query.order_by(col(Inspection.id).desc()).limit(limit)).all()
    return [
        MetricPoint(inspection_id=ident, at=_at(at), value=float(value), gated=codes is not None)
        for ident, at, value, codes in reversed(rows)
    ]


# -- drift and the gate


def _responsible(session: Session, ids: Sequence[int], limit: int) -> list[ResponsiblePart]:
    wanted = [int(i) for i in ids[:limit]]
    if not wanted:
        return []
    rows = session.exec(
        select(
            Inspection.id,
            Inspection.received_at,
            Inspection.image_sha256,
            Inspection.image_format,
            Inspection.gate_codes,
        ).where(col(Inspection.id).in_(wanted))
    ).all()
    found = {
        ident: ResponsiblePart(ident, _at(at), sha, fmt, _codes(codes))
        for ident, at, sha, fmt, codes in rows
    }
    return [found[i] for i in wanted if i in found]


def latest_drift(
    session: Session, line_id: str, *, responsible_limit: int = RESPONSIBLE_LIMIT
) -> list[DriftSummary]:
    """The newest report of each drift kind that has run on the line, in `DRIFT_KINDS`
    order, with the parts most responsible for an embedding drift."""
    out = []
    for kind in DRIFT_KINDS:
        report = session.exec(
            select(DriftReport)
            .where(DriftReport.line_id == line_id, DriftReport.kind == kind)
            .order_by(col(DriftReport.at).desc(), col(DriftReport.id).desc())
            .limit(1)
        ).first()
        if report is None:
            continue
        out.append(
            DriftSummary(
                id=report.id or 0,
                kind=report.kind,
                at=_at(report.at),
                model_version=report.model_version,
                window=report.window,
                p_value=report.p_value,
                drifted=report.drifted,
                details=dict(report.details or {}),
                responsible=_responsible(session, report.responsible or [], responsible_limit),
            )
        )
    return out


def gate_refusals(
    session: Session, line_id: str, *, since: datetime | None = None, limit: int = REFUSALS_LIMIT
) -> list[GateRefusal]:
    """The line's newest frames the image gate refused, with why."""
    query = select(
        Inspection.id,
        Inspection.received_at,
        Inspection.gate_codes,
        Inspection.gate_reason,
        Inspection.ood_distance,
    ).where(Inspection.line_id == line_id, col(Inspection.gate_codes).is_not(None))
    if since is not None:
        query = query.where(col(Inspection.received_at) >= as_utc(since))
    rows = session.exec(query.order_by(col(Inspection.id).desc()).limit(limit)).all()
    return [
        GateRefusal(ident, _at(at), _codes(codes), reason, ood)
        for ident, at, codes, reason, ood in rows
    ]


def gate_counts(
    session: Session,
    line_id: str,
    *,
    since: datetime | None = None,
    parts: int = GATE_WINDOW_PARTS,
) -> GateCounts:
    """How many of the line's last `parts` frames the gate refused, and for which reasons."""
    query = select(Inspection.gate_codes).where(Inspection.line_id == line_id)
    if since is not None:
        query = query.where(col(Inspection.received_at) >= as_utc(since))
    codes = session.exec(query.order_by(col(Inspection.id).desc()).limit(parts)).all()
    by_code = Counter(c for text in codes for c in _codes(text))
    return GateCounts(
        parts=len(codes),
        refused=sum(1 for text in codes if text is not None),
        by_code=dict(by_code.most_common()),
    )


# -- everything on one page


def monitoring_overview(
    session: Session,
    line_id: str,
    *,
    since: datetime | None = None,
    limit: int = SERIES_LIMIT,
    events_limit: int = EVENTS_LIMIT,
) -> MonitoringOverview:
    """The Monitoring page of one line: the monitored values over time, the alarms and their
    history, what they did, the latest drift tests and the gate's refusals.

    `since` bounds every series and list in time; `limit` is the number of evaluations per
    series. Raises LineNotFound for an unknown line.
    """
    line = _line(session, line_id)
    latest = session.exec(
        select(MonitorSample.at, MonitorSample.model_version)
        .where(MonitorSample.line_id == line_id)
        .order_by(col(MonitorSample.at).desc(), col(MonitorSample.id).desc())
        .limit(1)
    ).first()
    return MonitoringOverview(
        line_id=line.id,
        level=line.level,
        audit_rate=line.audit_rate,
        evidence_since=as_utc(line.evidence_since),
        evaluated_at=_at(latest[0]) if latest else None,
        model_version=latest[1] if latest else None,
        series={
            m: monitored_series(session, line_id, m, since=since, limit=limit)
            for m in MONITORED_METRICS
        },
        alarms=line_alarms(session, line_id),
        history=monitoring_events(session, line_id, HISTORY_KINDS, since=since, limit=events_limit),
        actions=monitoring_events(session, line_id, ACTION_KINDS, since=since, limit=events_limit),
        drift=latest_drift(session, line_id),
        gate_refusals=gate_refusals(session, line_id, since=since, limit=events_limit),
        gate_counts=gate_counts(session, line_id, since=since),
    )

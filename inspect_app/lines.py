"""Lines and their automation settings.

The one rule for changing automation lives here, so the API and the review UI cannot
disagree: lowering is always allowed and immediate; any change that lets the model decide
more parts (raising to partial/full, or loosening a threshold there) must pass the
evidence gate in `inspect_app.automation`. Raising among human_only, shadow and assist is
not gated, because the model decides nothing at those levels. Every change and every
refusal is recorded as an event with who, why, the old and new settings and the evidence.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from inspect_app import automation
from inspect_app.automation import GateVerdict
from inspect_app.domain import AutomationLevel, LinePolicy, Role
from inspect_app.events import record_event
from inspect_app.storage.tables import Inspection, Label, Line, User
from inspect_app.timeutil import utcnow

logger = logging.getLogger(__name__)

_LINE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Settings a line may be created with besides its level; the names are Line's columns.
_SETTABLE = (
    "pass_threshold",
    "fail_threshold",
    "audit_rate",
    "max_escape_rate",
    "max_false_reject_rate",
    "min_labels",
    "auto_demote",
)


class LineError(Exception):
    """Base of the errors a line operation raises; the message says what was wrong."""


class LineNotFound(LineError, LookupError):
    pass


class LineExists(LineError):
    pass


class InvalidLineSettings(LineError, ValueError):
    pass


class NotPermitted(LineError, PermissionError):
    """The acting user's role may not do this (design section 6)."""


class AutomationRefused(LineError):
    """The evidence gate refused a raise; `verdict.evidence` holds the figures that fell short."""

    def __init__(self, verdict: GateVerdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


def _check_threshold(name: str, value: float) -> float:
    # Below 0.5 a threshold would auto-decide parts the model thinks more likely wrong than right.
    if not 0.5 < value <= 1.0:
        raise InvalidLineSettings(f"{name} must be in (0.5, 1], got {value}")
    return float(value)


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise InvalidLineSettings(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(_SETTABLE))
    if unknown:
        raise InvalidLineSettings(
            f"unknown line setting(s) {', '.join(unknown)}; known: {', '.join(_SETTABLE)}"
        )
    checked: dict[str, Any] = {}
    for name, value in settings.items():
        if name in ("pass_threshold", "fail_threshold"):
            checked[name] = _check_threshold(name, value)
        elif name in ("audit_rate", "max_escape_rate", "max_false_reject_rate"):
            checked[name] = _check_rate(name, value)
        elif name == "min_labels":
            if int(value) < 1:
                raise InvalidLineSettings(f"min_labels must be at least 1, got {value}")
            checked[name] = int(value)
        else:
            checked[name] = bool(value)
    return checked


def _as_level(level: AutomationLevel | str) -> AutomationLevel:
    try:
        return AutomationLevel(level)
    except ValueError:
        raise InvalidLineSettings(
            f"unknown automation level {level!r}: one of "
            + ", ".join(lv.value for lv in AutomationLevel)
        ) from None


def add_line(
    session: Session,
    line_id: str,
    level: AutomationLevel | str = AutomationLevel.SHADOW,
    *,
    actor: str = "system",
    **settings: Any,
) -> Line:
    """Create a line. A new line has no evidence, so it cannot start at partial or full."""
    if not _LINE_ID.match(line_id or ""):
        raise InvalidLineSettings(
            f"invalid line id {line_id!r}: 1-64 characters, letters, digits and . _ -, "
            "starting with a letter or digit (it appears in URLs)"
        )
    level = _as_level(level)
    if level.needs_evidence:
        raise InvalidLineSettings(
            f"a new line has no evidence and cannot start at {level.value}; start it at "
            "shadow or assist and raise it once the evidence gate allows"
        )
    checked = _check_settings(settings)
    if session.get(Line, line_id) is not None:
        raise LineExists(f"line {line_id!r} already exists")
    line = Line(id=line_id, level=level.value, **checked)
    session.add(line)
    session.flush()
    record_event(
        session,
        kind="line_added",
        actor=actor,
        line_id=line_id,
        details={"settings": _settings_of(line)},
    )
    session.commit()
    return line


def get_line(session: Session, line_id: str) -> Line:
    line = session.get(Line, line_id)
    if line is None:
        raise LineNotFound(f"no line {line_id!r}")
    return line


def list_lines(session: Session) -> list[Line]:
    return list(session.exec(select(Line).order_by(col(Line.id))))


def inspection_counts_by_line(session: Session, since: datetime) -> dict[str, int]:
    """Parts received on each line since `since`; a line with none is absent."""
    rows = session.exec(
        select(Inspection.line_id, func.count())
        .where(col(Inspection.received_at) >= since)
        .group_by(Inspection.line_id)
    ).all()
    return {line_id: int(count) for line_id, count in rows}


def label_counts_by_line(session: Session, since: datetime) -> dict[str, int]:
    """Labels given since `since` on each line's parts that still stand: a relabel replaces
    a label, it does not add one. A line with none is absent."""
    rows = session.exec(
        select(Inspection.line_id, func.count())
        .join(Label, col(Label.inspection_id) == col(Inspection.id))
        .where(col(Label.created_at) >= since, col(Label.superseded).is_(False))
        .group_by(Inspection.line_id)
    ).all()
    return {line_id: int(count) for line_id, count in rows}


def policy_of(line: Line) -> LinePolicy:
    return LinePolicy(
        level=AutomationLevel(line.level),
        pass_threshold=line.pass_threshold,
        fail_threshold=line.fail_threshold,
        audit_rate=line.audit_rate,
    )


def _settings_of(line: Line) -> dict[str, Any]:
    return {
        "level": line.level,
        "pass_threshold": line.pass_threshold,
        "fail_threshold": line.fail_threshold,
        "audit_rate": line.audit_rate,
    }


def needs_evidence(current: LinePolicy, target: LinePolicy) -> bool:
    """Would `target` let the model decide parts that `current` sends to a human?

    True for a raise to partial/full, and at partial/full for a lower threshold (more
    parts auto-decided). Tightening thresholds, changing the audit rate and lowering the
    level never need evidence.
    """
    if not target.level.needs_evidence:
        return False
    if target.level.rank > current.level.rank:
        return True
    if target.level.rank < current.level.rank:
        return False  # full -> partial
    return (
        target.pass_threshold < current.pass_threshold
        or target.fail_threshold < current.fail_threshold
    )


def change_automation(
    session: Session,
    line_id: str,
    *,
    level: AutomationLevel | str,
    pass_threshold: float | None = None,
    fail_threshold: float | None = None,
    audit_rate: float | None = None,
    reason: str,
    actor: User,
) -> Line:
    """Apply a new level and settings (None keeps the current value), or raise.

    Raises NotPermitted (actor below supervisor), InvalidLineSettings, LineNotFound, or
    AutomationRefused (the gate said no; the refusal is recorded and committed too).
    """
    if not Role(actor.role).may(Role.SUPERVISOR):
        raise NotPermitted(
            f"user {actor.name!r} ({actor.role}) may not change automation: supervisors only"
        )
    reason = (reason or "").strip()
    if not reason:
        raise InvalidLineSettings("a reason is required: it goes into the audit trail")
    target_level = _as_level(level)
    if pass_threshold is not None:
        pass_threshold = _check_threshold("pass_threshold", pass_threshold)
    if fail_threshold is not None:
        fail_threshold = _check_threshold("fail_threshold", fail_threshold)
    if audit_rate is not None:
        audit_rate = _check_rate("audit_rate", audit_rate)
    # Locked (PostgreSQL) until the commit, so two supervisors' changes apply one after the
    # other and each event's "old" settings are the ones it really replaced.
    line = session.get(Line, line_id, with_for_update=True, populate_existing=True)
    if line is None:
        raise LineNotFound(f"no line {line_id!r}")
    current = policy_of(line)
    target = LinePolicy(
        level=target_level,
        pass_threshold=current.pass_threshold if pass_threshold is None else pass_threshold,
        fail_threshold=current.fail_threshold if fail_threshold is None else fail_threshold,
        audit_rate=current.audit_rate if audit_rate is None else audit_rate,
    )
    old = _settings_of(line)
    new = {**asdict(target), "level": target.level.value}
    gated = needs_evidence(current, target)
    verdict: GateVerdict | None = None
    if target.level.needs_evidence:
        # Also asked when not gated (tightening at partial/full): the record then holds
        # the evidence the supervisor was looking at.
        verdict = automation.evaluate_raise(session, line, target)
    gate = (
        {"gated": gated, "allowed": verdict.allowed, "reason": verdict.reason}
        if verdict is not None
        else {"gated": False}
    )
    evidence = verdict.evidence if verdict is not None else {}
    details = {"old": old, "new": new, "gate": gate, "evidence": evidence}

    if gated and verdict is not None and not verdict.allowed:
        record_event(
            session,
            kind="level_change_refused",
            actor=actor.name,
            reason=reason,
            line_id=line_id,
            details=details,
        )
        session.commit()
        logger.warning(
            "line %s: %s refused %s -> %s: %s",
            line_id,
            actor.name,
            old["level"],
            target.level.value,
            verdict.reason,
        )
        raise AutomationRefused(verdict)

    line.level = target.level.value
    line.pass_threshold = target.pass_threshold
    line.fail_threshold = target.fail_threshold
    line.audit_rate = target.audit_rate
    line.updated_at = utcnow()
    session.add(line)
    record_event(
        session,
        kind="level_change",
        actor=actor.name,
        reason=reason,
        line_id=line_id,
        details=details,
    )
    session.commit()
    logger.info(
        "line %s: %s changed automation %s -> %s (pass %.4f, fail %.4f, audit %.4f): %s",
        line_id,
        actor.name,
        old["level"],
        target.level.value,
        target.pass_threshold,
        target.fail_threshold,
        target.audit_rate,
        reason,
    )
    return line

"""Lines and their automation settings.

The one rule for changing automation lives here, so the API and the review UI cannot
disagree: lowering is always allowed and immediate; any change that lets the model decide
more parts (raising to partial/full, or loosening a threshold there) must pass the
evidence gate in `inspect_app.automation`. Raising among human_only, shadow and assist is
not gated, because the model decides nothing at those levels. Every change and every
refusal is recorded as an event with who, why, the old and new settings and the evidence.

One-sided partial automation: either threshold may be "never" (`domain.NEVER`; None in
the database), e.g. auto-fail when confident and never auto-pass. Turning a side off is a
tightening (never gated); turning it back on is a loosening (gated, on that side's
evidence). Partial with both sides never would decide nothing, so it is refused: that is
assist.

A line's targets (`set_targets`: the escape and false-reject rates the gate and the live
audits hold it to, the labels each side needs, auto-demotion) are the plant's requirement,
not evidence: changing them never raises a line. At partial or full the live audits of the
current settings are judged against the new targets at once, as after every audit label,
so a stricter target the audits clearly exceed drops the line one level there and then
(when auto-demotion is on); the gate at the current settings under the new targets is
recorded too, so the supervisor sees whether a raise to them would pass today.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from inspect_app import automation
from inspect_app.agreement import current_model_version
from inspect_app.automation import GateVerdict, LiveOutcome
from inspect_app.domain import (
    NEVER,
    AutomationLevel,
    LinePolicy,
    Role,
    threshold_json,
    threshold_text,
)
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
# The targets a supervisor may change later (`set_targets`).
TARGETS = ("max_escape_rate", "max_false_reject_rate", "min_labels", "auto_demote")
# A target below one in a million no plant could ever show (a side would need millions of
# labels, and the bounds' arithmetic loses meaning near 0); one above a quarter is no target
# at all, and the live audit test judges a target against DEMOTION_ALTERNATIVE_FACTOR (3)
# times it, which must still be a rate.
MIN_TARGET_RATE = 1e-6
MAX_TARGET_RATE = 0.25
# More labels per side than a plant labels in years is a typo, not a requirement.
MAX_MIN_LABELS = 1_000_000


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
    if isinstance(value, bool) or not 0.5 < value <= 1.0:
        raise InvalidLineSettings(f"{name} must be in (0.5, 1] or {NEVER!r}, got {value}")
    return float(value)


def parse_threshold(name: str, value: float | str) -> float | None:
    """A threshold as a caller gives it (a number in (0.5, 1], or "never"), as a line stores
    it: the number, or None for never. The CLI's and the UI's text goes through here too."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == NEVER:
            return None
        try:
            value = float(text)
        except ValueError:
            raise InvalidLineSettings(
                f"{name} must be a number in (0.5, 1] or {NEVER!r}, got {value[:64]!r}"
            ) from None
    return _check_threshold(name, value)


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise InvalidLineSettings(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_target_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not MIN_TARGET_RATE <= value <= MAX_TARGET_RATE:
        raise InvalidLineSettings(
            f"{name} must be from {MIN_TARGET_RATE:g} to {MAX_TARGET_RATE:g}, got {value}: no"
            f" plant labels enough parts to show a rate below {MIN_TARGET_RATE:g}, and one above"
            f" {MAX_TARGET_RATE:g} is no target"
        )
    return float(value)


def _check_min_labels(value: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 1 <= value <= MAX_MIN_LABELS:
        raise InvalidLineSettings(
            f"min_labels must be a whole number from 1 to {MAX_MIN_LABELS:,}, got {value}"
        )
    return int(value)


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(settings) - set(_SETTABLE))
    if unknown:
        raise InvalidLineSettings(
            f"unknown line setting(s) {', '.join(unknown)}; known: {', '.join(_SETTABLE)}"
        )
    checked: dict[str, Any] = {}
    for name, value in settings.items():
        if name in ("pass_threshold", "fail_threshold"):
            checked[name] = parse_threshold(name, value)
        elif name == "audit_rate":
            checked[name] = _check_rate(name, value)
        elif name in ("max_escape_rate", "max_false_reject_rate"):
            checked[name] = _check_target_rate(name, value)
        elif name == "min_labels":
            checked[name] = _check_min_labels(value)
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
    """The automation settings as events record them (thresholds as the API writes them)."""
    return _policy_record(policy_of(line))


def _policy_record(policy: LinePolicy) -> dict[str, Any]:
    return {
        "level": policy.level.value,
        "pass_threshold": threshold_json(policy.pass_threshold),
        "fail_threshold": threshold_json(policy.fail_threshold),
        "audit_rate": policy.audit_rate,
    }


def _targets_of(line: Line) -> dict[str, Any]:
    return {name: getattr(line, name) for name in TARGETS}


def _decides_more(new: float | None, old: float | None) -> bool:
    """Does threshold `new` auto-decide parts that `old` sends to a human? None is never."""
    if new is None:
        return False
    return old is None or new < old


def needs_evidence(current: LinePolicy, target: LinePolicy) -> bool:
    """Would `target` let the model decide parts that `current` sends to a human?

    True for a raise to partial/full, and at partial/full for a lower threshold or a side
    turned on from never (more parts auto-decided). Tightening thresholds, turning a side
    to never, changing the audit rate and lowering the level never need evidence.
    """
    if not target.level.needs_evidence:
        return False
    if target.level.rank > current.level.rank:
        return True
    if target.level.rank < current.level.rank:
        return False  # full -> partial
    return _decides_more(target.pass_threshold, current.pass_threshold) or _decides_more(
        target.fail_threshold, current.fail_threshold
    )


def change_automation(
    session: Session,
    line_id: str,
    *,
    level: AutomationLevel | str,
    pass_threshold: float | str | None = None,
    fail_threshold: float | str | None = None,
    audit_rate: float | None = None,
    reason: str,
    actor: User,
) -> Line:
    """Apply a new level and settings (None keeps the current value; a threshold of
    `NEVER` turns that side of partial automation off), or raise.

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
    keep_pass, keep_fail = pass_threshold is None, fail_threshold is None
    new_pass = None if keep_pass else parse_threshold("pass_threshold", pass_threshold)
    new_fail = None if keep_fail else parse_threshold("fail_threshold", fail_threshold)
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
        pass_threshold=current.pass_threshold if keep_pass else new_pass,
        fail_threshold=current.fail_threshold if keep_fail else new_fail,
        audit_rate=current.audit_rate if audit_rate is None else audit_rate,
    )
    if (
        target.level is AutomationLevel.PARTIAL
        and target.pass_threshold is None
        and target.fail_threshold is None
    ):
        raise InvalidLineSettings(
            "partial with both thresholds never would let the model decide nothing: choose "
            "assist, or give a threshold for at least one side"
        )
    old = _settings_of(line)
    new = _policy_record(target)
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
        "line %s: %s changed automation %s -> %s (pass %s, fail %s, audit %.4f): %s",
        line_id,
        actor.name,
        old["level"],
        target.level.value,
        threshold_text(target.pass_threshold, ".4f"),
        threshold_text(target.fail_threshold, ".4f"),
        target.audit_rate,
        reason,
    )
    return line


@dataclass(frozen=True)
class TargetsChange:
    """A target change and what it did to the line (see the module docstring)."""

    line: Line
    old: dict[str, Any]
    new: dict[str, Any]
    # At partial/full: the raise gate at the line's current settings under the new targets
    # (it decides nothing here: the line is already there), and the live audit test.
    gate: GateVerdict | None
    live: LiveOutcome | None
    message: str  # what happened, in a sentence or two a supervisor reads


def set_targets(
    session: Session,
    line_id: str,
    *,
    max_escape_rate: float | None = None,
    max_false_reject_rate: float | None = None,
    min_labels: int | None = None,
    auto_demote: bool | None = None,
    reason: str,
    actor: User,
) -> TargetsChange:
    """Change a line's targets (None keeps one); supervisors only, a reason required.

    Raises NotPermitted, InvalidLineSettings (a value out of range, or nothing given) or
    LineNotFound. Never raises the level; may lower it one level (module docstring).
    """
    if not Role(actor.role).may(Role.SUPERVISOR):
        raise NotPermitted(
            f"user {actor.name!r} ({actor.role}) may not change a line's targets: supervisors only"
        )
    reason = (reason or "").strip()
    if not reason:
        raise InvalidLineSettings("a reason is required: it goes into the audit trail")
    given: dict[str, Any] = {
        name: value
        for name, value in (
            ("max_escape_rate", max_escape_rate),
            ("max_false_reject_rate", max_false_reject_rate),
            ("min_labels", min_labels),
            ("auto_demote", auto_demote),
        )
        if value is not None
    }
    if not given:
        raise InvalidLineSettings(f"nothing to change: give at least one of {', '.join(TARGETS)}")
    checked = _check_settings(given)
    line = session.get(Line, line_id, with_for_update=True, populate_existing=True)
    if line is None:
        raise LineNotFound(f"no line {line_id!r}")
    old = _targets_of(line)
    for name, value in checked.items():
        setattr(line, name, value)
    # updated_at stays: it starts the live audits' era (`agreement.live_audit_counts`), and
    # the audits of the unchanged settings are exactly what the new targets must judge.
    session.add(line)
    session.flush()
    new = _targets_of(line)
    level = AutomationLevel(line.level)
    gate = (
        automation.evaluate_raise(session, line, policy_of(line)) if level.needs_evidence else None
    )
    event = record_event(
        session,
        kind="targets_change",
        actor=actor.name,
        reason=reason,
        line_id=line_id,
        details={
            "old": old,
            "new": new,
            "settings": _settings_of(line),
            "gate_at_current_settings": (
                {"allowed": gate.allowed, "reason": gate.reason, "evidence": gate.evidence}
                if gate is not None
                else None
            ),
        },
    )
    live: LiveOutcome | None = None
    if level.needs_evidence:
        live = automation.demote_on_live_audits(
            session,
            line,
            current_model_version(session, line_id),
            trigger={"triggered_by_event": event.id, "cause": "targets_change"},
        )
        event.details = {
            **(event.details or {}),
            "live": {
                "alarmed": live.alarmed,
                "demoted_to": live.demoted_to.value if live.demoted_to else None,
                "checks": [automation.plain(c) for c in live.live.checks],
            },
        }
        session.add(event)
    session.commit()
    session.refresh(line)
    message = _targets_message(level, gate, live)
    logger.info("line %s: %s changed targets %s -> %s: %s", line_id, actor.name, old, new, reason)
    return TargetsChange(line=line, old=old, new=new, gate=gate, live=live, message=message)


def _targets_message(
    level: AutomationLevel, gate: GateVerdict | None, live: LiveOutcome | None
) -> str:
    if gate is None or live is None:
        return (
            f"Targets changed. At {level} the model decides nothing, so they apply to the next "
            "raise; the level stays."
        )
    if live.demoted_to is not None:
        return f"Targets changed. {live.reason} Lowered from {level} to {live.demoted_to} at once."
    if live.alarmed:
        return (
            f"Targets changed. {live.reason} Auto-demotion is off: the level stays {level};"
            " lower it by hand if the plant needs the new target met."
        )
    gate_words = (
        "the evidence gate would allow the current settings under them too"
        if gate.allowed
        else "the evidence gate would no longer allow a raise to the current settings "
        f"({gate.reason}), but only the live audits lower a line"
    )
    return (
        f"Targets changed; the level stays {level}: the live audits are not clearly above the "
        f"new targets (checked again after every audit label), and {gate_words}."
    )

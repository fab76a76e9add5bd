"""The supervisor's use cases for known-answer parts: mark, list and remove reference parts,
set a line's serving rate, read per-inspector accuracy, and keep the inspectors' flags.

Every change is an event (`inspect_app.events`) in the transaction of the change; the flag
of an inspector changes (and is an event) only when their accuracy crosses the level, once
per crossing, however many answers follow.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from sqlmodel import Session, col, select

from inspect_app.domain import DefectClass, Role
from inspect_app.events import record_event
from inspect_app.reference.accuracy import (
    MIN_ACCURACY,
    MIN_ANSWERS,
    Answer,
    InspectorAccuracy,
    inspector_accuracy,
    pooled_error_rates,
)
from inspect_app.storage.tables import (
    Inspection,
    InspectorFlag,
    Line,
    ReferenceAnswer,
    ReferencePart,
    User,
)
from inspect_app.timeutil import utcnow

logger = logging.getLogger(__name__)

MAX_REFERENCE_RATE = 0.5  # a queue of more references than parts measures nothing of the line


class ReferenceError(Exception):
    """Base of the errors here; the message says what was wrong, for the API's detail."""


class ReferenceNotFound(ReferenceError, LookupError):
    pass


class ReferenceExists(ReferenceError):
    pass


class InvalidReference(ReferenceError, ValueError):
    pass


class NotPermitted(ReferenceError, PermissionError):
    pass


def _supervisor(actor: User, what: str) -> None:
    if not Role(actor.role).may(Role.SUPERVISOR):
        raise NotPermitted(f"user {actor.name!r} ({actor.role}) may not {what}: supervisors only")


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidReference("a reason is required: it goes into the audit trail")
    return reason


def add_reference(
    session: Session, inspection_id: int, label: str, *, reason: str, actor: User
) -> ReferencePart:
    """Mark an inspection as a reference part whose verified class is `label`."""
    _supervisor(actor, "mark reference parts")
    reason = _reason(reason)
    try:
        verified = DefectClass(label).value
    except ValueError:
        raise InvalidReference(
            f"unknown class {label!r}: one of {', '.join(c.value for c in DefectClass)}"
        ) from None
    inspection = session.get(Inspection, inspection_id)
    if inspection is None:
        raise ReferenceNotFound(f"no inspection {inspection_id}")
    if inspection.image_removed_at is not None:
        raise InvalidReference(
            f"the image of inspection {inspection_id} was removed: it cannot be shown again"
        )
    part = session.exec(
        select(ReferencePart).where(ReferencePart.inspection_id == inspection_id)
    ).first()
    if part is not None and part.removed_at is None:
        raise ReferenceExists(
            f"inspection {inspection_id} is already reference part {part.id} ({part.label})"
        )
    now = utcnow()
    if part is None:
        part = ReferencePart(
            inspection_id=inspection_id,
            line_id=inspection.line_id,
            label=verified,
            reason=reason,
            created_by=actor.name,
            created_at=now,
        )
    else:  # marked again after a removal: the same row, so its earlier answers stay with it
        part.label, part.reason, part.created_by, part.created_at = (
            verified,
            reason,
            actor.name,
            now,
        )
        part.removed_at = part.removed_by = None
    session.add(part)
    session.flush()
    record_event(
        session,
        kind="reference_part_added",
        actor=actor.name,
        reason=reason,
        line_id=inspection.line_id,
        details={"reference_id": part.id, "inspection_id": inspection_id, "label": verified},
    )
    session.commit()
    session.refresh(part)
    return part


def list_references(
    session: Session, *, line_id: str | None = None, include_removed: bool = False
) -> list[ReferencePart]:
    query = select(ReferencePart)
    if line_id is not None:
        query = query.where(ReferencePart.line_id == line_id)
    if not include_removed:
        query = query.where(col(ReferencePart.removed_at).is_(None))
    return list(session.exec(query.order_by(col(ReferencePart.id))))


def remove_reference(session: Session, reference_id: int, *, reason: str, actor: User) -> None:
    """Stop serving a reference part; the answers already given still count."""
    _supervisor(actor, "remove reference parts")
    reason = _reason(reason)
    part = session.get(ReferencePart, reference_id)
    if part is None or part.removed_at is not None:
        raise ReferenceNotFound(f"no reference part {reference_id}")
    part.removed_at = utcnow()
    part.removed_by = actor.name
    session.add(part)
    record_event(
        session,
        kind="reference_part_removed",
        actor=actor.name,
        reason=reason,
        line_id=part.line_id,
        details={"reference_id": reference_id, "inspection_id": part.inspection_id},
    )
    session.commit()


def set_reference_settings(
    session: Session,
    line_id: str,
    *,
    reference_rate: float | None = None,
    gate_excludes_flagged: bool | None = None,
    reason: str,
    actor: User,
) -> Line:
    """A line's known-answer settings (None keeps one): the chance a claim serves a reference
    part in place of the next task, and whether the gate leaves flagged inspectors out."""
    _supervisor(actor, "change a line's reference settings")
    reason = _reason(reason)
    if reference_rate is None and gate_excludes_flagged is None:
        raise InvalidReference("nothing to change: give reference_rate or gate_excludes_flagged")
    if reference_rate is not None and not 0.0 <= reference_rate <= MAX_REFERENCE_RATE:
        raise InvalidReference(
            f"reference_rate must lie in [0, {MAX_REFERENCE_RATE}], got {reference_rate}"
        )
    line = session.get(Line, line_id, with_for_update=True)
    if line is None:
        raise ReferenceNotFound(f"no line {line_id!r}")
    old = {
        "reference_rate": line.reference_rate,
        "gate_excludes_flagged": line.gate_excludes_flagged,
    }
    if reference_rate is not None:
        line.reference_rate = reference_rate
    if gate_excludes_flagged is not None:
        line.gate_excludes_flagged = gate_excludes_flagged
    session.add(line)
    record_event(
        session,
        kind="reference_settings_change",
        actor=actor.name,
        reason=reason,
        line_id=line_id,
        details={
            "old": old,
            "new": {
                "reference_rate": line.reference_rate,
                "gate_excludes_flagged": line.gate_excludes_flagged,
            },
        },
    )
    session.commit()
    session.refresh(line)
    return line


def _answers(
    session: Session, *, user_id: int | None = None, since: datetime | None = None
) -> dict[str, list[Answer]]:
    query = (
        select(User.name, ReferenceAnswer.expected, ReferenceAnswer.label)
        .join(User, col(User.id) == col(ReferenceAnswer.user_id))
        .where(col(ReferenceAnswer.label).is_not(None))
    )
    if user_id is not None:
        query = query.where(ReferenceAnswer.user_id == user_id)
    if since is not None:
        query = query.where(col(ReferenceAnswer.answered_at) >= since)
    grouped: dict[str, list[Answer]] = defaultdict(list)
    for name, expected, given in session.exec(query.order_by(col(ReferenceAnswer.id))):
        grouped[name].append(Answer(expected=expected, given=given))
    return grouped


def inspector_accuracies(
    session: Session,
    *,
    since: datetime | None = None,
    min_accuracy: float = MIN_ACCURACY,
    min_answers: int = MIN_ANSWERS,
) -> list[InspectorAccuracy]:
    """Every inspector with an answer on a reference part, by name."""
    return [
        inspector_accuracy(name, answers, min_accuracy=min_accuracy, min_answers=min_answers)
        for name, answers in sorted(_answers(session, since=since).items())
    ]


def pooled_inspector_errors(session: Session, *, since: datetime | None = None):  # type: ignore[no-untyped-def]
    """(missed defects, false rejects) of all inspectors on reference parts."""
    return pooled_error_rates(
        a for answers in _answers(session, since=since).values() for a in answers
    )


def update_flag(session: Session, user: User) -> bool:
    """Re-check `user` against the level after an answer; an event when the flag changes.
    Returns whether they are flagged now. The caller commits."""
    assert user.id is not None
    figures = inspector_accuracy(user.name, _answers(session, user_id=user.id).get(user.name, []))
    row = session.get(InspectorFlag, user.id)
    was = row is not None and row.flagged
    if figures.flagged == was:
        return was
    if row is None:
        row = InspectorFlag(user_id=user.id)
    row.flagged = figures.flagged
    row.changed_at = utcnow()
    row.details = figures.as_dict()
    session.add(row)
    record_event(
        session,
        kind="inspector_flagged" if figures.flagged else "inspector_unflagged",
        actor="system",
        reason=(
            f"accuracy on reference parts {figures.binary.count}/{figures.binary.n}, 95% upper "
            f"bound {figures.binary.upper:.3f} {'below' if figures.flagged else 'back to'} "
            f"{MIN_ACCURACY:g} (at least {MIN_ANSWERS} answers)"
        ),
        details={"inspector": user.name, "figures": figures.as_dict()},
    )
    logger.warning("inspector %s %s", user.name, "flagged" if figures.flagged else "unflagged")
    return figures.flagged


def gate_excluded_labelers(session: Session, line: Line) -> list[str]:
    """Whose labels the line's gate leaves out: the flagged inspectors, if the line says so."""
    return sorted(flagged_users(session).values()) if line.gate_excludes_flagged else []


def flagged_users(session: Session) -> dict[int, str]:
    """Inspectors flagged now: id -> name (the export and the gate may leave them out)."""
    rows = session.exec(
        select(User.id, User.name)
        .join(InspectorFlag, col(InspectorFlag.user_id) == col(User.id))
        .where(col(InspectorFlag.flagged).is_(True))
    )
    return {uid: name for uid, name in rows}

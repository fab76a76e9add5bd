"""The review queue: claim, label, relabel, escalate. The API and the review UI both call
these functions, so every rule about who may do what to a task exists once.

Concurrency. Several inspectors and several service processes claim from one database;
no task may go to two of them. Each claim is a conditional write that only succeeds if
the task is still claimable at that instant: on PostgreSQL the candidate row is locked
with ``SELECT ... FOR UPDATE SKIP LOCKED`` (concurrent claimers skip each other's rows
instead of queueing), on SQLite an ``UPDATE ... WHERE <still claimable>`` whose rowcount
says who won, retried on the next candidate by the loser. Every write to a task (label,
renew, release, escalate) is likewise conditional on the caller still holding its lease.

Leases. A claim holds the task until ``lease_expires_at``; an inspector who walks away
does not block it: once the lease has passed, the task is claimable again. Only the
holder of an unexpired lease may label it.

Order. Tasks the line is waiting on (priority 0, ``decide``) before blind audits
(priority 1), oldest first. Escalated tasks go to supervisors only.

Transactions. Each function that changes something commits before returning, so what
the caller reports (a claim, a saved label) is durable.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, update
from sqlmodel import Session, col, select

from inspect_app import automation
from inspect_app.domain import (
    DecidedBy,
    Decision,
    DefectClass,
    Role,
    Route,
    TaskStatus,
    decision_for_class,
)
from inspect_app.events import record_event
from inspect_app.outputs.outbox import enqueue_decision
from inspect_app.reference import serving as reference_serving
from inspect_app.rollout import deployments
from inspect_app.storage.tables import Inspection, Label, ReferenceAnswer, ReviewTask, User
from inspect_app.timeutil import as_utc, utcnow

logger = logging.getLogger(__name__)

# On SQLite a loser of a claim race retries on the next candidates; this many per round.
_CANDIDATES_PER_ROUND = 16

# A task in one of these is still waiting for a verdict; `tables.ReviewTask`'s partial
# index ``ix_task_waiting`` is on exactly these.
WAITING_STATUSES: tuple[str, ...] = (
    TaskStatus.OPEN.value,
    TaskStatus.CLAIMED.value,
    TaskStatus.ESCALATED.value,
)

# SQLite has one writer at a time. Writers that find it taken wait in SQLite's busy handler,
# which sleeps in growing steps (up to 100 ms) between tries, so under 8 inspectors labeling
# back to back a verdict could wait far longer than the writes before it took. The queue's
# write transactions in one process therefore queue on this lock instead (handed over the
# moment the writer before commits); other processes and other writers still meet SQLite's
# own lock, which alone keeps the data correct.
_sqlite_writers: dict[str, threading.RLock] = {}
_sqlite_writers_guard = threading.Lock()


class ReviewError(Exception):
    """Base of the queue's errors; the message says what was wrong, for the API's detail."""


class TaskNotFound(ReviewError, LookupError):
    pass


class InspectionNotFound(TaskNotFound):
    pass


class TaskNotClaimed(ReviewError):
    """The caller does not hold an unexpired lease on the task (or it is already done)."""


class InvalidLabel(ReviewError, ValueError):
    pass


class NothingToRelabel(ReviewError):
    """Relabel needs an earlier label to replace; a task not yet labeled is claimed instead."""


class RelabelNotAllowed(ReviewError, PermissionError):
    pass


@dataclass(frozen=True)
class ClaimedTask:
    """What an inspector may see of a claimed task: never the true class, and the model's
    output only when the line's level showed it (``show_model``)."""

    task_id: int
    inspection_id: int
    line_id: str
    reason: str  # domain.TaskReason
    image_sha256: str
    image_format: str
    part_serial: str | None
    captured_at: datetime | None
    received_at: datetime
    lease_expires_at: datetime
    predicted_class: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    escalated: bool = False  # an inspector skipped it to a supervisor
    note: str | None = None  # the inspector's note when it was escalated
    # why the image gate kept the model from deciding this frame (None: it did not); shown
    # even where the model's output is hidden: it says what is wrong with the picture
    gate_reason: str | None = None
    # the number the inspector knows the part by (the claim's inspection_id, image URL,
    # "part #", undo): a live part's inspection id; for a reference part a fresh number,
    # never its source's `inspection_id` (inspect_app.reference.serving)
    part_id: int | None = None

    @property
    def shown_id(self) -> int:
        return self.part_id if self.part_id is not None else self.inspection_id


def _check_lease(lease_seconds: float) -> timedelta:
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    return timedelta(seconds=lease_seconds)


def as_label(label: DefectClass | str) -> DefectClass:
    """The class a verdict names; one check for the API and the review UI alike."""
    try:
        return DefectClass(label)
    except ValueError:
        raise InvalidLabel(
            f"unknown class {label!r}: one of {', '.join(c.value for c in DefectClass)}"
        ) from None


def _held_by(user: User, now: datetime):  # type: ignore[no-untyped-def]
    """SQL condition: `user` holds an unexpired lease on the task."""
    return and_(
        col(ReviewTask.claimed_by) == user.id,
        col(ReviewTask.status).in_([TaskStatus.CLAIMED.value, TaskStatus.ESCALATED.value]),
        col(ReviewTask.lease_expires_at) > now,
    )


def _claimable_by(user: User, now: datetime):  # type: ignore[no-untyped-def]
    """SQL condition: the task may be given to `user` now (an expired lease counts as open)."""
    lease_gone = or_(
        col(ReviewTask.lease_expires_at).is_(None), col(ReviewTask.lease_expires_at) <= now
    )
    condition = or_(
        col(ReviewTask.status) == TaskStatus.OPEN.value,
        and_(col(ReviewTask.status) == TaskStatus.CLAIMED.value, lease_gone),
    )
    if Role(user.role).may(Role.SUPERVISOR):
        condition = or_(
            condition, and_(col(ReviewTask.status) == TaskStatus.ESCALATED.value, lease_gone)
        )
    return condition


def _claimed_task(session: Session, task_id: int) -> ClaimedTask:
    row = session.exec(
        select(ReviewTask, Inspection)
        .join(Inspection, col(Inspection.id) == col(ReviewTask.inspection_id))
        .where(ReviewTask.id == task_id)
        .execution_options(populate_existing=True)
    ).one()
    task, inspection = row
    shown = task.show_model and inspection.probabilities is not None
    lease = as_utc(task.lease_expires_at)
    received = as_utc(inspection.received_at)
    assert lease is not None and received is not None and task.id is not None
    assert inspection.id is not None
    return ClaimedTask(
        task_id=task.id,
        inspection_id=inspection.id,
        line_id=task.line_id,
        reason=task.reason,
        image_sha256=inspection.image_sha256,
        image_format=inspection.image_format,
        part_serial=inspection.part_serial,
        captured_at=as_utc(inspection.captured_at),
        received_at=received,
        lease_expires_at=lease,
        predicted_class=inspection.predicted_class if shown else None,
        confidence=inspection.confidence if shown else None,
        probabilities=dict(inspection.probabilities or {}) if shown else None,
        escalated=task.status == TaskStatus.ESCALATED.value,
        note=task.note,
        gate_reason=inspection.gate_reason,
        part_id=inspection.id,
    )


def _reference_task(session: Session, served: ReferenceAnswer) -> ClaimedTask:
    """A reference part as the inspector sees it: built like a live blind task (see
    `inspect_app.reference.serving`), the model never shown."""
    inspection = session.get(Inspection, served.inspection_id)
    served_at, lease = as_utc(served.served_at), as_utc(served.lease_expires_at)
    assert inspection is not None and served_at is not None and lease is not None
    return ClaimedTask(
        task_id=served.served_task_id,
        inspection_id=served.inspection_id,
        line_id=served.line_id,
        reason=served.served_reason,
        image_sha256=inspection.image_sha256,
        image_format=inspection.image_format,
        part_serial=inspection.part_serial,
        captured_at=served_at if inspection.captured_at is not None else None,
        received_at=served_at,
        lease_expires_at=lease,
        part_id=served.served_part_id,
    )


def _renew_held_claim(
    session: Session, user: User, now: datetime, expires: datetime, line_id: str | None
) -> int | None:
    """Renew and return the task `user` already holds, so a reload does not grab a second."""
    query = select(ReviewTask.id).where(_held_by(user, now))
    if line_id is not None:
        query = query.where(ReviewTask.line_id == line_id)
    held = session.exec(query.order_by(col(ReviewTask.claimed_at))).first()
    if held is None:
        return None
    renewed = session.exec(
        update(ReviewTask)
        .where(col(ReviewTask.id) == held, _held_by(user, now))
        .values(lease_expires_at=expires)
    )
    return held if renewed.rowcount == 1 else None


def _candidates(session: Session, user: User, now: datetime, line_id: str | None):  # type: ignore[no-untyped-def]
    # The first term is implied by the second; it is written out, in the words of the
    # partial index ``ix_task_waiting``'s WHERE, because SQLite uses a partial index only
    # for a query that states its condition: then the claim reads the waiting tasks in
    # serving order and stops at the limit (1M done tasks: 0.1 ms, not a scan of them all).
    query = select(ReviewTask.id).where(
        col(ReviewTask.status).in_(WAITING_STATUSES), _claimable_by(user, now)
    )
    if line_id is not None:
        query = query.where(ReviewTask.line_id == line_id)
    return query.order_by(col(ReviewTask.priority), col(ReviewTask.created_at), col(ReviewTask.id))


def _take(session: Session, task_id: int, user: User, now: datetime, expires: datetime) -> bool:
    """The conditional write both dialects end with: succeeds only if still claimable."""
    status = ReviewTask.status
    result = session.exec(
        update(ReviewTask)
        .where(col(ReviewTask.id) == task_id, _claimable_by(user, now))
        .values(
            # An escalated task stays escalated while a supervisor holds it, so that an
            # expired lease returns it to supervisors and not to the general queue.
            status=func.coalesce(
                func.nullif(status, TaskStatus.OPEN.value), TaskStatus.CLAIMED.value
            ),
            claimed_by=user.id,
            claimed_at=now,
            lease_expires_at=expires,
        )
    )
    return result.rowcount == 1


@contextmanager
def _queue_writes(session: Session) -> Iterator[None]:
    """Hold this process's turn at the SQLite writer lock for one of the queue's write
    transactions (see `_sqlite_writers`); nothing on PostgreSQL, whose row locks do it."""
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    key = str(bind.url)
    with _sqlite_writers_guard:
        lock = _sqlite_writers.setdefault(key, threading.RLock())
    with lock:
        yield


def claim_next_task(
    session: Session,
    user: User,
    *,
    lease_seconds: float,
    line_id: str | None = None,
    reference_rng: random.Random | None = None,
) -> ClaimedTask | None:
    """Give `user` the next task (or the one they already hold), or None if the queue is empty.

    At the line's reference rate the next task is a known-answer part in its place
    (`inspect_app.reference.serving`; `reference_rng` makes that lottery repeatable)."""
    lease = _check_lease(lease_seconds)
    if user.id is None:
        raise ValueError("the user has not been saved yet")
    with _queue_writes(session):
        now = utcnow()
        claimed = _claim(session, user, now, now + lease, line_id, reference_rng)
        if claimed is None:
            session.rollback()
            return None
        session.commit()
    _log_claim(claimed, user)
    return claimed


def _claim(
    session: Session,
    user: User,
    now: datetime,
    expires: datetime,
    line_id: str | None,
    reference_rng: random.Random | None,
) -> ClaimedTask | None:
    """`claim_next_task`'s writes, uncommitted (a verdict commits them with its label)."""
    task_id = _renew_held_claim(session, user, now, expires, line_id)
    if task_id is None:
        served = reference_serving.renew_held(session, user, now, expires, line_id)
        if served is not None:
            return _reference_task(session, served)
        # One candidate read serves both the reference lottery (which stands in for the
        # live task next in line) and the claim. PostgreSQL locks the row it returns, so
        # concurrent claimers skip each other's candidates instead of queueing on them.
        query = _candidates(session, user, now, line_id)
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:
            query = query.limit(1).with_for_update(skip_locked=True, of=ReviewTask)
        else:
            query = query.limit(_CANDIDATES_PER_ROUND)
        candidates = list(session.exec(query))
        if not candidates:
            return None
        served = reference_serving.maybe_serve(
            session, user, now, expires, candidates[0], reference_rng
        )
        if served is not None:
            return _reference_task(session, served)
        if postgres:
            task_id = candidates[0] if _take(session, candidates[0], user, now, expires) else None
        else:
            task_id = _claim_sqlite(session, user, now, expires, line_id, candidates)
    if task_id is None:
        return None
    return _claimed_task(session, task_id)


def _log_claim(claimed: ClaimedTask, user: User) -> None:
    logger.info(
        "task %d (inspection %d, line %s, %s) claimed by %s until %s",
        claimed.task_id,
        claimed.inspection_id,
        claimed.line_id,
        claimed.reason,
        user.name,
        claimed.lease_expires_at.isoformat(),
    )


def _claim_sqlite(
    session: Session,
    user: User,
    now: datetime,
    expires: datetime,
    line_id: str | None,
    candidates: list[int],
) -> int | None:
    # SQLite serialises writers; a loser's UPDATE matches no row (rowcount 0), so it moves
    # on to the next candidate. Candidates are re-read each round because others move on too.
    tried: set[int] = set()
    ids = candidates
    while True:
        if not ids:
            return None
        for candidate in ids:
            if _take(session, candidate, user, now, expires):
                return candidate
            tried.add(candidate)
        query = _candidates(session, user, now, line_id).where(col(ReviewTask.id).not_in(tried))
        ids = list(session.exec(query.limit(_CANDIDATES_PER_ROUND)))


def _explain_not_held(session: Session, task_id: int, user: User, now: datetime) -> ReviewError:
    """The precise reason `user` may not act on the task, for a clear 404/409 detail."""
    task = session.get(ReviewTask, task_id, populate_existing=True)
    if task is None:
        return TaskNotFound(f"no review task {task_id}")
    if task.status == TaskStatus.DONE.value:
        return TaskNotClaimed(f"task {task_id} is already labeled")
    if task.claimed_by != user.id:
        return TaskNotClaimed(f"task {task_id} is not claimed by {user.name}; claim a task first")
    lease = as_utc(task.lease_expires_at)
    if lease is None or lease <= now:
        return TaskNotClaimed(
            f"the lease of {user.name} on task {task_id} has expired; claim a task again"
        )
    return TaskNotClaimed(f"task {task_id} is {task.status}")


def _reference_held(
    session: Session, task_id: int, user: User, now: datetime
) -> ReferenceAnswer | None:
    """The reference part `user` holds as `task_id`, or None (a live task: the usual path);
    an expired lease on it is refused in the words a live task's would be."""
    served = reference_serving.held_for_task(session, task_id, user)
    if served is None:
        return None
    lease = as_utc(served.lease_expires_at)
    if lease is None or lease <= now:
        reference_serving.release(session, served)
        session.commit()
        raise TaskNotClaimed(
            f"the lease of {user.name} on task {task_id} has expired; claim a task again"
        )
    return served


def _explain_refused(session: Session, task_id: int, user: User, now: datetime) -> ReviewError:
    """Why a write to `task_id` by `user` matched no task they hold: a reference part they
    were served under that number and answered or let go is named as such (the inspector
    cannot tell it from a live part); otherwise as `_explain_not_held` says. Asked only
    after the write failed, so a verdict on a live task never pays for it."""
    if session.get(ReviewTask, task_id) is None:
        done = reference_serving.latest_for_task(session, task_id, user)
        if done is not None:
            if done.status == reference_serving.AnswerStatus.ANSWERED.value:
                return TaskNotClaimed(f"task {task_id} is already labeled")
            return TaskNotClaimed(
                f"task {task_id} is not claimed by {user.name}; claim a task first"
            )
    return _explain_not_held(session, task_id, user, now)


def renew_lease(session: Session, task_id: int, user: User, *, lease_seconds: float) -> datetime:
    """Extend the caller's unexpired lease (an inspector still looking at the part)."""
    lease = _check_lease(lease_seconds)
    now = utcnow()
    expires = now + lease
    served = _reference_held(session, task_id, user, now)
    if served is not None:
        served.lease_expires_at = expires
        session.add(served)
        session.commit()
        return expires
    result = session.exec(
        update(ReviewTask)
        .where(col(ReviewTask.id) == task_id, _held_by(user, now))
        .values(lease_expires_at=expires)
    )
    if result.rowcount != 1:
        error = _explain_refused(session, task_id, user, now)
        session.rollback()
        raise error
    session.commit()
    return expires


def release_task(session: Session, task_id: int, user: User) -> None:
    """Hand a claimed task back to the queue unlabeled (an escalated one back to supervisors)."""
    now = utcnow()
    served = reference_serving.held_for_task(session, task_id, user)
    if served is not None:
        reference_serving.release(session, served)
        session.commit()
        logger.info("task %d released by %s", task_id, user.name)
        return
    mine = and_(
        col(ReviewTask.id) == task_id,
        col(ReviewTask.claimed_by) == user.id,
        col(ReviewTask.status).in_([TaskStatus.CLAIMED.value, TaskStatus.ESCALATED.value]),
    )
    result = session.exec(
        update(ReviewTask)
        .where(mine)
        .values(
            status=func.coalesce(
                func.nullif(ReviewTask.status, TaskStatus.CLAIMED.value), TaskStatus.OPEN.value
            ),
            claimed_by=None,
            claimed_at=None,
            lease_expires_at=None,
        )
    )
    if result.rowcount != 1:
        error = _explain_not_held(session, task_id, user, now)
        session.rollback()
        raise error
    session.commit()
    logger.info("task %d released by %s", task_id, user.name)


@dataclass(frozen=True)
class _Written:
    """A verdict written and not yet committed, with what its log line and the after-label
    hooks need once it is."""

    label: Label
    line_id: str | None = None  # None: a reference part's answer (no decision, no hooks)
    message: str = ""
    # held so the hooks find it in the session's identity map, not in another read
    inspection: Inspection | None = None


def _write_label(
    session: Session,
    task_id: int,
    user: User,
    verdict: DefectClass,
    now: datetime,
    note: str | None,
    duration_ms: int | None,
) -> _Written:
    """`submit_label`'s writes, uncommitted; refused (rolled back) unless `user` holds it."""
    served = _reference_held(session, task_id, user, now)
    if served is not None:  # a known-answer part: no Label, no decision, no evidence
        reference_serving.record_answer(session, served, user, verdict.value, now, duration_ms)
        return _Written(label=_reference_label(served, user, note))
    # The task's fields come back with the conditional write itself (RETURNING): no read of
    # the row before or after it.
    task = session.exec(
        update(ReviewTask)
        .where(col(ReviewTask.id) == task_id, _held_by(user, now))
        .values(status=TaskStatus.DONE.value, completed_at=now)
        .returning(
            ReviewTask.inspection_id, ReviewTask.line_id, ReviewTask.reason, ReviewTask.show_model
        )
    ).first()
    if task is None:
        error = _explain_refused(session, task_id, user, now)
        session.rollback()
        raise error
    inspection_id, line_id, reason, show_model = task
    assert user.id is not None
    inspection = session.get(Inspection, inspection_id, populate_existing=True)
    assert inspection is not None
    resolved = inspection.decision == Decision.PENDING.value
    if resolved:
        inspection.decision = decision_for_class(verdict).value
        inspection.decided_by = DecidedBy.HUMAN.value
        inspection.decided_at = now
        session.add(inspection)
        enqueue_decision(session, inspection, cause="label")
    saved = Label(
        inspection_id=inspection_id,
        task_id=task_id,
        user_id=user.id,
        label=verdict.value,
        note=note or None,
        model_shown=show_model,
        duration_ms=duration_ms,
        created_at=now,
    )
    session.add(saved)
    return _Written(
        label=saved,
        line_id=line_id,
        message=(
            f"task {task_id} (inspection {inspection_id}, line {line_id}, {reason}) labeled "
            f"{verdict.value} by {user.name}"
            + (f"; decision {inspection.decision}" if resolved else "")
        ),
        inspection=inspection,
    )


def _check_duration(duration_ms: int | None) -> None:
    if duration_ms is not None and duration_ms < 0:
        raise ValueError(f"duration_ms must not be negative, got {duration_ms}")


def _after_commit(session: Session, written: _Written) -> None:
    if written.line_id is None:
        return
    logger.info("%s", written.message)
    _after_label(session, written.line_id, written.label.inspection_id)


def submit_label(
    session: Session,
    task_id: int,
    user: User,
    label: DefectClass | str,
    *,
    note: str | None = None,
    duration_ms: int | None = None,
) -> Label:
    """Save the verdict of the lease holder; a pending decision becomes pass/fail by a human."""
    verdict = as_label(label)
    _check_duration(duration_ms)
    with _queue_writes(session):
        written = _write_label(session, task_id, user, verdict, utcnow(), note, duration_ms)
        session.commit()
    _after_commit(session, written)
    return written.label


def label_and_claim_next(
    session: Session,
    task_id: int,
    user: User,
    label: DefectClass | str,
    *,
    lease_seconds: float,
    note: str | None = None,
    duration_ms: int | None = None,
    line_id: str | None = None,
    reference_rng: random.Random | None = None,
) -> tuple[Label, ClaimedTask | None]:
    """A verdict key at the desk: `submit_label`, then `claim_next_task`, in one transaction.

    What each would do alone, with the same rules, but one commit (one fsync on SQLite, one
    turn at its writer lock) instead of two, and one candidate read for the claim. The
    verdict is durable when this returns, with the next part's claim; should the claim fail
    the label is not saved either, and the caller is told (the desk shows "Not saved").
    The after-label hooks run once both are committed, as after `submit_label`."""
    verdict = as_label(label)
    _check_duration(duration_ms)
    lease = _check_lease(lease_seconds)
    with _queue_writes(session):
        now = utcnow()
        written = _write_label(session, task_id, user, verdict, now, note, duration_ms)
        claimed = _claim(session, user, now, now + lease, line_id, reference_rng)
        session.commit()
    _after_commit(session, written)
    if claimed is not None:
        _log_claim(claimed, user)
    return written.label, claimed


def _reference_label(served: ReferenceAnswer, user: User, note: str | None) -> Label:
    """The verdict on a reference part in a live verdict's shape, for the caller's reply;
    never added to the session."""
    assert user.id is not None and served.label is not None
    return Label(
        id=served.served_label_id,
        inspection_id=(
            served.served_part_id if served.served_part_id is not None else served.inspection_id
        ),
        task_id=served.served_task_id,
        user_id=user.id,
        label=served.label,
        note=note or None,
        duration_ms=served.duration_ms,
        created_at=served.answered_at or utcnow(),
    )


def _after_label(session: Session, line_id: str, inspection_id: int) -> None:
    # The label is already committed: a failure here must not make the inspector's
    # verdict look lost, but the operator must see it.
    try:
        automation.after_label(session, line_id, inspection_id)
        session.commit()
        # the bandit's reward and the canary's step (commits its own changes)
        deployments.after_label(session, line_id, inspection_id)
    except Exception:
        session.rollback()
        logger.exception(
            "after-label evidence update failed for inspection %d on line %s",
            inspection_id,
            line_id,
        )


def relabel(
    session: Session,
    inspection_id: int,
    user: User,
    label: DefectClass | str,
    *,
    note: str | None = None,
) -> Label:
    """The undo path: replace the current label of an inspection.

    The earlier label is kept, marked superseded (relabels are how the redo rate is
    counted). A decision a human made follows the latest label; a decision the model made
    (audits) never changes. Allowed to the author of the current label and to supervisors.
    """
    verdict = as_label(label)
    if user.id is None:
        raise ValueError("the user has not been saved yet")
    # undoing a verdict on a reference part (by the number it was shown with, which no
    # inspection may have) corrects that answer
    answered = reference_serving.correctable(session, user, inspection_id)
    if answered is not None:
        reference_serving.record_answer(
            session, answered, user, verdict.value, utcnow(), answered.duration_ms
        )
        session.commit()
        return _reference_label(answered, user, note)
    inspection = session.get(Inspection, inspection_id, populate_existing=True)
    if inspection is None:
        raise InspectionNotFound(f"no inspection {inspection_id}")
    current = session.exec(
        select(Label)
        .where(Label.inspection_id == inspection_id, col(Label.superseded).is_(False))
        .order_by(col(Label.created_at).desc(), col(Label.id).desc())
    ).first()
    if current is None:
        raise NothingToRelabel(
            f"inspection {inspection_id} has no label to replace; claim its task instead"
        )
    if current.user_id != user.id and not Role(user.role).may(Role.SUPERVISOR):
        raise RelabelNotAllowed(
            f"{user.name} may not relabel inspection {inspection_id}: only the inspector "
            "who labeled it or a supervisor may"
        )
    now = utcnow()
    session.exec(
        update(Label)
        .where(col(Label.inspection_id) == inspection_id, col(Label.superseded).is_(False))
        .values(superseded=True)
    )
    old_decision = inspection.decision
    if inspection.route == Route.REVIEW.value and inspection.decided_by == DecidedBy.HUMAN.value:
        inspection.decision = decision_for_class(verdict).value
        inspection.decided_at = now
        session.add(inspection)
        if inspection.decision != old_decision:
            enqueue_decision(session, inspection, cause="relabel")
    saved = Label(
        inspection_id=inspection_id,
        task_id=current.task_id,
        user_id=user.id,
        label=verdict.value,
        note=note or None,
        model_shown=current.model_shown,
        created_at=now,
    )
    session.add(saved)
    record_event(
        session,
        kind="relabel",
        actor=user.name,
        reason=note or "",
        line_id=inspection.line_id,
        details={
            "inspection_id": inspection_id,
            "old_label": current.label,
            "new_label": verdict.value,
            "old_decision": old_decision,
            "new_decision": inspection.decision,
        },
    )
    session.commit()
    _after_label(session, inspection.line_id, inspection_id)
    return saved


def escalate_task(session: Session, task_id: int, user: User, note: str) -> None:
    """Skip an unclear part to a supervisor: it leaves the inspectors' queue, unlabeled."""
    now = utcnow()
    served = _reference_held(session, task_id, user, now)
    if served is not None:
        # a reference part skipped: no answer, and nothing for a supervisor to decide
        reference_serving.release(session, served)
        session.commit()
        logger.info("reference answer %d skipped by %s: %s", served.id, user.name, note)
        return
    result = session.exec(
        update(ReviewTask)
        .where(
            col(ReviewTask.id) == task_id,
            col(ReviewTask.status) == TaskStatus.CLAIMED.value,
            _held_by(user, now),
        )
        .values(
            status=TaskStatus.ESCALATED.value,
            claimed_by=None,
            claimed_at=None,
            lease_expires_at=None,
            note=(note or "").strip() or None,
        )
    )
    if result.rowcount != 1:
        task = session.get(ReviewTask, task_id, populate_existing=True)
        if task is not None and task.status == TaskStatus.ESCALATED.value:
            error: ReviewError = TaskNotClaimed(
                f"task {task_id} is already escalated; label it or release it"
            )
        else:
            error = _explain_refused(session, task_id, user, now)
        session.rollback()
        raise error
    task = session.get(ReviewTask, task_id, populate_existing=True)
    assert task is not None
    record_event(
        session,
        kind="task_escalated",
        actor=user.name,
        reason=task.note or "",
        line_id=task.line_id,
        details={"task_id": task_id, "inspection_id": task.inspection_id},
    )
    session.commit()


def _waiting(line_id: str | None):  # type: ignore[no-untyped-def]
    # The waiting statuses named, not "not done": an IN list reads them from the status
    # index, where != read every done task (1M inspections: 75 ms for the queue's depth).
    condition = col(ReviewTask.status).in_(WAITING_STATUSES)
    if line_id is not None:
        condition = and_(condition, col(ReviewTask.line_id) == line_id)
    return condition


def queue_depth(session: Session, line_id: str | None = None) -> int:
    """Tasks not yet labeled (open, claimed or escalated)."""
    return session.exec(select(func.count()).select_from(ReviewTask).where(_waiting(line_id))).one()


def labels_given_since(session: Session, user: User, since: datetime) -> int:
    """Labels `user` has given since `since` that still stand (a replaced one no longer
    counts): the inspector's own count for the shift. Verdicts on reference parts count
    too, as the inspector cannot tell them from live ones."""
    labels = session.exec(
        select(func.count())
        .select_from(Label)
        .where(
            Label.user_id == user.id,
            col(Label.created_at) >= since,
            col(Label.superseded).is_(False),
        )
    ).one()
    return labels + reference_serving.answers_since(session, user, since)


def oldest_waiting(session: Session, line_id: str | None = None) -> datetime | None:
    """When the oldest unlabeled task was queued: how far behind the inspectors are."""
    oldest = session.exec(select(func.min(ReviewTask.created_at)).where(_waiting(line_id))).one()
    return as_utc(oldest)

"""Reference parts served blind in the review queue, and the verdicts on them.

`review_queue.claim_next_task` asks `maybe_serve` before it claims a live task: with the
line's ``reference_rate`` (the line of the live task that would be served next, so a
reference only ever stands in for a real part and an empty queue stays empty), one of the
line's reference parts that this inspector has not been served within ``REPEAT_WINDOW`` is
served instead. The live task stays open for the next claim.

What the inspector sees is built like a live task's (`review_queue._reference_task`): the
reason of the task it stands in for, the model never shown, received "now", and numbers of
its own from the id spaces of live parts, never the source inspection's: a task id, a part
id (the inspection id of the API's claim, its image URL, the desk's "part #", the undo) and,
once answered, a label id. On PostgreSQL each is taken from the table's own sequence, so no
live row ever gets it (a gap like a rolled-back insert's); SQLite has no sequence, so each
is one past the largest in use, and a later live row may get the same number: where the two
meet, the image route and the undo give the inspector's held reference first, then the live
row (`for_part`, `correctable`). The verdict goes into ``ReferenceAnswer``, never into
``Label``: it changes no decision, is no evidence for the gate, the agreement figures, the
monitoring audits or a rollout, and reaches no output; only the inspector's accuracy. The
reply to it states the decision a live part of that reason would show (`reply_decision`).

Known limits: the part serial and the image bytes (and so the image's ETag, its SHA-256)
are the reference inspection's own: an inspector who remembers a serial or compares image
hashes can tell a part seen before; the part id is a new one, so it is a little ahead of
the live parts waiting in the queue; ``GET /inspections/{id}`` with a reference's part id
finds no inspection (reading parts by id is not the inspector's work, but it can be done).
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, or_, update
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Session, SQLModel, col, select

from inspect_app.domain import TaskReason, decision_for_class
from inspect_app.reference import service
from inspect_app.storage.tables import (
    Inspection,
    Label,
    Line,
    ReferenceAnswer,
    ReferencePart,
    ReviewTask,
    User,
)
from inspect_app.timeutil import as_utc

logger = logging.getLogger(__name__)

# The same reference part is not served to the same inspector again within this window: a
# part they remember tests their memory, not their eyes.
REPEAT_WINDOW = timedelta(days=7)

_rng = random.Random()


class AnswerStatus(StrEnum):
    HELD = "held"  # on the inspector's screen under a lease
    ANSWERED = "answered"
    RELEASED = "released"  # handed back, skipped or escalated, or the lease ran out: no verdict


def seed(value: int | None) -> None:
    """Make the serving lottery repeatable (tests, simulations)."""
    _rng.seed(value)


def _close_expired(session: Session, user: User, now: datetime) -> None:
    session.exec(
        update(ReferenceAnswer)
        .where(
            col(ReferenceAnswer.user_id) == user.id,
            col(ReferenceAnswer.status) == AnswerStatus.HELD.value,
            col(ReferenceAnswer.lease_expires_at) <= now,
        )
        .values(status=AnswerStatus.RELEASED.value)
    )


def renew_held(
    session: Session, user: User, now: datetime, expires: datetime, line_id: str | None
) -> ReferenceAnswer | None:
    """The reference `user` holds now, renewed (a reload shows the same part again)."""
    _close_expired(session, user, now)
    query = select(ReferenceAnswer).where(
        ReferenceAnswer.user_id == user.id,
        ReferenceAnswer.status == AnswerStatus.HELD.value,
    )
    if line_id is not None:
        query = query.where(ReferenceAnswer.line_id == line_id)
    held = session.exec(query.order_by(col(ReferenceAnswer.served_at))).first()
    if held is None:
        return None
    held.lease_expires_at = expires
    session.add(held)
    session.flush()
    return held


def maybe_serve(
    session: Session,
    user: User,
    now: datetime,
    expires: datetime,
    live_task_id: int,
    rng: random.Random | None = None,
) -> ReferenceAnswer | None:
    """With the rate of the line of `live_task_id` (the live task next in line for `user`),
    put a reference part on the inspector's screen in its place; None: serve the live task."""
    live = session.get(ReviewTask, live_task_id)
    if live is None:
        return None
    line = session.get(Line, live.line_id)
    rate = line.reference_rate if line is not None else 0.0
    if not rate > 0 or (rng or _rng).random() >= rate:
        return None
    recent = select(ReferenceAnswer.reference_id).where(
        ReferenceAnswer.user_id == user.id, col(ReferenceAnswer.served_at) > now - REPEAT_WINDOW
    )
    eligible = list(
        session.exec(
            select(ReferencePart)
            .join(Inspection, col(Inspection.id) == col(ReferencePart.inspection_id))
            .where(
                ReferencePart.line_id == live.line_id,
                col(ReferencePart.removed_at).is_(None),
                col(Inspection.image_removed_at).is_(None),
                col(ReferencePart.id).not_in(recent),
            )
            .order_by(col(ReferencePart.id))
        )
    )
    if not eligible:
        return None
    chosen = (rng or _rng).choice(eligible)
    assert chosen.id is not None and user.id is not None
    served = ReferenceAnswer(
        reference_id=chosen.id,
        inspection_id=chosen.inspection_id,
        line_id=chosen.line_id,
        user_id=user.id,
        served_task_id=_fresh_id(session, ReviewTask, col(ReferenceAnswer.served_task_id)),
        served_part_id=_fresh_id(session, Inspection, col(ReferenceAnswer.served_part_id)),
        served_reason=live.reason,
        status=AnswerStatus.HELD.value,
        served_at=now,
        lease_expires_at=expires,
        expected=chosen.label,
    )
    session.add(served)
    session.flush()
    logger.info(
        "reference part %d (inspection %d, line %s) served to %s as task %d, part %d (answer %d)",
        chosen.id,
        chosen.inspection_id,
        chosen.line_id,
        user.name,
        served.served_task_id,
        served.served_part_id,
        served.id,
    )
    return served


def _fresh_id(session: Session, table: type[SQLModel], shown: object) -> int:
    """A number from `table`'s id space for a reference part to be shown with.

    PostgreSQL: the next value of the table's own sequence, so no row of it ever gets the
    number. SQLite (no sequence): one past the largest id of the table and of the numbers
    already shown (`shown`); a later row may get it (the module's docstring says how that
    is resolved)."""
    name = table.__tablename__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        return int(
            session.exec(select(func.nextval(func.pg_get_serial_sequence(name, "id")))).one()
        )
    largest = session.exec(select(func.max(table.id))).one() or 0  # type: ignore[attr-defined]
    given = session.exec(select(func.max(shown))).one() or 0  # type: ignore[call-overload]
    return max(int(largest), int(given)) + 1


def for_part(session: Session, user: User, part_id: int) -> ReferenceAnswer | None:
    """The reference part `user` was shown as `part_id`, for its image; None: a live part.

    A reference `user` holds comes first; one they answered or handed back only while no
    inspection has that id (on SQLite a later live part may get the number)."""
    served = session.exec(
        select(ReferenceAnswer)
        .where(ReferenceAnswer.user_id == user.id, ReferenceAnswer.served_part_id == part_id)
        .order_by(col(ReferenceAnswer.served_at).desc())
    ).first()
    if served is None:
        return None
    if served.status == AnswerStatus.HELD.value or session.get(Inspection, part_id) is None:
        return served
    return None


def reply_decision(session: Session, user: User, label: Label) -> str | None:
    """The decision the reply to a verdict on a reference part states: what a live part of
    the same reason would show (the verdict's on a part the line waits for, the model's on
    an audit). None: `label` is a live label (its inspection's decision stands)."""
    if not sa_inspect(label).transient:  # a saved Label: the queue never saves a reply's
        return None
    served = session.exec(
        select(ReferenceAnswer).where(
            ReferenceAnswer.user_id == user.id,
            ReferenceAnswer.served_label_id == label.id,
            ReferenceAnswer.served_part_id == label.inspection_id,
        )
    ).first()
    if served is None or served.label is None:
        return None
    if served.served_reason == TaskReason.DECIDE.value:
        return decision_for_class(served.label).value
    source = session.get(Inspection, served.inspection_id)
    model_call = source.predicted_class if source is not None else None
    return decision_for_class(model_call or served.expected).value


def held_for_task(session: Session, task_id: int, user: User) -> ReferenceAnswer | None:
    """The reference `user` was served as `task_id` and has not answered (any lease)."""
    return session.exec(
        select(ReferenceAnswer)
        .where(
            ReferenceAnswer.user_id == user.id,
            ReferenceAnswer.served_task_id == task_id,
            ReferenceAnswer.status == AnswerStatus.HELD.value,
        )
        .order_by(col(ReferenceAnswer.served_at).desc())
        .execution_options(populate_existing=True)
    ).first()


def latest_for_task(session: Session, task_id: int, user: User) -> ReferenceAnswer | None:
    """The last serving of a reference to `user` as `task_id`, whatever became of it."""
    return session.exec(
        select(ReferenceAnswer)
        .where(ReferenceAnswer.user_id == user.id, ReferenceAnswer.served_task_id == task_id)
        .order_by(col(ReferenceAnswer.served_at).desc())
    ).first()


def record_answer(
    session: Session,
    served: ReferenceAnswer,
    user: User,
    label: str,
    now: datetime,
    duration_ms: int | None,
) -> None:
    """Save the verdict (the caller commits) and re-check the inspector's flag."""
    served.label = label
    served.status = AnswerStatus.ANSWERED.value
    served.answered_at = now
    served.duration_ms = duration_ms
    # a correction is a new label on a live part, with a new id: so here
    served.served_label_id = _fresh_id(session, Label, col(ReferenceAnswer.served_label_id))
    session.add(served)
    session.flush()
    logger.info(
        "reference answer %d by %s: %s (verified %s)", served.id, user.name, label, served.expected
    )
    service.update_flag(session, user)


def release(session: Session, served: ReferenceAnswer) -> None:
    served.status = AnswerStatus.RELEASED.value
    session.add(served)
    session.flush()


def correctable(session: Session, user: User, inspection_id: int) -> ReferenceAnswer | None:
    """The answer `user` gave on a reference part shown as `inspection_id` (its part id; or
    its source inspection's id, as the queue's own callers know it), if that is their latest
    verdict on that number: the undo corrects it there, never a real label."""
    answer = session.exec(
        select(ReferenceAnswer)
        .where(
            ReferenceAnswer.user_id == user.id,
            or_(
                col(ReferenceAnswer.served_part_id) == inspection_id,
                col(ReferenceAnswer.inspection_id) == inspection_id,
            ),
            ReferenceAnswer.status == AnswerStatus.ANSWERED.value,
        )
        .order_by(col(ReferenceAnswer.answered_at).desc())
    ).first()
    if answer is None:
        return None
    own_label = session.exec(
        select(func.max(Label.created_at)).where(
            Label.inspection_id == inspection_id, Label.user_id == user.id
        )
    ).one()
    answered_at = as_utc(answer.answered_at)
    own = as_utc(own_label)
    if own is not None and answered_at is not None and own > answered_at:
        return None
    return answer


def answers_since(session: Session, user: User, since: datetime) -> int:
    """Verdicts `user` gave on reference parts since `since` (their shift count includes them)."""
    return session.exec(
        select(func.count())
        .select_from(ReferenceAnswer)
        .where(
            ReferenceAnswer.user_id == user.id,
            ReferenceAnswer.status == AnswerStatus.ANSWERED.value,
            col(ReferenceAnswer.answered_at) >= since,
        )
    ).one()

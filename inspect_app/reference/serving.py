"""Reference parts served blind in the review queue, and the verdicts on them.

`review_queue.claim_next_task` asks `maybe_serve` before it claims a live task: with the
line's ``reference_rate`` (the line of the live task that would be served next, so a
reference only ever stands in for a real part and an empty queue stays empty), one of the
line's reference parts that this inspector has not been served within ``REPEAT_WINDOW`` is
served instead. The live task stays open for the next claim.

What the inspector sees is built like a live task's (`review_queue._reference_task`): the
reason of the task it stands in for, the model never shown, a task id taken as the next one
the queue would hand out, received "now". The verdict goes into ``ReferenceAnswer``, never
into ``Label``: it changes no decision, is no evidence for the gate, the agreement figures,
the monitoring audits or a rollout, and reaches no output; only the inspector's accuracy.

Known limits: the inspection id (in the image URL) and the part serial are the reference
inspection's own, so an inspector who looks the id up through the API sees an older part;
a task id seen on a reference may be handed out again later to a live part.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, update
from sqlmodel import Session, col, select

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
    # the id the queue would hand out next, so the number looks like a live task's
    last = session.exec(select(func.max(ReviewTask.id))).one() or 0
    served = ReferenceAnswer(
        reference_id=chosen.id,
        inspection_id=chosen.inspection_id,
        line_id=chosen.line_id,
        user_id=user.id,
        served_task_id=last + 1,
        served_reason=live.reason,
        status=AnswerStatus.HELD.value,
        served_at=now,
        lease_expires_at=expires,
        expected=chosen.label,
    )
    session.add(served)
    session.flush()
    logger.info(
        "reference part %d (inspection %d, line %s) served to %s as task %d (answer %d)",
        chosen.id,
        chosen.inspection_id,
        chosen.line_id,
        user.name,
        served.served_task_id,
        served.id,
    )
    return served


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
    """The answer `user` gave on this inspection as a reference, if that is their latest
    verdict on it: the desk's undo corrects it there, never the inspection's real label."""
    answer = session.exec(
        select(ReferenceAnswer)
        .where(
            ReferenceAnswer.user_id == user.id,
            ReferenceAnswer.inspection_id == inspection_id,
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

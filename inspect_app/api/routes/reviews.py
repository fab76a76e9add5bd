"""The review queue over HTTP, for programmatic labeling (the UI calls the same service layer).

Inspectors and up (design section 6). What a claim shows follows the line's level: the
model's output only where it was shown (assist, uncertain parts at partial), never the
true class. The image itself is at ``image_url``.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, Field
from sqlmodel import Session

from inspect_app import lines as line_service
from inspect_app import review_queue
from inspect_app.api.deps import InspectorUser, SessionDep, SettingsDep
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    LINE_ID_PATTERN,
    MAX_NOTE_CHARS,
    TEXT_PATTERN,
    JsonInt,
    RowId,
)
from inspect_app.domain import DefectClass
from inspect_app.reference import serving as reference_serving
from inspect_app.review_queue import ClaimedTask
from inspect_app.storage.tables import Inspection, Label, User

router = APIRouter(prefix="/api/v1", tags=["reviews"])


class ClaimedTaskPublic(BaseModel):
    task_id: int
    inspection_id: int
    line_id: str
    reason: str  # decide: the line waits for this verdict; audit: blind check
    image_url: str
    image_format: str
    part_serial: str | None
    captured_at: datetime | None
    received_at: datetime
    lease_expires_at: datetime  # label, renew or release before this
    predicted_class: str | None  # the model's output, only where the line's level shows it
    confidence: float | None
    probabilities: dict[str, float] | None
    escalated: bool
    note: str | None

    @classmethod
    def of(cls, task: ClaimedTask) -> ClaimedTaskPublic:
        return cls(
            task_id=task.task_id,
            inspection_id=task.shown_id,  # a reference part's own number, not its source's
            line_id=task.line_id,
            reason=task.reason,
            image_url=f"/api/v1/inspections/{task.shown_id}/image",
            image_format=task.image_format,
            part_serial=task.part_serial,
            captured_at=task.captured_at,
            received_at=task.received_at,
            lease_expires_at=task.lease_expires_at,
            predicted_class=task.predicted_class,
            confidence=task.confidence,
            probabilities=task.probabilities,
            escalated=task.escalated,
            note=task.note,
        )


MAX_DURATION_MS = 24 * 3600 * 1000  # a verdict that took longer is a tab left open


class LabelIn(BaseModel):
    label: DefectClass
    note: str | None = Field(default=None, max_length=MAX_NOTE_CHARS, pattern=TEXT_PATTERN)
    duration_ms: JsonInt | None = Field(
        default=None,
        ge=0,
        le=MAX_DURATION_MS,
        description="time from the part shown to the verdict",
    )


class RelabelIn(BaseModel):
    label: DefectClass
    note: str | None = Field(default=None, max_length=MAX_NOTE_CHARS, pattern=TEXT_PATTERN)


class EscalateIn(BaseModel):
    note: str = Field(
        default="",
        max_length=MAX_NOTE_CHARS,
        pattern=TEXT_PATTERN,
        description="what is unclear about the part",
    )


# Every route here: a bearer token (401) of an inspector or above (403), valid input (422).
_AUTH = (401, 403, 422)
# ... and a task or an inspection the caller may act on: 404 unknown, 409 not held (any more).
_TASK_ERRORS = error_responses(
    *_AUTH,
    404,
    409,
    413,
    _403="below inspector, or relabeling someone else's label",
    _404="no such task or inspection",
    _409="the task is not yours (any more): labeled, released or its lease expired",
)


class LabelPublic(BaseModel):
    label_id: int
    inspection_id: int
    task_id: int | None
    label: DefectClass
    decision: str  # the inspection's decision now: pass | fail (pending resolved), or the model's


class LeasePublic(BaseModel):
    task_id: int
    lease_expires_at: datetime


def _http_error(exc: review_queue.ReviewError) -> HTTPException:
    if isinstance(exc, review_queue.TaskNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    if isinstance(exc, review_queue.RelabelNotAllowed):
        return HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc))
    if isinstance(exc, review_queue.InvalidLabel):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))
    return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))


def _label_public(session: Session, label: Label, user: User) -> LabelPublic:
    assert label.id is not None
    # a verdict on a reference part: the decision a live part would show, no inspection read
    decision = reference_serving.reply_decision(session, user, label)
    if decision is None:
        inspection = session.get(Inspection, label.inspection_id, populate_existing=True)
        assert inspection is not None
        decision = inspection.decision
    return LabelPublic(
        label_id=label.id,
        inspection_id=label.inspection_id,
        task_id=label.task_id,
        label=DefectClass(label.label),
        decision=decision,
    )


@router.post(
    "/reviews/claim",
    response_model=ClaimedTaskPublic,
    responses={
        204: {"description": "the queue is empty"},
        **error_responses(*_AUTH, 404, _404="no such line"),
    },
)
def claim_task(
    session: SessionDep,
    settings: SettingsDep,
    user: InspectorUser,
    line: str | None = Query(
        default=None, pattern=LINE_ID_PATTERN, description="only this line's tasks"
    ),
) -> ClaimedTaskPublic | Response:
    """Claim the next task (or get back the one already held) under a lease."""
    if line is not None:
        try:
            line_service.get_line(session, line)
        except line_service.LineNotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    task = review_queue.claim_next_task(
        session, user, lease_seconds=settings.review_lease_seconds, line_id=line
    )
    if task is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return ClaimedTaskPublic.of(task)


@router.post("/reviews/{task_id}/label", response_model=LabelPublic, responses=_TASK_ERRORS)
def label_task(
    task_id: RowId, body: LabelIn, session: SessionDep, user: InspectorUser
) -> LabelPublic:
    """Submit the verdict on a task you hold; a pending decision becomes pass/fail."""
    try:
        label = review_queue.submit_label(
            session, task_id, user, body.label, note=body.note, duration_ms=body.duration_ms
        )
    except review_queue.ReviewError as exc:
        raise _http_error(exc) from exc
    return _label_public(session, label, user)


@router.post("/reviews/{task_id}/renew", response_model=LeasePublic, responses=_TASK_ERRORS)
def renew_task_lease(
    task_id: RowId, session: SessionDep, settings: SettingsDep, user: InspectorUser
) -> LeasePublic:
    """Keep a task you are still looking at."""
    try:
        expires = review_queue.renew_lease(
            session, task_id, user, lease_seconds=settings.review_lease_seconds
        )
    except review_queue.ReviewError as exc:
        raise _http_error(exc) from exc
    return LeasePublic(task_id=task_id, lease_expires_at=expires)


@router.post(
    "/reviews/{task_id}/release", status_code=status.HTTP_204_NO_CONTENT, responses=_TASK_ERRORS
)
def release_claimed_task(task_id: RowId, session: SessionDep, user: InspectorUser) -> Response:
    """Give a task back to the queue unlabeled."""
    try:
        review_queue.release_task(session, task_id, user)
    except review_queue.ReviewError as exc:
        raise _http_error(exc) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/reviews/{task_id}/escalate", status_code=status.HTTP_204_NO_CONTENT, responses=_TASK_ERRORS
)
def escalate_claimed_task(
    task_id: RowId, body: EscalateIn, session: SessionDep, user: InspectorUser
) -> Response:
    """Skip an unclear part to a supervisor."""
    try:
        review_queue.escalate_task(session, task_id, user, body.note)
    except review_queue.ReviewError as exc:
        raise _http_error(exc) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/inspections/{inspection_id}/relabel", response_model=LabelPublic, responses=_TASK_ERRORS
)
def relabel_inspection(
    inspection_id: RowId, body: RelabelIn, session: SessionDep, user: InspectorUser
) -> LabelPublic:
    """Undo: replace the current label (its author or a supervisor); the old one is kept."""
    try:
        label = review_queue.relabel(session, inspection_id, user, body.label, note=body.note)
    except review_queue.ReviewError as exc:
        raise _http_error(exc) from exc
    return _label_public(session, label, user)

"""Lines: their automation settings and queue, and the one way to change the level.

Supervisors only (design section 6: line settings and automation levels). The rule for a
change lives in `inspect_app.lines.change_automation`; this module translates its
outcomes to HTTP: 200, 409 with the evidence that fell short, 404, 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator
from sqlmodel import Session

from inspect_app import lines as line_service
from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    MAX_REASON_CHARS,
    MAX_TAG_CHARS,
    REQUIRED_TEXT_PATTERN,
    TEXT_PATTERN,
    LineIdPath,
)
from inspect_app.domain import AutomationLevel
from inspect_app.events import list_events
from inspect_app.review_queue import oldest_waiting, queue_depth
from inspect_app.storage.tables import Line
from inspect_app.timeutil import as_utc

router = APIRouter(prefix="/api/v1/lines", tags=["lines"])

# Every route here: a supervisor's bearer token (401, 403), valid input (422).
_SUPERVISOR = (401, 403, 422)


class LinePublic(BaseModel):
    id: str
    level: AutomationLevel
    pass_threshold: float
    fail_threshold: float
    audit_rate: float
    max_escape_rate: float
    max_false_reject_rate: float
    min_labels: int
    auto_demote: bool
    updated_at: datetime
    queue_depth: int  # review tasks not yet labeled
    oldest_waiting: datetime | None  # when the oldest of them was queued


class AutomationChange(BaseModel):
    level: AutomationLevel
    # Strict: a number, as the schema says, not `false` or "0.9".
    pass_threshold: float | None = Field(
        default=None,
        gt=0.5,
        le=1.0,
        strict=True,
        description="auto-pass when P(ok) >= this; omit to keep",
    )
    fail_threshold: float | None = Field(
        default=None,
        gt=0.5,
        le=1.0,
        strict=True,
        description="auto-fail when P(defect) >= this; omit to keep",
    )
    audit_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        strict=True,
        description="fraction of auto-decisions audited blind",
    )
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="why; recorded in the audit trail (not blank)",
        # Checked by the validator below, for a message that says why a blank one is refused.
        json_schema_extra={"pattern": REQUIRED_TEXT_PATTERN},
    )

    @field_validator("reason")
    @classmethod
    def reason_is_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a reason is required: it goes into the audit trail")
        if "\x00" in value:
            raise ValueError("a reason may not contain NUL characters")
        return value.strip()


class Refusal(BaseModel):
    detail: str
    evidence: dict[str, Any]


class EventPublic(BaseModel):
    id: int
    at: datetime
    line_id: str | None
    kind: str
    actor: str
    reason: str
    details: dict[str, Any] | None


def _public(session: Session, line: Line) -> LinePublic:
    return LinePublic(
        id=line.id,
        level=AutomationLevel(line.level),
        pass_threshold=line.pass_threshold,
        fail_threshold=line.fail_threshold,
        audit_rate=line.audit_rate,
        max_escape_rate=line.max_escape_rate,
        max_false_reject_rate=line.max_false_reject_rate,
        min_labels=line.min_labels,
        auto_demote=line.auto_demote,
        updated_at=as_utc(line.updated_at) or line.updated_at,
        queue_depth=queue_depth(session, line.id),
        oldest_waiting=oldest_waiting(session, line.id),
    )


def _line_or_404(session: Session, line_id: str) -> Line:
    try:
        return line_service.get_line(session, line_id)
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


@router.get("", response_model=list[LinePublic], responses=error_responses(401, 403))
def read_lines(session: SessionDep, user: SupervisorUser) -> list[LinePublic]:
    """Every line with its level, thresholds, audit rate, targets and queue."""
    return [_public(session, line) for line in line_service.list_lines(session)]


@router.get(
    "/{line}",
    response_model=LinePublic,
    responses=error_responses(*_SUPERVISOR, 404, _404="no such line"),
)
def read_line(line: LineIdPath, session: SessionDep, user: SupervisorUser) -> LinePublic:
    return _public(session, _line_or_404(session, line))


@router.put(
    "/{line}/automation",
    response_model=LinePublic,
    responses={
        **error_responses(
            *_SUPERVISOR,
            404,
            413,
            _404="no such line",
            _422="invalid input, or settings the line cannot take",
        ),
        409: {"model": Refusal, "description": "the evidence gate refused the raise"},
    },
)
def change_line_automation(
    line: LineIdPath, change: AutomationChange, session: SessionDep, user: SupervisorUser
) -> LinePublic | JSONResponse:
    """Lower (always allowed, immediate) or raise (partial/full need evidence) a line."""
    try:
        updated = line_service.change_automation(
            session,
            line,
            level=change.level,
            pass_threshold=change.pass_threshold,
            fail_threshold=change.fail_threshold,
            audit_rate=change.audit_rate,
            reason=change.reason,
            actor=user,
        )
    except line_service.AutomationRefused as exc:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content=Refusal(detail=str(exc), evidence=exc.verdict.evidence).model_dump(mode="json"),
        )
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except line_service.InvalidLineSettings as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    except line_service.NotPermitted as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from exc
    return _public(session, updated)


@router.get(
    "/{line}/events",
    response_model=list[EventPublic],
    responses=error_responses(*_SUPERVISOR, 404, _404="no such line"),
)
def read_line_events(
    line: LineIdPath,
    session: SessionDep,
    user: SupervisorUser,
    kind: str | None = Query(
        default=None,
        max_length=MAX_TAG_CHARS,
        pattern=TEXT_PATTERN,
        description="e.g. level_change, relabel",
    ),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[EventPublic]:
    """The line's audit trail, newest first: level changes and refusals, relabels, keys."""
    _line_or_404(session, line)
    return [
        EventPublic(
            id=event.id or 0,
            at=as_utc(event.at) or event.at,
            line_id=event.line_id,
            kind=event.kind,
            actor=event.actor,
            reason=event.reason,
            details=event.details,
        )
        for event in list_events(session, line_id=line, kind=kind, limit=limit)
    ]

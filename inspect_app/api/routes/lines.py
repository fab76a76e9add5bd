"""Lines: their automation settings and queue, the one way to change the level, and their
targets.

Supervisors only (design section 6: line settings and automation levels). The rules live in
`inspect_app.lines.change_automation` and `set_targets`; this module translates their
outcomes to HTTP: 200, 409 with the evidence that fell short, 404, 422.

Thresholds are a number or the string ``"never"`` (one-sided partial automation: e.g.
``{"level": "partial", "pass_threshold": "never", "fail_threshold": 0.65}`` auto-fails
confident defects and sends every other part to a human). Lines are read back the same way,
and so is the recommendation, so either can be sent back unchanged. Omitting a threshold (or
sending null) keeps the line's current one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session

from inspect_app import lines as line_service
from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    MAX_REASON_CHARS,
    MAX_TAG_CHARS,
    REQUIRED_TEXT_PATTERN,
    TEXT_PATTERN,
    THRESHOLD_DESCRIPTION,
    JsonInt,
    LineIdPath,
    ThresholdIn,
)
from inspect_app.domain import AutomationLevel, Threshold
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
    pass_threshold: Threshold = Field(
        description='auto-pass at partial when P(ok) >= this; "never": never auto-pass'
    )
    fail_threshold: Threshold = Field(
        description='auto-fail at partial when P(defect) >= this; "never": never auto-fail'
    )
    audit_rate: float
    max_escape_rate: float
    max_false_reject_rate: float
    min_labels: int
    auto_demote: bool
    updated_at: datetime
    queue_depth: int  # review tasks not yet labeled
    oldest_waiting: datetime | None  # when the oldest of them was queued


def _reason_is_given(value: str) -> str:
    if not value.strip():
        raise ValueError("a reason is required: it goes into the audit trail")
    if "\x00" in value:
        raise ValueError("a reason may not contain NUL characters")
    return value.strip()


Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="why; recorded in the audit trail (not blank)",
        # Checked by the validator, for a message that says why a blank one is refused.
        json_schema_extra={"pattern": REQUIRED_TEXT_PATTERN},
    ),
    AfterValidator(_reason_is_given),
]


class AutomationChange(BaseModel):
    level: AutomationLevel
    # Strict: a number, as the schema says, not `false` or "0.9"; or the word "never".
    pass_threshold: ThresholdIn | None = Field(
        default=None,
        description=f"auto-pass when P(ok) >= this: {THRESHOLD_DESCRIPTION}; omit to keep",
        examples=[0.99, "never"],
    )
    fail_threshold: ThresholdIn | None = Field(
        default=None,
        description=f"auto-fail when P(defect) >= this: {THRESHOLD_DESCRIPTION}; omit to keep",
        examples=[0.98, "never"],
    )
    audit_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        strict=True,
        description="fraction of auto-decisions audited blind",
    )
    reason: Reason


class TargetsChange(BaseModel):
    """The targets to change; each one omitted keeps its value, and at least one is given.
    (The fields default to None in Python only: in JSON a target is a value or absent.)"""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": [name]} for name in line_service.TARGETS]}
    )

    max_escape_rate: float = Field(  # type: ignore[assignment]
        default=None,
        ge=line_service.MIN_TARGET_RATE,
        le=line_service.MAX_TARGET_RATE,
        strict=True,
        description="the most escapes (auto-passed parts a human calls defective) the gate "
        "and the live audits accept, as a rate (0.005 = 0.5%)",
    )
    max_false_reject_rate: float = Field(  # type: ignore[assignment]
        default=None,
        ge=line_service.MIN_TARGET_RATE,
        le=line_service.MAX_TARGET_RATE,
        strict=True,
        description="the most false rejects (auto-failed parts a human calls ok), as a rate",
    )
    min_labels: JsonInt = Field(  # type: ignore[assignment]
        default=None,
        ge=1,
        le=line_service.MAX_MIN_LABELS,
        description="labeled parts each automated side needs before the gate may pass",
    )
    auto_demote: bool = Field(  # type: ignore[assignment]
        default=None,
        strict=True,
        description="drop one level when live audits show a rate clearly above its target",
    )
    reason: Reason

    @model_validator(mode="after")
    def something_is_given(self) -> TargetsChange:
        if all(getattr(self, name) is None for name in line_service.TARGETS):
            raise ValueError(
                f"nothing to change: give at least one of {', '.join(line_service.TARGETS)}"
            )
        return self


class GateAtSettings(BaseModel):
    allowed: bool
    reason: str
    evidence: dict[str, Any]


class TargetsOutcome(BaseModel):
    """A target change never raises a line; at partial/full it may lower it one level."""

    line: LinePublic
    message: str = Field(description="what happened to the line, in words")
    demoted_to: AutomationLevel | None = Field(
        description="the level the live audits dropped the line to under the new targets; "
        "null: the level stayed"
    )
    live_alarm: bool | None = Field(
        description="the live audits are clearly above a new target (null below partial)"
    )
    gate_at_current_settings: GateAtSettings | None = Field(
        description="would the evidence gate allow the line's current settings under the "
        "new targets (null below partial); it lowers nothing by itself"
    )


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


@router.put(
    "/{line}/targets",
    response_model=TargetsOutcome,
    responses=error_responses(
        *_SUPERVISOR,
        404,
        413,
        _404="no such line",
        _422="invalid input (a target out of range, none given, or a blank reason)",
    ),
)
def change_line_targets(
    line: LineIdPath, change: TargetsChange, session: SessionDep, user: SupervisorUser
) -> TargetsOutcome:
    """Set the line's targets: the escape and false-reject rates the gate and the live audits
    hold it to, the labels each side needs, and auto-demotion. Never raises the line; at
    partial or full the live audits are judged against the new targets at once, and a target
    they clearly exceed lowers the line one level (when auto-demotion is on)."""
    try:
        outcome = line_service.set_targets(
            session,
            line,
            max_escape_rate=change.max_escape_rate,
            max_false_reject_rate=change.max_false_reject_rate,
            min_labels=change.min_labels,
            auto_demote=change.auto_demote,
            reason=change.reason,
            actor=user,
        )
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except line_service.InvalidLineSettings as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    except line_service.NotPermitted as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from exc
    gate = outcome.gate
    return TargetsOutcome(
        line=_public(session, outcome.line),
        message=outcome.message,
        demoted_to=outcome.live.demoted_to if outcome.live is not None else None,
        live_alarm=outcome.live.alarmed if outcome.live is not None else None,
        gate_at_current_settings=(
            GateAtSettings(allowed=gate.allowed, reason=gate.reason, evidence=gate.evidence)
            if gate is not None
            else None
        ),
    )


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

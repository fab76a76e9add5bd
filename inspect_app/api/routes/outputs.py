"""Line outputs: where each line's decisions and alarms are delivered, what was delivered,
and replay. Supervisors only.

The use cases are `inspect_app.outputs.outbox`'s (the CLI calls the same ones); this module
translates their outcomes to HTTP: 404 for a line or destination that does not exist, 422
for settings that cannot work (the message names what to change).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    DB_ID_MAX,
    LINE_ID_PATTERN,
    MAX_REASON_CHARS,
    REQUIRED_TEXT_PATTERN,
    JsonInt,
    RowId,
)
from inspect_app.lines import LineNotFound
from inspect_app.outputs import outbox
from inspect_app.outputs.core import DeliveryState, DestinationError, DestinationKind

router = APIRouter(prefix="/api/v1/outputs", tags=["outputs"])

MAX_URL_CHARS = 1000
MAX_SECRET_CHARS = 256
SEQ_MAX = 2**31 - 1

_READ = error_responses(401, 403, 422)
_WRITE = error_responses(401, 403, 404, 422, _404="no such line or destination")

Seq = Annotated[JsonInt, Field(ge=1, le=SEQ_MAX)]
Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="why; recorded in the audit trail (not blank)",
        json_schema_extra={"pattern": REQUIRED_TEXT_PATTERN},
    ),
]
TopicPrefix = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^#+\x00]+$")]
Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS)]
Secret = Annotated[str, Field(min_length=16, max_length=MAX_SECRET_CHARS)]


def _given(value: str) -> str:
    if not value.strip() or "\x00" in value:
        raise ValueError("a reason is required (not blank, no NUL): it goes into the audit trail")
    return value.strip()


class DestinationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_id: str = Field(pattern=LINE_ID_PATTERN)
    kind: DestinationKind
    url: Url = Field(description="http(s)://... for a webhook, mqtt://host:port for a broker")
    secret: Secret | SkipJsonSchema[None] = Field(
        default=None, description="webhook: the HMAC-SHA256 key shared with the receiver"
    )
    topic_prefix: TopicPrefix = "inspect"
    from_seq: Seq | SkipJsonSchema[None] = Field(
        default=None,
        description="deliver the line's messages from this sequence number (default: new ones)",
    )
    reason: Reason

    _reason = field_validator("reason")(_given)


class DestinationChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 2})

    enabled: Annotated[bool, Field(strict=True)] | SkipJsonSchema[None] = None
    url: Url | SkipJsonSchema[None] = None
    secret: Secret | SkipJsonSchema[None] = None
    topic_prefix: TopicPrefix | SkipJsonSchema[None] = None
    reason: Reason

    _reason = field_validator("reason")(_given)


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line_id: str = Field(pattern=LINE_ID_PATTERN)
    from_seq: Seq
    to_seq: Seq | SkipJsonSchema[None] = Field(default=None, description="default: the last")
    destination_id: Annotated[JsonInt, Field(ge=1, le=DB_ID_MAX)] | SkipJsonSchema[None] = None
    reason: Reason

    _reason = field_validator("reason")(_given)


class ReplayOut(BaseModel):
    queued: int = Field(description="deliveries queued again (messages x destinations)")


def _refused(exc: Exception) -> HTTPException:
    if isinstance(exc, LineNotFound | outbox.OutputNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


@router.get("/destinations", response_model=list[outbox.DestinationView], responses=_READ)
def read_destinations(
    session: SessionDep,
    user: SupervisorUser,
    line: str | None = Query(default=None, pattern=LINE_ID_PATTERN, description="one line"),
) -> list[outbox.DestinationView]:
    """Each destination with how many messages it has not received yet and, when it is
    failing, since when and why (its secret is never shown)."""
    return outbox.list_destinations(session, line)


@router.post(
    "/destinations",
    response_model=outbox.DestinationView,
    status_code=status.HTTP_201_CREATED,
    responses=_WRITE,
)
def create_destination(
    body: DestinationIn, session: SessionDep, user: SupervisorUser
) -> outbox.DestinationView:
    """Deliver a line's final decisions and alarm changes to a webhook or an MQTT broker."""
    try:
        view = outbox.add_destination(
            session,
            body.line_id,
            kind=body.kind.value,
            url=body.url,
            secret=body.secret,
            topic_prefix=body.topic_prefix,
            from_seq=body.from_seq,
            actor=user.name,
            reason=body.reason,
        )
    except (LineNotFound, DestinationError) as exc:
        raise _refused(exc) from exc
    return view


@router.patch(
    "/destinations/{destination_id}", response_model=outbox.DestinationView, responses=_WRITE
)
def change_destination(
    destination_id: RowId, body: DestinationChange, session: SessionDep, user: SupervisorUser
) -> outbox.DestinationView:
    """Pause or resume a destination, or give it a new URL, secret or topic prefix."""
    try:
        view = outbox.update_destination(
            session,
            destination_id,
            actor=user.name,
            reason=body.reason,
            enabled=body.enabled,
            url=body.url,
            secret=body.secret,
            topic_prefix=body.topic_prefix,
        )
    except (outbox.OutputNotFound, DestinationError) as exc:
        raise _refused(exc) from exc
    return view


@router.get("/messages", response_model=list[outbox.MessageView], responses=_READ)
def read_messages(
    session: SessionDep,
    user: SupervisorUser,
    line: str | None = Query(default=None, pattern=LINE_ID_PATTERN),
    state: Literal["delivered", "waiting", "failing"] | None = Query(
        default=None, description="only messages in this state at some destination"
    ),
    destination: int | None = Query(default=None, ge=1, le=DB_ID_MAX),
    from_seq: int | None = Query(default=None, ge=1, le=SEQ_MAX),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[outbox.MessageView]:
    """Newest first, each with its delivery at each destination: attempts, the last error,
    when it was delivered."""
    return outbox.list_messages(
        session,
        line_id=line,
        state=DeliveryState(state) if state is not None else None,
        destination_id=destination,
        from_seq=from_seq,
        limit=limit,
    )


@router.post("/replay", response_model=ReplayOut, responses=_WRITE)
def replay_messages(body: ReplayIn, session: SessionDep, user: SupervisorUser) -> ReplayOut:
    """Send a line's messages from_seq..to_seq again, in order, with their own delivery ids
    (a receiver that kept its ids drops them; one that lost its data gets them back)."""
    try:
        queued = outbox.replay(
            session,
            body.line_id,
            from_seq=body.from_seq,
            to_seq=body.to_seq,
            destination_id=body.destination_id,
            actor=user.name,
            reason=body.reason,
        )
    except (LineNotFound, outbox.OutputNotFound, DestinationError) as exc:
        raise _refused(exc) from exc
    return ReplayOut(queued=queued)

"""Reading inspections back: the line software polls a pending decision here.

Who may read: the camera key of the inspection's line, or any signed-in user (the design's
section 5). The image itself is for inspectors and up. What a reader sees of the model
follows the same rule as the camera's answer: the model's output only where the line's
level showed it (`Inspection.show_model`), never the replay's true class.

The listing (`GET /api/v1/inspections`) is for supervisors: filters, keyset pagination and
every part's model output, through `inspect_app.inspections`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from inspect_app import inspections as inspection_service
from inspect_app import lines as line_service
from inspect_app.api.deps import (
    InspectorUser,
    NowDep,
    SessionDep,
    SupervisorUser,
    TokenTtl,
    authenticate_bearer,
    bearer_scheme,
    camera_key_scheme,
    get_camera_line,
)
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    DB_ID_MAX,
    LINE_ID_PATTERN,
    MAX_TAG_CHARS,
    TEXT_PATTERN,
    ClientTime,
    RowId,
    time_query,
)
from inspect_app.api.pipeline_deps import ImageStoreDep
from inspect_app.domain import AutomationLevel, DecidedBy, Decision, Route
from inspect_app.imaging import MEDIA_TYPES
from inspect_app.reference import serving as reference_serving
from inspect_app.storage.tables import Inspection
from inspect_app.timeutil import as_utc

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["inspections"])


class InspectionPublic(BaseModel):
    """An inspection as the line and its users see it."""

    inspection_id: int
    line: str
    decision: Decision = Field(
        description="pass | fail, or pending while a human decides; poll "
        "GET /api/v1/inspections/{id} until it is pass or fail"
    )
    decided_by: DecidedBy | None = Field(description="model | human; null while pending")
    decided_at: datetime | None
    route: Route = Field(
        description="auto: the model decided; review: a human decides; "
        "audit: the model decided and a human checks it blind afterwards"
    )
    level: AutomationLevel = Field(description="the line's automation level when it arrived")
    capture_id: str | None
    part_serial: str | None
    captured_at: datetime | None
    received_at: datetime
    source: str
    image_sha256: str
    image_format: str
    width: int
    height: int
    # The model's output, only where the line's level shows it (assist, partial reviews and
    # auto-decisions); null at human_only and shadow and for audits, which are blind.
    model_version: str | None = None
    predicted_class: str | None = None
    confidence: float | None = Field(
        default=None, description="calibrated probability of predicted_class"
    )
    probabilities: dict[str, float] | None = None
    # The image gate's refusal: the model was not allowed to decide this frame (blank,
    # exposure, focus, size, or unlike the model's training images); a human decides it.
    gate_codes: list[str] = Field(
        default_factory=list,
        description="why the image gate kept the model from deciding (empty: it did not)",
    )
    gate_reason: str | None = Field(default=None, description="the same, in words")


def inspection_public(row: Inspection) -> InspectionPublic:
    assert row.id is not None
    public = InspectionPublic(
        inspection_id=row.id,
        line=row.line_id,
        decision=Decision(row.decision),
        decided_by=DecidedBy(row.decided_by) if row.decided_by else None,
        decided_at=as_utc(row.decided_at),
        route=Route(row.route),
        level=AutomationLevel(row.level),
        capture_id=row.capture_id,
        part_serial=row.part_serial,
        captured_at=as_utc(row.captured_at),
        received_at=as_utc(row.received_at) or row.received_at,
        source=row.source,
        image_sha256=row.image_sha256,
        image_format=row.image_format,
        width=row.width,
        height=row.height,
        gate_codes=row.gate_codes.split(",") if row.gate_codes else [],
        gate_reason=row.gate_reason,
    )
    if row.show_model:
        public.model_version = row.model_version
        public.predicted_class = row.predicted_class
        public.confidence = row.confidence
        public.probabilities = row.probabilities
    return public


def _inspection(session: SessionDep, inspection_id: int) -> Inspection:
    row = session.get(Inspection, inspection_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no inspection {inspection_id}")
    return row


def get_readable_inspection(
    inspection_id: RowId,
    session: SessionDep,
    camera_key: Annotated[str | None, Depends(camera_key_scheme)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    now: NowDep,
    ttl: TokenTtl,
) -> Inspection:
    """The inspection, for the camera key of its line or for any signed-in user."""
    if not camera_key and credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a camera key (X-Api-Key) or a bearer token (Authorization) is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if camera_key:
        camera_line = get_camera_line(session.get_bind(), camera_key)  # 401 without a valid key
        row = _inspection(session, inspection_id)
        if row.line_id != camera_line:
            logger.warning(
                "403: a camera key of line %s asked for inspection %s of line %s",
                camera_line,
                inspection_id,
                row.line_id,
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this camera key belongs to line {camera_line!r}; inspection "
                f"{inspection_id} is on line {row.line_id!r}",
            )
        return row
    authenticate_bearer(session, credentials, now=now, ttl=ttl)  # 401 unless a valid token
    return _inspection(session, inspection_id)


class InspectionList(BaseModel):
    items: list[inspection_service.InspectionRecord]
    next_cursor: int | None = Field(
        description="pass as `after` for the next page; null: this was the last page"
    )


@router.get(
    "/inspections",
    response_model=InspectionList,
    summary="Inspections, filtered, oldest first, a page at a time",
    description="Supervisors. Keyset pagination on the inspection id: follow `next_cursor` "
    "with `after` until it is null; parts received meanwhile come in later pages, none is "
    "skipped or repeated. Every part's model output is included.",
    responses=error_responses(
        401,
        403,
        404,
        422,
        _404="the line filtered on does not exist",
        _422="invalid input, or until is not after since",
    ),
)
def list_inspections(
    session: SessionDep,
    user: SupervisorUser,
    line: str | None = Query(default=None, pattern=LINE_ID_PATTERN, description="a line id"),
    since: ClientTime | None = time_query("received at or after"),
    until: ClientTime | None = time_query("received before (after since)"),
    decision: Decision | None = Query(default=None, description="pass | fail | pending"),
    route: Route | None = Query(default=None, description="auto | review | audit"),
    model_version: str | None = Query(
        default=None, max_length=MAX_TAG_CHARS, pattern=TEXT_PATTERN, description="exact version"
    ),
    labeled: bool | None = Query(
        default=None, description="true: with a standing human label; false: without one"
    ),
    after: int | None = Query(
        default=None, ge=1, le=DB_ID_MAX, description="the previous page's next_cursor"
    ),
    limit: int = Query(
        default=inspection_service.DEFAULT_PAGE,
        ge=1,
        le=inspection_service.MAX_PAGE,
        description=f"parts per page, 1 to {inspection_service.MAX_PAGE}",
    ),
) -> InspectionList:
    filters = inspection_service.InspectionFilter(
        line_id=line,
        since=since,
        until=until,
        decision=decision,
        route=route,
        model_version=model_version,
        labeled=labeled,
    )
    try:
        page = inspection_service.list_inspections(session, filters, after=after, limit=limit)
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except inspection_service.InvalidQuery as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    return InspectionList(items=page.items, next_cursor=page.next_cursor)


@router.get(
    "/inspections/{inspection_id}",
    response_model=InspectionPublic,
    summary="An inspection's current state",
    description="A pending decision becomes pass or fail when a human labels it. "
    "Readable with the camera key (X-Api-Key) of the inspection's line, or with any "
    "user's bearer token.",
    responses=error_responses(
        401,
        403,
        404,
        422,
        _401="no valid camera key or bearer token",
        _403="the camera key belongs to another line",
        _404="no such inspection",
    ),
)
def read_inspection(
    row: Annotated[Inspection, Depends(get_readable_inspection)],
) -> InspectionPublic:
    return inspection_public(row)


@router.get(
    "/inspections/{inspection_id}/image",
    summary="The image bytes the camera sent",
    description="Exactly the stored bytes (JPEG, PNG or BMP); inspectors and up. An image "
    "removed under the plant's retention policy answers 410; the inspection stays readable.",
    response_class=Response,
    responses={
        200: {
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in MEDIA_TYPES.values()
            }
        },
        **error_responses(
            401,
            403,
            404,
            410,
            422,
            _404="no such inspection, or its image is lost",
            _410="the image was removed under the plant's retention policy",
        ),
    },
)
def read_inspection_image(
    inspection_id: RowId, session: SessionDep, user: InspectorUser, store: ImageStoreDep
) -> Response:
    # a reference part is shown by a number of its own (inspect_app.reference.serving): to
    # the inspector it was served to, that number is its image, as a live part's id is
    served = reference_serving.for_part(session, user, inspection_id)
    row = (
        session.get(Inspection, served.inspection_id)
        if served is not None
        else _inspection(session, inspection_id)
    )
    assert row is not None
    try:
        data = store.get(row.image_sha256)
    except FileNotFoundError:
        if row.image_removed_at is not None:  # the same bytes may be back for a later part
            raise HTTPException(
                status.HTTP_410_GONE,
                detail=f"the image of inspection {inspection_id} was removed on "
                f"{as_utc(row.image_removed_at):%Y-%m-%d} under the plant's retention policy",
            ) from None
        # An acknowledged inspection without its image is data loss: say so loudly.
        logger.error("inspection %s: image %s is missing from the store", row.id, row.image_sha256)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"the image of inspection {inspection_id} is missing from the store",
        ) from None
    return Response(
        content=data,
        media_type=MEDIA_TYPES.get(row.image_format, "application/octet-stream"),
        headers={"ETag": f'"{row.image_sha256}"', "Cache-Control": "private, max-age=86400"},
    )

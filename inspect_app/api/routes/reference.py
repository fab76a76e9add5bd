"""Known-answer parts over HTTP: supervisors mark inspections as reference parts, set a
line's serving rate, and read each inspector's accuracy on them (`inspect_app.reference`).

Serving itself has no route: reference parts come out of ``POST /api/v1/reviews/claim``
like any task, which is the point.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import AfterValidator, BaseModel, Field

from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    DB_ID_MAX,
    LINE_ID_PATTERN,
    MAX_REASON_CHARS,
    REQUIRED_TEXT_PATTERN,
    ClientTime,
    JsonInt,
    LineIdPath,
    RowId,
    time_query,
)
from inspect_app.domain import DefectClass
from inspect_app.reference import service
from inspect_app.reference.accuracy import MIN_ACCURACY, MIN_ANSWERS
from inspect_app.storage.tables import ReferencePart

router = APIRouter(prefix="/api/v1", tags=["reference parts"])


def _reason_is_given(value: str) -> str:
    if not value.strip():
        raise ValueError("a reason is required: it goes into the audit trail")
    return value.strip()


Reason = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        pattern=REQUIRED_TEXT_PATTERN,
        description="why; recorded in the audit trail (not blank)",
    ),
    AfterValidator(_reason_is_given),
]


class ReferencePartIn(BaseModel):
    inspection_id: JsonInt = Field(ge=1, le=DB_ID_MAX)
    label: DefectClass = Field(description="the verified class of the part")
    reason: Reason


class ReferencePartPublic(BaseModel):
    reference_id: int
    inspection_id: int
    line_id: str
    label: DefectClass
    reason: str
    created_by: str
    created_at: datetime
    removed_at: datetime | None

    @classmethod
    def of(cls, part: ReferencePart) -> ReferencePartPublic:
        assert part.id is not None
        return cls(
            reference_id=part.id,
            inspection_id=part.inspection_id,
            line_id=part.line_id,
            label=DefectClass(part.label),
            reason=part.reason,
            created_by=part.created_by,
            created_at=part.created_at,
            removed_at=part.removed_at,
        )


class ReferenceSettingsIn(BaseModel):
    reference_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=service.MAX_REFERENCE_RATE,
        strict=True,
        description="the chance a claim on the line serves a reference part instead; omit to keep",
    )
    gate_excludes_flagged: bool | None = Field(
        default=None,
        strict=True,
        description="the evidence gate leaves flagged inspectors' labels out; omit to keep",
    )
    reason: Reason


class ReferenceSettingsPublic(BaseModel):
    line_id: str
    reference_rate: float
    gate_excludes_flagged: bool


class AccuracyPublic(BaseModel):
    min_accuracy: float  # flagged: the 95% upper bound of binary accuracy below this ...
    min_answers: int  # ... after at least this many answers
    inspectors: list[dict[str, Any]]  # accuracy.InspectorAccuracy.as_dict() each
    # all inspectors together, beside the model's escape and false-reject bounds
    missed_defects: dict[str, Any]
    false_rejects: dict[str, Any]


def _http(exc: service.ReferenceError) -> HTTPException:
    if isinstance(exc, service.ReferenceNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))
    if isinstance(exc, service.ReferenceExists):
        return HTTPException(status.HTTP_409_CONFLICT, detail=str(exc))
    if isinstance(exc, service.NotPermitted):
        return HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc))
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc))


@router.post(
    "/reference-parts",
    response_model=ReferencePartPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(
        401,
        403,
        404,
        409,
        422,
        _404="no such inspection",
        _409="the inspection is already a reference part",
        _422="invalid input, or the part's image was removed",
    ),
)
def add_reference_part(
    body: ReferencePartIn, session: SessionDep, user: SupervisorUser
) -> ReferencePartPublic:
    """Mark an inspection as a reference part with its verified label."""
    try:
        part = service.add_reference(
            session, body.inspection_id, body.label.value, reason=body.reason, actor=user
        )
    except service.ReferenceError as exc:
        raise _http(exc) from exc
    return ReferencePartPublic.of(part)


@router.get(
    "/reference-parts",
    response_model=list[ReferencePartPublic],
    responses=error_responses(401, 403, 422),
)
def list_reference_parts(
    session: SessionDep,
    _user: SupervisorUser,
    line: str | None = Query(default=None, pattern=LINE_ID_PATTERN, description="only this line"),
    include_removed: bool = Query(default=False, description="also those no longer served"),
) -> list[ReferencePartPublic]:
    parts = service.list_references(session, line_id=line, include_removed=include_removed)
    return [ReferencePartPublic.of(p) for p in parts]


@router.delete(
    "/reference-parts/{reference_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 403, 404, 422, _404="no such reference part"),
)
def remove_reference_part(
    reference_id: RowId,
    session: SessionDep,
    user: SupervisorUser,
    reason: Annotated[
        str,
        Query(min_length=1, max_length=MAX_REASON_CHARS, pattern=REQUIRED_TEXT_PATTERN),
    ],
) -> Response:
    """Stop serving it; the answers already given still count."""
    try:
        service.remove_reference(session, reference_id, reason=reason, actor=user)
    except service.ReferenceError as exc:
        raise _http(exc) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/lines/{line}/reference-settings",
    response_model=ReferenceSettingsPublic,
    responses=error_responses(
        401, 403, 404, 422, _404="no such line", _422="invalid input, or nothing to change"
    ),
)
def set_reference_settings(
    line: LineIdPath, body: ReferenceSettingsIn, session: SessionDep, user: SupervisorUser
) -> ReferenceSettingsPublic:
    """A line's known-answer settings: the serving rate and whether the gate leaves flagged
    inspectors out."""
    try:
        changed = service.set_reference_settings(
            session,
            line,
            reference_rate=body.reference_rate,
            gate_excludes_flagged=body.gate_excludes_flagged,
            reason=body.reason,
            actor=user,
        )
    except service.ReferenceError as exc:
        raise _http(exc) from exc
    return ReferenceSettingsPublic(
        line_id=changed.id,
        reference_rate=changed.reference_rate,
        gate_excludes_flagged=changed.gate_excludes_flagged,
    )


@router.get(
    "/inspectors/accuracy",
    response_model=AccuracyPublic,
    responses=error_responses(401, 403, 422),
)
def inspectors_accuracy(
    session: SessionDep,
    _user: SupervisorUser,
    since: ClientTime | None = time_query("only answers given since then"),
) -> AccuracyPublic:
    """Each inspector's accuracy on reference parts, binary and per class, with 95%
    Clopper-Pearson intervals, and whether they are flagged."""
    figures = service.inspector_accuracies(session, since=since)
    flagged = set(service.flagged_users(session).values())
    missed, false_rejects = service.pooled_inspector_errors(session, since=since)

    def plain(r: Any) -> dict[str, Any]:
        return {"count": r.count, "n": r.n, "rate": r.rate, "lower": r.lower, "upper": r.upper}

    return AccuracyPublic(
        min_accuracy=MIN_ACCURACY,
        min_answers=MIN_ANSWERS,
        inspectors=[f.as_dict() | {"flagged": f.inspector in flagged} for f in figures],
        missed_defects=plain(missed),
        false_rejects=plain(false_rejects),
    )

"""Evidence: how far the model can be trusted on a line, and which thresholds it has earned.

Supervisors only (design section 6: evidence). The figures come from
`inspect_app.agreement` (which labels count) and `inspect_app.evidence` (the statistics);
this module only reads the query and translates errors to HTTP.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from sqlmodel import Session

from inspect_app import lines as line_service
from inspect_app.agreement import AgreementReport, agreement_report
from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    MAX_TAG_CHARS,
    TEXT_PATTERN,
    THRESHOLD_DESCRIPTION,
    ClientTime,
    LineIdPath,
    ThresholdQuery,
    time_query,
)
from inspect_app.automation import (
    LineRecommendation,
    LineWhatIf,
    recommend_for_line,
    what_if_for_line,
)
from inspect_app.domain import NEVER, AutomationLevel
from inspect_app.storage.tables import Line

router = APIRouter(prefix="/api/v1/lines", tags=["evidence"])

_ERRORS = error_responses(401, 403, 404, 422, _404="no such line")

_INCLUDE_SHOWN = Query(
    default=False,
    description="also count labels given with the model's answer shown (assist); they are "
    "swayed towards the model, so the gate never counts them",
)


def _line_or_404(session: Session, line_id: str) -> Line:
    try:
        return line_service.get_line(session, line_id)
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


@router.get(
    "/{line}/agreement",
    response_model=AgreementReport,
    responses=error_responses(
        401, 403, 404, 422, _404="no such line", _422="invalid input, or until is not after since"
    ),
)
def read_agreement(
    line: LineIdPath,
    session: SessionDep,
    user: SupervisorUser,
    model_version: str | None = Query(
        default=None,
        max_length=MAX_TAG_CHARS,
        pattern=TEXT_PATTERN,
        description="default: the model of the line's latest prediction",
    ),
    since: ClientTime | None = time_query("inspections received from"),
    until: ClientTime | None = time_query("... up to (not including); after since"),
) -> AgreementReport:
    """Model against humans: confusion matrices, accuracy, kappa, recall, escape and
    false-reject rates with 95% intervals, blind and shown labels apart, per inspector."""
    _line_or_404(session, line)
    try:
        return agreement_report(
            session, line, model_version=model_version, since=since, until=until
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc


@router.get("/{line}/recommendation", response_model=LineRecommendation, responses=_ERRORS)
def read_recommendation(
    line: LineIdPath,
    session: SessionDep,
    user: SupervisorUser,
    include_shown: bool = _INCLUDE_SHOWN,
) -> LineRecommendation:
    """The thresholds with the most coverage that pass the gate (fixed-sequence tests from
    strictest to loosest), the gate at the line's current thresholds, the coverage-versus-risk
    curves for both sides, and the live audit figures at partial/full."""
    return recommend_for_line(session, _line_or_404(session, line), include_shown=include_shown)


@router.get("/{line}/what-if", response_model=LineWhatIf, responses=_ERRORS)
def read_what_if(
    line: LineIdPath,
    session: SessionDep,
    user: SupervisorUser,
    # Annotated, not a default: FastAPI keeps the validator only in this form.
    pass_threshold: Annotated[
        ThresholdQuery, Query(description=f"auto-pass when P(ok) >= this: {THRESHOLD_DESCRIPTION}")
    ],
    fail_threshold: Annotated[
        ThresholdQuery,
        Query(description=f"auto-fail when P(defect) >= this: {THRESHOLD_DESCRIPTION}"),
    ],
    # Only the levels where the model decides parts: at the others a what-if has no answer.
    level: Literal[AutomationLevel.PARTIAL, AutomationLevel.FULL] = Query(
        default=AutomationLevel.PARTIAL, description="partial, or full (decides at P(ok) 0.5)"
    ),
    include_shown: bool = _INCLUDE_SHOWN,
) -> LineWhatIf:
    """Which labeled parts a policy would have auto-passed and auto-failed, what humans said
    about them, and whether the gate would let the line go there."""
    return what_if_for_line(
        session,
        _line_or_404(session, line),
        level=AutomationLevel(level),
        pass_threshold=None if pass_threshold == NEVER else pass_threshold,
        fail_threshold=None if fail_threshold == NEVER else fail_threshold,
        include_shown=include_shown,
    )

"""A line's deployment over HTTP: which version decides its parts, and the rollout of a
candidate (shadow, canary, blue/green, A/B, bandit).

Supervisors and admins (design section 9). The rules live in `inspect_app.rollout.deployments`
and apply to the API, the CLI and the UI alike: a candidate must be registered and loadable
(this process loads and warms it before the change commits), at partial or full a candidate
may decide parts only after passing the line's gate on its own shadow evidence, a canary step
advances on evidence, and a rolled-back candidate stays quarantined until re-armed. Every
change is an event with who, why and the evidence (`GET /api/v1/lines/{line}/events`).

This module translates the outcomes to HTTP: 200, 403, 404 (no line), 409 with the figures
when the evidence or a failed load refuses, 422 for a request the line's state cannot take.
After a change this process follows it at once (`Rollout.refresh`); the others follow the
database within a poll (about a second).

The handlers are plain functions: FastAPI runs them in its thread pool, where loading a
model does not stall the event loop the cameras' images arrive on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import THRESHOLD_DESCRIPTION, JsonInt, LineIdPath, ThresholdIn
from inspect_app.api.pipeline_deps import RolloutDep
from inspect_app.api.routes.lines import Reason
from inspect_app.api.routes.models import VersionText
from inspect_app.rollout import deployments as rollout_service
from inspect_app.rollout.policy import Mode
from inspect_app.rollout.registry import RegistryError, VersionNotFound
from inspect_app.rollout.serving import Rollout
from inspect_app.timeutil import as_utc

router = APIRouter(prefix="/api/v1/lines", tags=["deployments"])

MAX_STEPS = 20
MAX_STEP_MIN_LABELS = 1_000_000  # as `rollout.deployments.set_deployment` checks it

Share = Annotated[float, Field(strict=True, gt=0.0, le=1.0)]


class DeploymentPublic(BaseModel):
    line_id: str
    champion: str = Field(description="the version that decides the line's parts")
    candidate: str | None = Field(description="the version in rollout, if any")
    mode: Mode
    share: float = Field(description="the share of decisions the candidate takes now")
    shadow_share: float = Field(description="shadow: the share of parts the candidate runs on")
    steps: list[float] = Field(description="canary: the candidate's shares, step by step")
    step: int = Field(description="canary: the current step (0 is the first)")
    step_min_labels: int = Field(
        description="canary: blind labels of the candidate's decisions a step needs to pass"
    )
    step_started_at: datetime | None
    candidate_audit_rate: float = Field(description="audit rate of parts the candidate decides")
    exploration: float = Field(description="bandit: the exploration floor")
    quarantined: bool = Field(
        description="rolled back: the candidate decides nothing until a supervisor re-arms it"
    )
    quarantine_reason: str | None
    revision: int = Field(description="0: no change yet, the service's configured model")
    updated_by: str
    updated_at: datetime
    bandit: dict[str, dict[str, int]] = Field(
        description="bandit: each version's rewards (successes, failures)"
    )
    candidate_thresholds: dict[str, Any] | None = Field(
        default=None,
        description="the thresholds the candidate decides its parts at while it rolls out "
        "(pass_threshold, fail_threshold, and their source: recommended on its own shadow "
        "evidence, or stated by a supervisor); null: the line's. They become the line's at "
        "finalize; a rollback drops them",
    )
    comparison: dict[str, Any] | None = Field(
        description="with a candidate: champion and candidate on the same blind-labeled parts "
        "(paired McNemar test, each version's escape and false-reject bounds and its gate at "
        "the line's thresholds, the candidate's gate at its own (`candidate_own`), and the "
        "canary step's verdict)"
    )


class DeploymentChange(BaseModel):
    """What to run on the line; every field omitted (or null) but `mode` and `reason` keeps
    the line's current value. No candidate with mode `none` ends a rollout."""

    candidate: VersionText | None = Field(
        default=None, description="a registered version; null: the champion alone"
    )
    mode: Mode = Field(
        description="none, shadow (hidden, never decides), canary (steps), blue_green (all "
        "parts, champion kept loaded), ab (fixed split, sticky by part serial), bandit"
    )
    share: float | None = Field(
        default=None,
        strict=True,
        gt=0.0,
        lt=1.0,
        description="ab: the candidate's share of parts (default 0.5); other modes ignore it",
    )
    shadow_share: Share | None = Field(
        default=None, description="shadow: the share of parts the candidate also runs on"
    )
    steps: list[Share] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_STEPS,
        description="canary: increasing shares ending at 1, e.g. [0.05, 0.25, 0.5, 1]",
    )
    step_min_labels: JsonInt | None = Field(
        default=None,
        ge=1,
        le=MAX_STEP_MIN_LABELS,
        description="canary: blind labels of the candidate's decisions each step needs",
    )
    candidate_audit_rate: float | None = Field(
        default=None,
        strict=True,
        ge=0.0,
        le=1.0,
        description="audit rate of parts the candidate decides (higher: evidence sooner)",
    )
    exploration: float | None = Field(
        default=None,
        strict=True,
        ge=0.0,
        le=1.0,
        description="bandit: the exploration floor, shared between the two versions",
    )
    pass_threshold: ThresholdIn | None = Field(
        default=None,
        description="a candidate that decides parts: it auto-passes when P(ok) >= this "
        f"({THRESHOLD_DESCRIPTION}); with fail_threshold, or neither: recommended on its own "
        "shadow evidence (or kept, for the candidate already deciding)",
    )
    fail_threshold: ThresholdIn | None = Field(
        default=None,
        description="a candidate that decides parts: it auto-fails when P(defect) >= this "
        f"({THRESHOLD_DESCRIPTION})",
    )
    reason: Reason


class DeploymentAction(BaseModel):
    reason: Reason


class PromoteAction(DeploymentAction):
    """Leaving shadow the candidate gets thresholds of its own: both omitted, recommended on
    its own shadow evidence; both given, the supervisor's (gated all the same)."""

    pass_threshold: ThresholdIn | None = Field(
        default=None,
        description=f"the candidate auto-passes when P(ok) >= this: {THRESHOLD_DESCRIPTION}",
        examples=[0.99, "never"],
    )
    fail_threshold: ThresholdIn | None = Field(
        default=None,
        description=f"the candidate auto-fails when P(defect) >= this: {THRESHOLD_DESCRIPTION}",
        examples=[0.98, "never"],
    )


class RolloutRefusal(BaseModel):
    detail: str
    evidence: dict[str, Any] = Field(description="the figures the refusal rests on")


_ERRORS = error_responses(
    401,
    403,
    404,
    413,
    422,
    _403="not a supervisor or admin",
    _404="no such line",
    _422="invalid input, or a change the line's deployment cannot take now (the reason says)",
)
_CHANGES = {
    **_ERRORS,
    409: {
        "model": RolloutRefusal,
        "description": "refused on the evidence (the figures that fell short), because the "
        "candidate is quarantined, because it failed to load, or because the deployment's "
        "state does not allow the change now (`evidence.deployment`: its figures)",
    },
}


def _public(session: Session, line_id: str, default_version: str) -> DeploymentPublic:
    shown = rollout_service.view(session, line_id, default_version)
    return DeploymentPublic(
        line_id=shown.line_id,
        champion=shown.champion,
        candidate=shown.candidate,
        mode=shown.mode,
        share=shown.share,
        shadow_share=shown.shadow_share,
        steps=shown.steps,
        step=shown.step,
        step_min_labels=shown.step_min_labels,
        step_started_at=as_utc(shown.step_started_at),
        candidate_audit_rate=shown.candidate_audit_rate,
        exploration=shown.exploration,
        quarantined=shown.quarantined,
        quarantine_reason=shown.quarantine_reason,
        revision=shown.revision,
        updated_by=shown.updated_by,
        updated_at=as_utc(shown.updated_at) or shown.updated_at,
        bandit=shown.bandit,
        candidate_thresholds=shown.candidate_thresholds,
        comparison=rollout_service.comparison(session, line_id, default_version),
    )


def _changed(
    session: Session,
    line: str,
    rollout: Rollout,
    change: Callable[[], object],
    *,
    candidate: str | None = None,
) -> DeploymentPublic | JSONResponse:
    """Run a use case; its refusals as HTTP, its success followed by this process at once."""
    try:
        change()
    except rollout_service.RolloutRefused as exc:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content=RolloutRefusal(detail=str(exc), evidence=exc.evidence).model_dump(mode="json"),
        )
    except rollout_service.DeploymentConflict as exc:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content=RolloutRefusal(detail=str(exc), evidence={"deployment": exc.state}).model_dump(
                mode="json"
            ),
        )
    except rollout_service.LineMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    except rollout_service.DeploymentNotPermitted as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=str(exc)) from exc
    except VersionNotFound as exc:
        detail = f"candidate {candidate} is not registered" if candidate else str(exc)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail) from exc
    except (rollout_service.InvalidDeployment, RegistryError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    session.expire_all()  # the use case committed; read the row as it now is
    rollout.refresh()
    return _public(session, line, rollout.default_version)


def _thresholds_given(
    pass_threshold: float | str | None, fail_threshold: float | str | None
) -> tuple[float | str, float | str] | None:
    """Both a candidate's thresholds, or neither (None: recommended on its evidence)."""
    if (pass_threshold is None) != (fail_threshold is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail='give both pass_threshold and fail_threshold ("never" for a side that '
            "never decides), or neither for the thresholds recommended on its evidence",
        )
    if pass_threshold is None or fail_threshold is None:
        return None
    return pass_threshold, fail_threshold


@router.get(
    "/{line}/deployment",
    response_model=DeploymentPublic,
    responses=error_responses(401, 403, 404, 422, _404="no such line"),
)
def read_deployment(
    line: LineIdPath, session: SessionDep, user: SupervisorUser, rollout: RolloutDep
) -> DeploymentPublic:
    """The line's champion, candidate and rollout, with the two compared when there is a
    candidate. A line never changed runs the service's configured model (revision 0)."""
    try:
        return _public(session, line, rollout.default_version)
    except rollout_service.LineMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


@router.put("/{line}/deployment", response_model=DeploymentPublic, responses=_CHANGES)
def change_deployment(
    line: LineIdPath,
    change: DeploymentChange,
    session: SessionDep,
    user: SupervisorUser,
    rollout: RolloutDep,
) -> DeploymentPublic | JSONResponse:
    """Start, change or end a rollout (supervisor or admin). The candidate is loaded and
    warmed before the change commits; a load that fails refuses it (409). At partial or full
    a mode in which the candidate decides parts (canary, blue_green, ab, bandit) needs it to
    pass the line's gate on its own shadow evidence first (409 with the figures otherwise), at
    its own thresholds: the ones given, else recommended on that evidence."""
    given = _thresholds_given(change.pass_threshold, change.fail_threshold)
    request = rollout_service.DeploymentRequest(
        candidate=change.candidate,
        mode=change.mode,
        share=change.share,
        shadow_share=change.shadow_share,
        steps=change.steps,
        step_min_labels=change.step_min_labels,
        candidate_audit_rate=change.candidate_audit_rate,
        exploration=change.exploration,
        thresholds=given,
    )
    return _changed(
        session,
        line,
        rollout,
        lambda: rollout_service.set_deployment(
            session,
            line,
            request,
            actor=user,
            reason=change.reason,
            default_version=rollout.default_version,
            warm=rollout.warm,
        ),
        candidate=change.candidate,
    )


@router.post("/{line}/deployment/promote", response_model=DeploymentPublic, responses=_CHANGES)
def promote_candidate(
    line: LineIdPath,
    action: PromoteAction,
    session: SessionDep,
    user: SupervisorUser,
    rollout: RolloutDep,
) -> DeploymentPublic | JSONResponse:
    """Shadow -> canary at its first step, or a canary to its next step once the current step
    passed on the candidate's blind labels (409 with the step's figures otherwise).

    Leaving shadow the candidate decides at thresholds of its own, recommended on its own
    shadow evidence or given here (both or neither, 422 otherwise); at partial or full it
    must pass the line's gate at them (409 with the figures)."""
    thresholds = _thresholds_given(action.pass_threshold, action.fail_threshold)
    return _changed(
        session,
        line,
        rollout,
        lambda: rollout_service.promote(
            session,
            line,
            actor=user,
            reason=action.reason,
            default_version=rollout.default_version,
            warm=rollout.warm,
            thresholds=thresholds,
        ),
    )


@router.post("/{line}/deployment/rollback", response_model=DeploymentPublic, responses=_CHANGES)
def roll_back_candidate(
    line: LineIdPath,
    action: DeploymentAction,
    session: SessionDep,
    user: SupervisorUser,
    rollout: RolloutDep,
) -> DeploymentPublic | JSONResponse:
    """The champion takes every part from the next image on; the candidate keeps running
    hidden (evidence keeps coming) and is quarantined until re-armed."""
    return _changed(
        session,
        line,
        rollout,
        lambda: rollout_service.rollback_by(session, line, actor=user, reason=action.reason),
    )


@router.post("/{line}/deployment/rearm", response_model=DeploymentPublic, responses=_CHANGES)
def rearm_candidate(
    line: LineIdPath,
    action: DeploymentAction,
    session: SessionDep,
    user: SupervisorUser,
    rollout: RolloutDep,
) -> DeploymentPublic | JSONResponse:
    """Lift a quarantine (a canary starts again at its first step)."""
    return _changed(
        session,
        line,
        rollout,
        lambda: rollout_service.rearm(
            session,
            line,
            actor=user,
            reason=action.reason,
            default_version=rollout.default_version,
        ),
    )


@router.post("/{line}/deployment/finalize", response_model=DeploymentPublic, responses=_CHANGES)
def finalize_candidate(
    line: LineIdPath,
    action: DeploymentAction,
    session: SessionDep,
    user: SupervisorUser,
    rollout: RolloutDep,
) -> DeploymentPublic | JSONResponse:
    """The candidate becomes the line's champion and the rollout ends (at partial or full,
    only once it passed the line's gate on its own evidence)."""
    return _changed(
        session,
        line,
        rollout,
        lambda: rollout_service.finalize(
            session,
            line,
            actor=user,
            reason=action.reason,
            default_version=rollout.default_version,
            warm=rollout.warm,
        ),
    )

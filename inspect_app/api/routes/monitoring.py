"""Monitoring: what the line monitor saw, the alarms that watch it, and the one way to edit a
rule.

Supervisors only (design section 6). The figures come from `inspect_app.monitoring.queries`
(the same functions the Monitoring page calls); an edit goes through
`inspect_app.monitoring.service.set_line_rule`, which validates it against the whole rule
set and records who and why. This module translates outcomes to HTTP: 404 for a line or
rule that does not exist, 422 for an edit that would leave the rule unusable (the rule's
own message says what to change).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from sqlmodel import Session

from inspect_app import lines as line_service
from inspect_app.agreement import current_model_version
from inspect_app.api.deps import SessionDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import (
    MAX_REASON_CHARS,
    REQUIRED_TEXT_PATTERN,
    ClientTime,
    LineIdPath,
    time_query,
)
from inspect_app.api.pipeline_deps import RolloutDep
from inspect_app.monitoring import queries
from inspect_app.monitoring.alarms import Action, AlarmRuleError, Severity
from inspect_app.monitoring.baseline import BaselineError, rebaseline
from inspect_app.monitoring.service import set_line_rule

router = APIRouter(prefix="/api/v1/lines", tags=["monitoring"])

RULE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"  # as `alarms.AlarmRule` names rules
# A rule's window is read from the database at every evaluation (every 10 parts): a window of
# a million parts would make each evaluation read them all.
MAX_WINDOW_PARTS = 10_000
MAX_HOLD = 10_000  # evaluations: about a week at one a minute
MAX_SECONDS = 7 * 24 * 3600.0

RuleNamePath = Annotated[
    str,
    Path(pattern=RULE_NAME_PATTERN, description="an alarm rule, e.g. gate_refusals_high"),
]

_READ_ERRORS = error_responses(401, 403, 404, 422, _404="no such line")

# Fields a client may leave out but never set to null: the rule needs a value there.
_NOT_NULL = (
    "threshold",
    "clear_threshold",
    "hold",
    "hold_seconds",
    "clear_hold",
    "clear_hold_seconds",
    "severity",
    "actions",
    "enabled",
    "description",
)


def _json_number(value: object) -> object:
    """A JSON number, not `true` or "12". JSON Schema counts 347.0 as an integer, so a whole
    number written with a point is one (pydantic's strict mode would refuse it)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


# Numbers as the schema says (strict: not `true`, not "0.5"), finite, within a field's bounds.
_NUMBER: dict[str, Any] = {"strict": True, "allow_inf_nan": False}
Level = Annotated[float, Field(ge=0.0, **_NUMBER)]
Count = Annotated[int, Field(ge=0, le=MAX_HOLD), BeforeValidator(_json_number)]
Seconds = Annotated[float, Field(ge=0.0, le=MAX_SECONDS, **_NUMBER)]
WindowParts = Annotated[int, Field(ge=1, le=MAX_WINDOW_PARTS), BeforeValidator(_json_number)]
WindowSeconds = Annotated[float, Field(gt=0.0, le=MAX_SECONDS, **_NUMBER)]
Share = Annotated[float, Field(gt=0.0, le=1.0, **_NUMBER)]
Actions = Annotated[list[Action], Field(max_length=len(Action))]


class AlarmRuleChanges(BaseModel):
    """The fields of one rule to change on one line; those left out keep their value.

    Each bound here is a field's own; whether the fields fit together (a threshold past its
    clear threshold, a share above 1, an audit rate without `raise_audit_rate`) is the rule's
    to say, with a 422 that names what to change.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    threshold: Level | SkipJsonSchema[None] = Field(
        default=None, description="fire when the value passes this"
    )
    clear_threshold: Level | SkipJsonSchema[None] = Field(
        default=None, description="clear once the value is back past this (the hysteresis)"
    )
    window_parts: WindowParts | None = Field(
        default=None, description="parts the metric is computed over; null: none"
    )
    window_seconds: WindowSeconds | None = Field(
        default=None, description="seconds the metric is computed over; null: none"
    )
    hold: Count | SkipJsonSchema[None] = Field(
        default=None, description="further evaluations the condition must last to fire"
    )
    hold_seconds: Seconds | SkipJsonSchema[None] = None
    clear_hold: Count | SkipJsonSchema[None] = Field(
        default=None, description="further evaluations the clear condition must last"
    )
    clear_hold_seconds: Seconds | SkipJsonSchema[None] = None
    severity: Severity | SkipJsonSchema[None] = None
    actions: Actions | SkipJsonSchema[None] = Field(
        default=None,
        description="what firing does; each at most once",
        json_schema_extra={"uniqueItems": True},
    )
    audit_rate: Share | None = Field(
        default=None, description="share audited while raise_audit_rate is among the actions"
    )
    enabled: Annotated[bool, Field(strict=True)] | SkipJsonSchema[None] = None
    description: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_REASON_CHARS,
                json_schema_extra={"pattern": REQUIRED_TEXT_PATTERN},
            ),
        ]
        | SkipJsonSchema[None]
    ) = None

    @model_validator(mode="after")
    def something_is_changed(self) -> AlarmRuleChanges:
        if not self.model_fields_set:
            raise ValueError("say what to change: at least one field")
        for name in _NOT_NULL:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null: leave it out to keep it")
        if self.actions is not None and len(set(self.actions)) != len(self.actions):
            raise ValueError("an action is listed twice")
        if self.description is not None and (
            not self.description.strip() or "\x00" in self.description
        ):
            raise ValueError("a description must say something (and contain no NUL)")
        return self

    def as_changes(self) -> dict[str, Any]:
        """Only the fields given, as plain JSON values (what the override row stores)."""
        return self.model_dump(mode="json", exclude_unset=True)


class AlarmRuleEdit(BaseModel):
    changes: AlarmRuleChanges
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="why; recorded in the audit trail (not blank)",
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


def _line_or_404(session: Session, line_id: str) -> None:
    try:
        line_service.get_line(session, line_id)
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc


@router.get("/{line}/monitoring", response_model=queries.MonitoringOverview, responses=_READ_ERRORS)
def read_monitoring(
    line: LineIdPath,
    session: SessionDep,
    user: SupervisorUser,
    since: ClientTime | None = time_query("only evaluations, events and parts from this time"),
    limit: int = Query(
        default=queries.SERIES_LIMIT, ge=1, le=5000, description="evaluations per series"
    ),
) -> queries.MonitoringOverview:
    """The monitored values over time, the alarms (rule, state) and their history, the
    actions they took, the latest drift reports (with the parts most responsible for an
    embedding drift), and the image gate's refusals with their counts by reason."""
    _line_or_404(session, line)
    return queries.monitoring_overview(session, line, since=since, limit=limit)


@router.get("/{line}/alarms", response_model=list[queries.LineAlarm], responses=_READ_ERRORS)
def read_alarms(
    line: LineIdPath, session: SessionDep, user: SupervisorUser
) -> list[queries.LineAlarm]:
    """Every alarm rule as it applies on the line (the shipped default with the line's
    edits) and its state: ok, pending, firing or resolved, since when, the last value."""
    _line_or_404(session, line)
    return queries.line_alarms(session, line)


@router.put(
    "/{line}/alarms/{rule}",
    response_model=queries.LineAlarm,
    responses=error_responses(
        401,
        403,
        404,
        413,
        422,
        _404="no such line or alarm rule",
        _422="invalid input, or an edit that leaves the rule unusable",
    ),
)
def edit_alarm(
    line: LineIdPath,
    rule: RuleNamePath,
    edit: AlarmRuleEdit,
    session: SessionDep,
    user: SupervisorUser,
) -> queries.LineAlarm:
    """Change one rule on one line (a threshold, a hold, its actions, whether it runs).
    The monitor uses it from its next evaluation; the edit is logged with who and why."""
    _line_or_404(session, line)
    if rule not in queries.rule_names(session, line):
        known = ", ".join(queries.rule_names(session, line))
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no alarm rule {rule!r} (known: {known})"
        )
    try:
        set_line_rule(
            session, line, rule, edit.changes.as_changes(), actor=user.name, reason=edit.reason
        )
    except AlarmRuleError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    session.commit()
    return queries.line_alarm(session, line, rule)


class BaselineRequest(BaseModel):
    since: ClientTime = Field(description="the window's first part received at or after this")
    until: ClientTime = Field(description="... and before this (after since)")
    reason: str = Field(
        min_length=1,
        max_length=MAX_REASON_CHARS,
        description="why this window is known good; recorded in the audit trail",
        json_schema_extra={"pattern": REQUIRED_TEXT_PATTERN},
    )


class BaselinePublic(BaseModel):
    line: str
    model_version: str
    since: datetime
    until: datetime
    parts: int
    metrics: list[str] = Field(description="input metrics the line's baseline now supplies")
    created_by: str
    reason: str


@router.post(
    "/{line}/monitoring/baseline",
    response_model=BaselinePublic,
    responses=error_responses(
        401,
        403,
        404,
        409,
        413,
        422,
        _404="no such line",
        _409="the line's model has no reference profile to re-baseline",
        _422="invalid input, or a window with too few usable parts",
    ),
)
def set_baseline(
    line: LineIdPath,
    body: BaselineRequest,
    session: SessionDep,
    user: SupervisorUser,
    rollout: RolloutDep,
) -> BaselinePublic:
    """Re-baseline the line's drift monitoring on a window of its own parts (at least 200
    usable ones of its current model): the input and embedding drift tests then compare the
    line with that window instead of the model's calibration images. The image gate keeps the
    model's own reference. Logged with who, why and the figures."""
    _line_or_404(session, line)
    version = current_model_version(session, line)
    loaded = rollout.pool.get(version) if version is not None else None
    if loaded is None or loaded.profile is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"line {line}'s model {version or '-'} has no reference profile loaded",
        )
    try:
        made = rebaseline(
            session,
            line,
            since=body.since,
            until=body.until,
            actor=user,
            reason=body.reason,
            profile=loaded.profile,
        )
    except BaselineError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    return BaselinePublic(
        line=made.line_id,
        model_version=made.model_version,
        since=made.window_since,
        until=made.window_until,
        parts=made.n_parts,
        metrics=sorted(made.metric_quantiles),
        created_by=made.created_by,
        reason=made.reason,
    )

"""The model registry over HTTP: the versions a line may run, and registering a new one.

Supervisors and admins (design section 6: the model is part of a line's settings). The rules
live in `inspect_app.rollout.registry`: a checkpoint is validated by the same loader the
service serves with, copied into the data folder under its content hash, and never changed
again. This module only translates its outcomes to HTTP: 201 (registered), 200 (this very
file was already registered: ``created: false``), 409 (the name is taken by other bytes),
422 (not a checkpoint this service can serve, with the loader's reason).

The checkpoint is named by a path on the server's disk, not uploaded: a model file is tens of
megabytes, and it is put on the server by whoever trained it (the request body limit is
64 KiB).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Response, status
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from sqlmodel import Session

from inspect_app.api.deps import SessionDep, SettingsDep, SupervisorUser
from inspect_app.api.errors import error_responses
from inspect_app.api.params import MAX_NOTE_CHARS, TEXT_PATTERN
from inspect_app.api.pipeline_deps import RolloutDep
from inspect_app.rollout.deployments import running_lines
from inspect_app.rollout.registry import (
    InvalidCheckpoint,
    RegistryError,
    VersionConflict,
    VersionNotFound,
    get_version,
    list_versions,
    register_model,
)
from inspect_app.storage.tables import ModelVersion
from inspect_app.timeutil import as_utc

router = APIRouter(prefix="/api/v1/models", tags=["models"])

MAX_VERSION_CHARS = 64  # ModelVersion.version's column
MAX_CHECKPOINT_PATH_CHARS = 4096  # PATH_MAX on Linux

VersionText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_VERSION_CHARS, pattern=TEXT_PATTERN),
]
VersionPath = Annotated[
    str,
    PathParam(
        min_length=1,
        max_length=MAX_VERSION_CHARS,
        pattern=TEXT_PATTERN,
        description="a registered version, e.g. defect-cnn-20240501-1a2b3c4d",
    ),
]


class LineRole(BaseModel):
    line_id: str
    role: str = Field(description="champion (decides) or candidate (in rollout)")


class ModelPublic(BaseModel):
    version: str
    sha256: str = Field(description="of the checkpoint file's bytes")
    architecture: dict[str, Any]
    class_names: list[str]
    temperature: float = Field(description="the calibration: softmax(logits / temperature)")
    metrics: dict[str, Any] = Field(description="the model card's figures")
    data_seed: int | None
    parent_version: str | None
    lineage: dict[str, Any] = Field(description="where it came from: data seed, source file")
    has_profile: bool = Field(
        description="a reference profile came with it (its image gate and drift reference)"
    )
    notes: str
    registered_by: str
    registered_at: datetime
    lines: list[LineRole] = Field(description="the lines that run it now, and in which role")


class ModelRegistered(ModelPublic):
    created: bool = Field(
        description="false: this very file was already registered, and that version is shown"
    )


class ModelRegistration(BaseModel):
    path: str = Field(
        min_length=1,
        max_length=MAX_CHECKPOINT_PATH_CHARS,
        pattern=TEXT_PATTERN,
        description="the checkpoint file on the server's disk (absolute, or relative to the "
        "service's working folder); its reference profile beside it is copied too",
        examples=["/srv/models/defect-cnn-20240501.pt"],
    )
    notes: str = Field(
        default="",
        max_length=MAX_NOTE_CHARS,
        pattern=TEXT_PATTERN,
        description="why this version exists (goes into the registry and the audit trail)",
    )
    parent_version: VersionText | None = Field(
        default=None,
        description="the registered version it was trained from (default: the model card's)",
    )


def lines_running(session: Session, default_version: str) -> dict[str, list[LineRole]]:
    return {
        version: [LineRole(line_id=line_id, role=role) for line_id, role in roles]
        for version, roles in running_lines(session, default_version).items()
    }


def public(row: ModelVersion, running: dict[str, list[LineRole]]) -> ModelPublic:
    return ModelPublic(
        version=row.version,
        sha256=row.sha256,
        architecture=row.architecture,
        class_names=[str(c) for c in row.class_names],
        temperature=row.temperature,
        metrics=row.metrics,
        data_seed=row.data_seed,
        parent_version=row.parent_version,
        lineage=row.lineage,
        has_profile=row.profile_sha256 is not None,
        notes=row.notes,
        registered_by=row.registered_by,
        registered_at=as_utc(row.registered_at) or row.registered_at,
        lines=running.get(row.version, []),
    )


@router.get("", response_model=list[ModelPublic], responses=error_responses(401, 403))
def read_models(
    session: SessionDep, user: SupervisorUser, rollout: RolloutDep
) -> list[ModelPublic]:
    """Every registered version, newest first, with the lines that run it."""
    running = lines_running(session, rollout.default_version)
    return [public(row, running) for row in list_versions(session)]


@router.get(
    "/{version}",
    response_model=ModelPublic,
    responses=error_responses(401, 403, 404, 422, _404="no such registered version"),
)
def read_model(
    version: VersionPath, session: SessionDep, user: SupervisorUser, rollout: RolloutDep
) -> ModelPublic:
    try:
        row = get_version(session, version)
    except VersionNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return public(row, lines_running(session, rollout.default_version))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelRegistered,
    responses={
        200: {"model": ModelRegistered, "description": "this very file was already registered"},
        201: {"description": "registered"},
        **error_responses(
            401,
            403,
            409,
            413,
            422,
            _409="the version name is already registered from a different file",
            _422="invalid input, or the file is not a checkpoint this service can serve (the "
            "reason says why: missing, unreadable, a bare state_dict, other classes), or the "
            "parent version is not registered",
        ),
    },
)
def register(
    registration: ModelRegistration,
    response: Response,
    session: SessionDep,
    user: SupervisorUser,
    settings: SettingsDep,
    rollout: RolloutDep,
) -> ModelRegistered:
    """Register a checkpoint on the server's disk as a model version (supervisor or admin).

    It is validated as the service would load it, copied into the registry under the hash of
    its bytes (with its reference profile), and recorded with who registered it. A version
    never changes; the same file registered again answers the existing version (200,
    ``created: false``). Registering runs nothing: a line runs it once a deployment names it
    (`PUT /api/v1/lines/{line}/deployment`)."""
    try:
        outcome = register_model(
            session,
            Path(registration.path),
            settings.data_dir,
            registered_by=user.name,
            notes=registration.notes,
            parent_version=registration.parent_version,
        )
    except VersionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    except (InvalidCheckpoint, RegistryError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    except OSError as exc:  # a name too long for the file system, a folder we may not read
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"cannot read {registration.path[:200]!r}: {exc.strerror or exc}",
        ) from exc
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    running = lines_running(session, rollout.default_version)
    return ModelRegistered(**public(outcome.version, running).model_dump(), created=outcome.created)

"""Request dependencies as type aliases, so handlers read like sentences:
``def claim(session: SessionDep, user: InspectorUser)``.

Access control is checked here, on the server, for every route: a bearer token names a
user, `require_role` compares roles (they nest: admin > supervisor > inspector), and a
camera key names exactly one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.accounts import line_for_camera_key, user_for_token
from inspect_app.domain import Role
from inspect_app.settings import Settings
from inspect_app.storage.tables import User

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False, description="A user's API token (`inspect-app users token`)"
)
camera_key_scheme = APIKeyHeader(
    name="X-Api-Key", auto_error=False, description="A camera key (`inspect-app cameras add`)"
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One session per request; service functions commit their own work before returning."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    user = user_for_token(session, credentials.credentials)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="the bearer token is unknown, revoked, or its user is deactivated",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(role: Role) -> Callable[[User], User]:
    """A dependency that lets through users whose role includes `role`, else 403."""

    def check_role(user: CurrentUser, request: Request) -> User:
        if not Role(user.role).may(role):
            logger.warning(
                "403: %s (%s) tried %s %s, which needs %s",
                user.name,
                user.role,
                request.method,
                request.url.path,
                role.value,
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this needs the {role.value} role; {user.name} is {user.role}",
            )
        return user

    return check_role


InspectorUser = Annotated[User, Depends(require_role(Role.INSPECTOR))]
SupervisorUser = Annotated[User, Depends(require_role(Role.SUPERVISOR))]
AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]


def get_camera_line(
    engine: EngineDep,
    key: Annotated[str | None, Depends(camera_key_scheme)],
) -> str:
    """The line the camera key in ``X-Api-Key`` belongs to, else 401.

    Uses its own short session: a request-scoped one would hold a pooled connection while
    the image is read and inspected, and a burst of cameras would then exhaust the pool.
    """
    if not key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="a camera key is required in X-Api-Key"
        )
    with Session(engine) as session:
        line_id = line_for_camera_key(session, key)
    if line_id is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="the camera key is unknown or revoked"
        )
    return line_id


CameraLine = Annotated[str, Depends(get_camera_line)]


def get_camera_for_path_line(line: str, camera_line: CameraLine) -> str:
    """For routes with a ``{line}`` path parameter: the key must belong to that line, else 403."""
    if camera_line != line:
        logger.warning("403: a camera key of line %s posted to line %s", camera_line, line)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this camera key belongs to line {camera_line!r}, not {line!r}",
        )
    return line


CameraForLine = Annotated[str, Depends(get_camera_for_path_line)]

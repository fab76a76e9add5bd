"""Request dependencies as type aliases, so handlers read like sentences:
``def claim(session: SessionDep, user: InspectorUser)``.

Access control is checked here, on the server, for every route: a bearer token names a
user, `require_role` compares roles (they nest: admin > supervisor > inspector), and a
camera key names exactly one line. Tokens are looked up in the database on every request;
camera keys (one per image, the hot path) through `inspect_app.lookups`, which reads the
database's change revision on every request and looks a key up again whenever any key or
line changed. Either way a revocation, an expiry or a deactivation made by any process (or
the CLI) refuses the very next request here.

The dependencies that only read ``app.state`` are ``async``: FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency per request for a dict read.

The time the checks use is ``app.state.clock`` when a test sets one (a callable returning
an aware UTC datetime), else the real clock: tests move it instead of sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app.accounts import TokenRefused, check_token
from inspect_app.api.params import LineIdPath
from inspect_app.domain import Role
from inspect_app.login_throttle import ThrottlePolicy
from inspect_app.lookups import line_lookups
from inspect_app.settings import Settings
from inspect_app.storage.tables import User
from inspect_app.timeutil import utcnow

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False, description="A user's API token (`inspect-app users token`)"
)
camera_key_scheme = APIKeyHeader(
    name="X-Api-Key", auto_error=False, description="A camera key (`inspect-app cameras add`)"
)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One session per request; service functions commit their own work before returning."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_now(request: Request) -> datetime:
    """This request's time: ``app.state.clock()`` where a test set one, else now."""
    clock: Callable[[], datetime] = getattr(request.app.state, "clock", utcnow)
    return clock()


def get_client_address(request: Request) -> str | None:
    """The client's IP address, for login throttling (behind a proxy, run uvicorn with
    ``--proxy-headers`` so this is the client's, not the proxy's)."""
    return request.client.host if request.client is not None else None


def get_throttle_policy(settings: Annotated[Settings, Depends(get_settings)]) -> ThrottlePolicy:
    return ThrottlePolicy.from_settings(settings)


def get_token_ttl(settings: Annotated[Settings, Depends(get_settings)]) -> timedelta:
    return timedelta(hours=settings.token_ttl_hours)


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
NowDep = Annotated[datetime, Depends(get_now)]
ClientAddress = Annotated[str | None, Depends(get_client_address)]
ThrottlePolicyDep = Annotated[ThrottlePolicy, Depends(get_throttle_policy)]
TokenTtl = Annotated[timedelta, Depends(get_token_ttl)]


@dataclass(frozen=True)
class Authenticated:
    """Who a request's bearer token names, and which token it is (a user changing their
    own password keeps this one)."""

    user: User
    token_id: int


def authenticate_bearer(
    session: Session,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    now: datetime,
    ttl: timedelta,
) -> Authenticated:
    """Who the bearer credentials name, else 401 saying why (missing, unknown, revoked,
    expired, deactivated). For routes that accept a token or something else; the others
    depend on `CurrentUser`."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        user, token = check_token(session, credentials.credentials, ttl=ttl, now=now)
    except TokenRefused as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail=str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from exc
    assert token.id is not None
    return Authenticated(user=user, token_id=token.id)


def get_authenticated(
    session: SessionDep,
    now: NowDep,
    ttl: TokenTtl,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Authenticated:
    return authenticate_bearer(session, credentials, now=now, ttl=ttl)


AuthenticatedDep = Annotated[Authenticated, Depends(get_authenticated)]


def get_current_user(authenticated: AuthenticatedDep) -> User:
    return authenticated.user


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
        line_id = line_lookups(engine).current(session).camera_line(key)
    if line_id is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="the camera key is unknown or revoked"
        )
    return line_id


CameraLine = Annotated[str, Depends(get_camera_line)]


def get_camera_for_path_line(line: LineIdPath, camera_line: CameraLine) -> str:
    """For routes with a ``{line}`` path parameter: the key must belong to that line, else 403."""
    if camera_line != line:
        logger.warning("403: a camera key of line %s posted to line %s", camera_line, line)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"this camera key belongs to line {camera_line!r}, not {line!r}",
        )
    return line


CameraForLine = Annotated[str, Depends(get_camera_for_path_line)]

"""Accounts over HTTP: log in for a token; admins manage users, tokens and camera keys.

Design section 6: users and camera keys are the admin's; a user may see and revoke their
own tokens and change their own password (with the old one). Secrets (tokens, keys)
appear in exactly one response and are stored hashed. The rules live in
`inspect_app.accounts`; these handlers translate its errors: 404 for an unknown user,
token or key, 409 for a change the current state refuses (already revoked, an ambiguous
key prefix, the last admin), 403 for someone else's credentials, 422 for bad input, 429
with ``Retry-After`` while failed logins have locked a name or an address out.

Revocations are ``POST .../revoke`` with an optional ``{"reason": ...}`` for the audit
trail (the row stays, marked revoked, so a listing still shows it); they hold from the
next request in every process.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from inspect_app import accounts
from inspect_app import lines as line_service
from inspect_app.api.deps import (
    AdminUser,
    AuthenticatedDep,
    ClientAddress,
    CurrentUser,
    NowDep,
    SessionDep,
    ThrottlePolicyDep,
    TokenTtl,
)
from inspect_app.api.errors import ErrorBody, error_responses
from inspect_app.api.params import (
    MAX_PASSWORD_CHARS,
    MAX_REASON_CHARS,
    TEXT_PATTERN,
    USER_NAME_PATTERN,
    LineIdPath,
    RowId,
)
from inspect_app.domain import Role
from inspect_app.login_throttle import LoginThrottled
from inspect_app.storage.tables import ApiToken, CameraKey, User
from inspect_app.timeutil import as_utc

router = APIRouter(prefix="/api/v1", tags=["users"])

UserNamePath = Annotated[str, Path(pattern=USER_NAME_PATTERN, description="a user's name")]
KeyPrefixPath = Annotated[
    str,
    Path(
        min_length=accounts.MIN_KEY_PREFIX_CHARS,
        max_length=accounts.KEY_PREFIX_SHOWN,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the start of a camera key as listed (e.g. cam_AbCd1234)",
    ),
]


_THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "too many failed logins: this name or address is locked out for a while",
        "headers": {
            "Retry-After": {
                "description": "seconds until the lockout ends",
                "schema": {"type": "integer"},
            }
        },
    }
}


class Credentials(BaseModel):
    name: str = Field(max_length=128, pattern=TEXT_PATTERN)
    password: str = Field(max_length=MAX_PASSWORD_CHARS)


class TokenPublic(BaseModel):
    token: str  # shown once; send as "Authorization: Bearer <token>"
    user: str
    role: Role
    expires_at: datetime  # log in again before then for a fresh token


class UserPublic(BaseModel):
    name: str
    role: Role
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            name=user.name,
            role=Role(user.role),
            active=user.active,
            created_at=as_utc(user.created_at) or user.created_at,
        )


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=accounts.MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_CHARS)


class Reason(BaseModel):
    reason: str = Field(default="", max_length=MAX_REASON_CHARS, pattern=TEXT_PATTERN)


class PasswordChange(BaseModel):
    new_password: str = Field(
        min_length=accounts.MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_CHARS
    )
    # Required when users change their own password; an admin resetting someone's omits it.
    old_password: str | None = Field(default=None, max_length=MAX_PASSWORD_CHARS)
    reason: str = Field(default="", max_length=MAX_REASON_CHARS, pattern=TEXT_PATTERN)


class TokenInfo(BaseModel):
    id: int  # for POST /api/v1/tokens/{id}/revoke
    user: str
    state: str  # active | expired | revoked
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None  # to the minute
    revoked_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken, user: str, ttl: timedelta, now: datetime) -> TokenInfo:
        assert token.id is not None
        return cls(
            id=token.id,
            user=user,
            state=accounts.token_state(token, ttl, now),
            created_at=as_utc(token.created_at) or token.created_at,
            expires_at=accounts.token_expiry(token, ttl),
            last_used_at=as_utc(token.last_used_at),
            revoked_at=as_utc(token.revoked_at),
        )


class CameraKeyPublic(BaseModel):
    line: str
    key: str  # shown once; the camera sends it as X-Api-Key
    key_prefix: str


class CameraKeyInfo(BaseModel):
    line: str
    key_prefix: str  # for POST /api/v1/camera-keys/{prefix}/revoke
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: CameraKey) -> CameraKeyInfo:
        return cls(
            line=key.line_id,
            key_prefix=key.key_prefix,
            created_at=as_utc(key.created_at) or key.created_at,
            revoked_at=as_utc(key.revoked_at),
        )


def _http_error(exc: accounts.AccountError) -> HTTPException:
    """The status each kind of account error answers with (see the module docstring)."""
    if isinstance(exc, accounts.UserNotFound | accounts.CredentialNotFound):
        code = status.HTTP_404_NOT_FOUND
    elif isinstance(exc, accounts.UserExists | accounts.AccountConflict):
        code = status.HTTP_409_CONFLICT
    elif isinstance(exc, accounts.NotPermitted):
        code = status.HTTP_403_FORBIDDEN
    else:
        code = status.HTTP_422_UNPROCESSABLE_CONTENT
    return HTTPException(code, detail=str(exc))


def _too_many(exc: LoginThrottled) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=str(exc),
        headers={"Retry-After": str(exc.retry_after_seconds)},
    )


@router.post(
    "/auth/token",
    response_model=TokenPublic,
    status_code=status.HTTP_201_CREATED,
    responses={
        **error_responses(
            401, 422, _401="unknown user, wrong password or deactivated (one answer for all)"
        ),
        **_THROTTLED,
    },
)
def log_in(
    credentials: Credentials,
    session: SessionDep,
    now: NowDep,
    ttl: TokenTtl,
    address: ClientAddress,
    policy: ThrottlePolicyDep,
) -> TokenPublic:
    """Exchange a name and password for a bearer token that lasts `token_ttl_hours`
    (default 120 h); log in again for a fresh one. Failed logins are throttled per name and
    per client address: 429 with ``Retry-After`` during a lockout, even for the right
    password."""
    try:
        user = accounts.log_in(
            session,
            credentials.name,
            credentials.password,
            address=address,
            policy=policy,
            now=now,
        )
    except LoginThrottled as exc:
        raise _too_many(exc) from exc
    except accounts.LoginRefused as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail=str(exc)) from exc
    token = accounts.issue_token(session, user, ttl=ttl, now=now)
    return TokenPublic(token=token, user=user.name, role=Role(user.role), expires_at=now + ttl)


@router.get("/users/me", response_model=UserPublic, responses=error_responses(401))
def read_me(user: CurrentUser) -> UserPublic:
    return UserPublic.of(user)


@router.get("/users", response_model=list[UserPublic], responses=error_responses(401, 403))
def read_users(session: SessionDep, admin: AdminUser) -> list[UserPublic]:
    return [UserPublic.of(user) for user in accounts.list_users(session)]


@router.post(
    "/users",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409, 422, _409="the name is taken"),
)
def create_user(body: UserCreate, session: SessionDep, admin: AdminUser) -> UserPublic:
    try:
        user = accounts.add_user(session, body.name, body.role, body.password, actor=admin.name)
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return UserPublic.of(user)


@router.post(
    "/users/{name}/deactivate",
    response_model=UserPublic,
    responses=error_responses(
        401,
        403,
        404,
        409,
        422,
        _404="no such user",
        _409="already deactivated, or the last active admin",
    ),
)
def deactivate_user(
    name: UserNamePath,
    session: SessionDep,
    admin: AdminUser,
    now: NowDep,
    body: Annotated[Reason | None, Body()] = None,
) -> UserPublic:
    """No more logins, tokens (theirs are revoked) or review UI sessions for this user, from
    their next request in every process."""
    try:
        user = accounts.deactivate_user(
            session, name, actor=admin.name, reason=(body or Reason()).reason, now=now
        )
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return UserPublic.of(user)


@router.post(
    "/users/{name}/activate",
    response_model=UserPublic,
    responses=error_responses(401, 403, 404, 409, 422, _404="no such user", _409="already active"),
)
def activate_user(
    name: UserNamePath,
    session: SessionDep,
    admin: AdminUser,
    body: Annotated[Reason | None, Body()] = None,
) -> UserPublic:
    """Let a deactivated user log in again; their old tokens stay revoked."""
    try:
        user = accounts.activate_user(
            session, name, actor=admin.name, reason=(body or Reason()).reason
        )
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return UserPublic.of(user)


@router.put(
    "/users/{name}/password",
    response_model=UserPublic,
    responses={
        **error_responses(
            401,
            403,
            404,
            422,
            _403="someone else's password (admins only), or a wrong old password",
            _404="no such user",
        ),
        **_THROTTLED,
    },
)
def change_password(
    name: UserNamePath,
    body: PasswordChange,
    session: SessionDep,
    caller: AuthenticatedDep,
    now: NowDep,
    address: ClientAddress,
    policy: ThrottlePolicyDep,
) -> UserPublic:
    """An admin sets anyone's password; users change their own with the old one (checked
    like a login, throttled). The user's other tokens are revoked (a user changing their
    own keeps the token of this request) and their review UI sessions end."""
    try:
        user = accounts.change_password(
            session,
            name,
            body.new_password,
            actor=caller.user.name,
            reason=body.reason,
            by=caller.user,
            old_password=body.old_password,
            keep_token_id=caller.token_id if caller.user.name == name else None,
            address=address,
            policy=policy,
            now=now,
        )
    except LoginThrottled as exc:
        raise _too_many(exc) from exc
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return UserPublic.of(user)


@router.get(
    "/users/{name}/tokens",
    response_model=list[TokenInfo],
    responses=error_responses(
        401, 403, 404, 422, _403="someone else's tokens (admins only)", _404="no such user"
    ),
)
def read_user_tokens(
    name: UserNamePath, session: SessionDep, user: CurrentUser, now: NowDep, ttl: TokenTtl
) -> list[TokenInfo]:
    """A user's tokens, oldest first, with their state; the tokens themselves are never
    stored, so only ids are shown."""
    try:
        tokens = accounts.list_tokens(session, name, by=user)
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return [TokenInfo.of(token, name, ttl, now) for token in tokens]


@router.post(
    "/tokens/{token_id}/revoke",
    response_model=TokenInfo,
    responses=error_responses(
        401,
        403,
        404,
        409,
        422,
        _403="someone else's token (admins only)",
        _404="no such token",
        _409="already revoked",
    ),
)
def revoke_token(
    token_id: RowId,
    session: SessionDep,
    user: CurrentUser,
    now: NowDep,
    ttl: TokenTtl,
    body: Annotated[Reason | None, Body()] = None,
) -> TokenInfo:
    """Revoke a token by its id (from ``GET /users/{name}/tokens``): admins any, users their
    own. It is refused from its next request on."""
    try:
        token = accounts.revoke_token(
            session, token_id, actor=user.name, reason=(body or Reason()).reason, by=user, now=now
        )
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return TokenInfo.of(token, accounts.token_owner(session, token).name, ttl, now)


@router.post(
    "/lines/{line}/camera-keys",
    response_model=CameraKeyPublic,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 404, 422, _404="no such line"),
)
def create_camera_key(line: LineIdPath, session: SessionDep, admin: AdminUser) -> CameraKeyPublic:
    """A new key for a camera of this line; it works for this line only."""
    try:
        key = accounts.add_camera_key(session, line, actor=admin.name)
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return CameraKeyPublic(line=line, key=key, key_prefix=key[: accounts.KEY_PREFIX_SHOWN])


@router.get(
    "/camera-keys", response_model=list[CameraKeyInfo], responses=error_responses(401, 403, 422)
)
def read_camera_keys(
    session: SessionDep,
    admin: AdminUser,
    line: str | None = Query(default=None, max_length=64, description="only this line's keys"),
) -> list[CameraKeyInfo]:
    """Every camera key by its prefix (the keys themselves are not stored), revoked ones too."""
    return [CameraKeyInfo.of(key) for key in accounts.list_camera_keys(session, line)]


@router.post(
    "/camera-keys/{prefix}/revoke",
    response_model=CameraKeyInfo,
    responses=error_responses(
        401,
        403,
        404,
        409,
        422,
        _404="no camera key starts with this prefix",
        _409="already revoked, or the prefix matches several live keys (they are named)",
        _422="not a key prefix, or one too short to name one key",
    ),
)
def revoke_camera_key(
    prefix: KeyPrefixPath,
    session: SessionDep,
    admin: AdminUser,
    now: NowDep,
    body: Annotated[Reason | None, Body()] = None,
) -> CameraKeyInfo:
    """Revoke the camera key this prefix names; the camera's next image is refused (401)."""
    try:
        key = accounts.revoke_camera_key(
            session, prefix, actor=admin.name, reason=(body or Reason()).reason, now=now
        )
    except accounts.AccountError as exc:
        raise _http_error(exc) from exc
    return CameraKeyInfo.of(key)

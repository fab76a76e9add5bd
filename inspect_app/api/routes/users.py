"""Accounts over HTTP: log in for a token; admins manage users and camera keys.

Design section 6: users and camera keys are the admin's. Secrets (tokens, keys) appear
in exactly one response and are stored hashed.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from inspect_app import accounts
from inspect_app import lines as line_service
from inspect_app.api.deps import AdminUser, CurrentUser, SessionDep
from inspect_app.domain import Role
from inspect_app.storage.tables import User
from inspect_app.timeutil import as_utc

router = APIRouter(prefix="/api/v1", tags=["users"])


class Credentials(BaseModel):
    name: str
    password: str


class TokenPublic(BaseModel):
    token: str  # shown once; send as "Authorization: Bearer <token>"
    user: str
    role: Role


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
    password: str = Field(min_length=accounts.MIN_PASSWORD_LENGTH)


class CameraKeyPublic(BaseModel):
    line: str
    key: str  # shown once; the camera sends it as X-Api-Key
    key_prefix: str


@router.post("/auth/token", response_model=TokenPublic, status_code=status.HTTP_201_CREATED)
def log_in(credentials: Credentials, session: SessionDep) -> TokenPublic:
    """Exchange a name and password for a bearer token."""
    user = accounts.authenticate(session, credentials.name, credentials.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="unknown user, wrong password or deactivated"
        )
    return TokenPublic(token=accounts.issue_token(session, user), user=user.name, role=user.role)


@router.get("/users/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> UserPublic:
    return UserPublic.of(user)


@router.get("/users", response_model=list[UserPublic])
def read_users(session: SessionDep, admin: AdminUser) -> list[UserPublic]:
    return [UserPublic.of(user) for user in accounts.list_users(session)]


@router.post("/users", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, session: SessionDep, admin: AdminUser) -> UserPublic:
    try:
        user = accounts.add_user(session, body.name, body.role, body.password, actor=admin.name)
    except accounts.UserExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    except accounts.AccountError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
    return UserPublic.of(user)


@router.post(
    "/lines/{line}/camera-keys",
    response_model=CameraKeyPublic,
    status_code=status.HTTP_201_CREATED,
)
def create_camera_key(line: str, session: SessionDep, admin: AdminUser) -> CameraKeyPublic:
    """A new key for a camera of this line; it works for this line only."""
    try:
        key = accounts.add_camera_key(session, line, actor=admin.name)
    except line_service.LineNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
    return CameraKeyPublic(line=line, key=key, key_prefix=key[: accounts.KEY_PREFIX_SHOWN])

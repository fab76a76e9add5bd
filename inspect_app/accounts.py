"""Users, bearer tokens and camera keys.

Each function that changes something is one transaction: it commits before returning, so
a token or key printed to an operator always exists in the database. Secrets are returned
once and only their hashes are stored.
"""

from __future__ import annotations

import logging
import re
from functools import cache

from sqlmodel import Session, col, select

from inspect_app.domain import Role
from inspect_app.events import record_event
from inspect_app.lines import get_line
from inspect_app.security import hash_password, hash_secret, new_secret, verify_password
from inspect_app.storage.tables import ApiToken, CameraKey, User

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "iat"  # inspect-app token
CAMERA_KEY_PREFIX = "cam"
KEY_PREFIX_SHOWN = 12  # "cam_" + 8 characters: enough to tell keys apart in a listing
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AccountError(ValueError):
    """Bad input for an account operation; the message says what was wrong."""


class UserExists(AccountError):
    pass


class UserNotFound(AccountError, LookupError):
    pass


def _check_user_name(name: str) -> str:
    if not _USER_NAME.match(name or ""):
        raise AccountError(
            f"invalid user name {name!r}: 1-64 characters, letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def add_user(
    session: Session, name: str, role: Role | str, password: str, *, actor: str = "system"
) -> User:
    """Create a user; `actor` is who did it, for the audit trail."""
    _check_user_name(name)
    try:
        role = Role(role)
    except ValueError:
        raise AccountError(
            f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}"
        ) from None
    _check_password(password)
    if session.exec(select(User).where(User.name == name)).first() is not None:
        raise UserExists(f"user {name!r} already exists")
    user = User(name=name, role=role.value, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    record_event(
        session, kind="user_added", actor=actor, details={"user": name, "role": role.value}
    )
    session.commit()
    return user


def get_user(session: Session, name: str) -> User:
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None:
        raise UserNotFound(f"no user named {name!r}")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.name))))


@cache
def _decoy_hash() -> str:
    return hash_password("decoy password that matches nothing")


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user when name and password match an active account, else None.

    An unknown name still costs one scrypt, so response time does not reveal which
    names exist.
    """
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None:
        verify_password(password, _decoy_hash())
        logger.info("login failed: unknown user %r", name)
        return None
    if not verify_password(password, user.password_hash):
        logger.info("login failed: wrong password for %r", name)
        return None
    if not user.active:
        logger.info("login refused: user %r is deactivated", name)
        return None
    return user


def issue_token(session: Session, user: User) -> str:
    """A new bearer token for `user`, returned once; only its sha256 is kept."""
    if user.id is None:
        raise AccountError("the user has not been saved yet")
    token = new_secret(TOKEN_PREFIX)
    session.add(ApiToken(user_id=user.id, token_hash=hash_secret(token)))
    record_event(session, kind="token_issued", actor=user.name, details={"user": user.name})
    session.commit()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The active user a bearer token belongs to, or None (unknown, revoked, deactivated)."""
    if not token:
        return None
    row = session.exec(
        select(User)
        .join(ApiToken, col(ApiToken.user_id) == col(User.id))
        .where(ApiToken.token_hash == hash_secret(token))
        .where(col(ApiToken.revoked_at).is_(None))
        .where(col(User.active).is_(True))
    ).first()
    return row


def add_camera_key(session: Session, line_id: str, *, actor: str = "system") -> str:
    """A new key for a camera of `line_id` (which must exist), returned once."""
    get_line(session, line_id)
    key = new_secret(CAMERA_KEY_PREFIX)
    prefix = key[:KEY_PREFIX_SHOWN]
    session.add(CameraKey(line_id=line_id, key_hash=hash_secret(key), key_prefix=prefix))
    record_event(
        session,
        kind="camera_key_added",
        actor=actor,
        line_id=line_id,
        details={"key_prefix": prefix},
    )
    session.commit()
    return key


def line_for_camera_key(session: Session, key: str) -> str | None:
    """The line a camera key belongs to, or None for an unknown or revoked key."""
    if not key:
        return None
    return session.exec(
        select(CameraKey.line_id)
        .where(CameraKey.key_hash == hash_secret(key))
        .where(col(CameraKey.revoked_at).is_(None))
    ).first()


def list_camera_keys(session: Session, line_id: str | None = None) -> list[CameraKey]:
    query = select(CameraKey).order_by(col(CameraKey.line_id), col(CameraKey.created_at))
    if line_id is not None:
        query = query.where(CameraKey.line_id == line_id)
    return list(session.exec(query))

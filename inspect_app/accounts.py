"""Users, bearer tokens and camera keys: issued, checked, revoked.

Each function that changes something is one transaction: it commits before returning, so
a token or key printed to an operator always exists in the database, and a revocation is
in force for every process from its next request (each request looks its credential up;
no process keeps a copy). Secrets are returned once and only their hashes are stored.
Every change is an event with who did it and why.

- A bearer token expires `Settings.token_ttl_hours` after it was issued (default 120 h, a
  working week); logging in again gives a fresh one. Tokens issued before tokens expired
  (revision 0003, ``expires_at`` NULL) expire at created_at + the configured TTL, so they
  follow the plant's setting instead of one baked in when the database was upgraded.
- Deactivating a user revokes their tokens (so reactivating them does not bring old
  tokens back) and ends their review UI sessions; the last active admin cannot be
  deactivated. A password change revokes the user's tokens too, except the one the user
  changed it with, and ends their UI sessions that logged in before it.
- Who may: the CLI's operator (``by=None``: whoever can open the database) and admins
  manage everyone; a user may list and revoke their own tokens and change their own
  password, with the old one. The API passes the calling user as `by`.
- Logins over the network go through `log_in`, which throttles failures
  (`inspect_app.login_throttle`); `authenticate` is the bare password check under it.
- A review-UI login is a `UiSession` row (`open_ui_session`), named by the hash of the
  browser's cookie, so every process behind a load balancer knows it and none needs sticky
  sessions. `ui_session_user` checks it on every request: logout, expiry
  (`Settings.ui_session_hours`), deactivation and a password change end it everywhere.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from inspect_app.domain import Role
from inspect_app.events import record_event
from inspect_app.lines import get_line
from inspect_app.login_throttle import (
    ThrottlePolicy,
    record_failure,
    record_success,
    refuse_if_locked,
)
from inspect_app.security import hash_password, hash_secret, new_secret, verify_password
from inspect_app.settings import DEFAULT_TOKEN_TTL_HOURS, DEFAULT_UI_SESSION_HOURS
from inspect_app.storage.tables import ApiToken, CameraKey, UiSession, User
from inspect_app.timeutil import as_utc, utcnow

logger = logging.getLogger(__name__)

_Credential = TypeVar("_Credential", ApiToken, UiSession)

MIN_PASSWORD_LENGTH = 8
TOKEN_PREFIX = "iat"  # inspect-app token
CAMERA_KEY_PREFIX = "cam"
KEY_PREFIX_SHOWN = 12  # "cam_" + 8 characters: enough to tell keys apart in a listing
# Revoking by prefix: "cam_" and at least 4 more characters, so a slip of the keyboard
# cannot match (and revoke) the only key there is.
MIN_KEY_PREFIX_CHARS = 8
DEFAULT_TOKEN_TTL = timedelta(hours=DEFAULT_TOKEN_TTL_HOURS)
DEFAULT_UI_SESSION_TTL = timedelta(hours=DEFAULT_UI_SESSION_HOURS)
ENDED_UI_SESSIONS_KEPT = timedelta(days=30)
# A token's last use is written at most this often: enough to see which tokens are in use,
# without a database write on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AccountError(ValueError):
    """Bad input for an account operation; the message says what was wrong."""


class UserExists(AccountError):
    pass


class UserNotFound(AccountError, LookupError):
    pass


class CredentialNotFound(AccountError, LookupError):
    """No token with that id, or no camera key with that prefix."""


class AccountConflict(AccountError):
    """The change does not fit the current state: already revoked or deactivated, a prefix
    that matches several keys, the last active admin."""


class NotPermitted(AccountError, PermissionError):
    """The acting user may not do this (someone else's tokens, a wrong old password)."""


class LoginRefused(AccountError):
    """Unknown name, wrong password or deactivated: one message for all, on purpose."""


class TokenRefused(AccountError):
    """A bearer token that does not let its holder in; the message says why."""


class TokenUnknown(TokenRefused):
    pass


class TokenRevoked(TokenRefused):
    pass


class TokenExpired(TokenRefused):
    pass


class UserDeactivated(TokenRefused):
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

    The bare check, not throttled: what faces the network is `log_in`. An unknown name
    still costs one scrypt, so response time does not reveal which names exist.
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


def log_in(
    session: Session,
    name: str,
    password: str,
    *,
    address: str | None,
    policy: ThrottlePolicy,
    now: datetime | None = None,
) -> User:
    """The user behind a login form or ``POST /auth/token``, with failures throttled.

    Raises `login_throttle.LoginThrottled` (answer 429) while the name or the client
    `address` is locked out, even for the right password, and when this failure starts a
    lockout; `LoginRefused` (401) for any other failure.
    """
    now = now or utcnow()
    refuse_if_locked(session, name, address, now=now)
    user = authenticate(session, name, password)
    if user is None:
        lockout = record_failure(session, name, address, policy=policy, now=now)
        if lockout is not None:
            raise lockout
        raise LoginRefused("unknown user, wrong password or deactivated")
    record_success(session, name, now=now)
    return user


# -- bearer tokens


def token_expiry(token: ApiToken, ttl: timedelta) -> datetime:
    """When `token` stops working; a token from before expiry existed lasts `ttl` from its
    creation."""
    expires_at = as_utc(token.expires_at)
    if expires_at is not None:
        return expires_at
    created_at = as_utc(token.created_at)
    assert created_at is not None
    return created_at + ttl


def token_state(token: ApiToken, ttl: timedelta, now: datetime) -> str:
    """``revoked``, ``expired`` or ``active``, for listings."""
    if token.revoked_at is not None:
        return "revoked"
    return "expired" if token_expiry(token, ttl) <= now else "active"


def issue_token(
    session: Session,
    user: User,
    *,
    ttl: timedelta = DEFAULT_TOKEN_TTL,
    now: datetime | None = None,
    actor: str | None = None,
) -> str:
    """A new bearer token for `user` that lasts `ttl`, returned once; only its sha256 is
    kept. `actor` is who asked (default: the user, who logged in)."""
    if user.id is None:
        raise AccountError("the user has not been saved yet")
    if ttl <= timedelta(0):
        raise AccountError(f"a token must last a positive time, got {ttl}")
    now = now or utcnow()
    token = new_secret(TOKEN_PREFIX)
    row = ApiToken(
        user_id=user.id, token_hash=hash_secret(token), created_at=now, expires_at=now + ttl
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        kind="token_issued",
        actor=actor or user.name,
        details={"user": user.name, "token_id": row.id, "expires_at": row.expires_at},
    )
    session.commit()
    return token


def check_token(
    session: Session, token: str, *, ttl: timedelta = DEFAULT_TOKEN_TTL, now: datetime | None = None
) -> tuple[User, ApiToken]:
    """The user a bearer token lets in, and the token's row; `TokenRefused` saying why not.

    Looked up in the database on every call, so a revocation, an expiry or a deactivation
    holds from the next request in every process. Records the token's last use (at most
    every `LAST_USED_RESOLUTION`).
    """
    now = now or utcnow()
    found = _credential_and_user(session, ApiToken, col(ApiToken.token_hash), token)
    if found is None:
        raise TokenUnknown("the bearer token is unknown: log in (POST /api/v1/auth/token)")
    row, user = found
    if row.revoked_at is not None:
        raise TokenRevoked(
            f"the bearer token was revoked at {as_utc(row.revoked_at):%Y-%m-%d %H:%M} UTC: "
            "log in again for a new one"
        )
    expires_at = token_expiry(row, ttl)
    if expires_at <= now:
        raise TokenExpired(
            f"the bearer token expired at {expires_at:%Y-%m-%d %H:%M} UTC (tokens last "
            f"{ttl.total_seconds() / 3600:g} h): log in again (POST /api/v1/auth/token) "
            "for a fresh one"
        )
    if not user.active:
        raise UserDeactivated(f"the account {user.name!r} is deactivated")
    if _record_use(session, ApiToken, row.id, "last_used_at", as_utc(row.last_used_at), now):
        row.last_used_at = now
    return user, row


def _credential_and_user(
    session: Session, table: type[_Credential], hash_column: Any, secret: str
) -> tuple[_Credential, User] | None:
    """The credential row whose stored hash is the secret's, with its user; None when the
    secret is empty or unknown. Bearer tokens and review-UI sessions are both looked up so."""
    if not secret:
        return None
    found = session.exec(
        select(table, User)
        .join(User, col(table.user_id) == col(User.id))
        .where(hash_column == hash_secret(secret))
    ).first()
    return (found[0], found[1]) if found is not None else None


def _record_use(
    session: Session,
    table: type[ApiToken] | type[UiSession],
    row_id: int | None,
    column: str,
    last: datetime | None,
    now: datetime,
) -> bool:
    """Write a credential's last use, at most every `LAST_USED_RESOLUTION`; a busy database
    costs the record, not the request. True when it was written."""
    if last is not None and now - last < LAST_USED_RESOLUTION:
        return False
    try:
        session.execute(update(table).where(col(table.id) == row_id).values({column: now}))
        session.commit()
        return True
    except SQLAlchemyError as exc:
        session.rollback()
        logger.warning("could not record the use of %s %s: %s", table.__tablename__, row_id, exc)
        return False


def user_for_token(
    session: Session, token: str, *, ttl: timedelta = DEFAULT_TOKEN_TTL, now: datetime | None = None
) -> User | None:
    """The user a bearer token lets in, or None (unknown, revoked, expired, deactivated)."""
    try:
        return check_token(session, token, ttl=ttl, now=now)[0]
    except TokenRefused:
        return None


def _may_manage(by: User | None, owner: str, action: str) -> None:
    """The operator (None) and admins manage everyone's credentials; users their own."""
    if by is None or Role(by.role).may(Role.ADMIN) or by.name == owner:
        return
    raise NotPermitted(f"{by.name} ({by.role}) may not {action} of {owner!r}: admins only")


def list_tokens(session: Session, name: str, *, by: User | None = None) -> list[ApiToken]:
    """A user's tokens, oldest first, revoked and expired ones included."""
    user = get_user(session, name)
    _may_manage(by, user.name, "see the tokens")
    return list(
        session.exec(select(ApiToken).where(ApiToken.user_id == user.id).order_by(col(ApiToken.id)))
    )


def token_owner(session: Session, token: ApiToken) -> User:
    user = session.get(User, token.user_id)
    assert user is not None, "a token's user is a foreign key"
    return user


def revoke_token(
    session: Session,
    token_id: int,
    *,
    actor: str,
    reason: str = "",
    by: User | None = None,
    now: datetime | None = None,
) -> ApiToken:
    """Revoke one token by its id (from `list_tokens`); it stops working at once."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise CredentialNotFound(f"no token with id {token_id}")
    owner = token_owner(session, row)
    _may_manage(by, owner.name, "revoke the tokens")
    if row.revoked_at is not None:
        raise AccountConflict(
            f"token {token_id} of {owner.name!r} was already revoked at "
            f"{as_utc(row.revoked_at):%Y-%m-%d %H:%M} UTC"
        )
    row.revoked_at = now or utcnow()
    session.add(row)
    record_event(
        session,
        kind="token_revoked",
        actor=actor,
        reason=reason,
        details={"user": owner.name, "token_id": token_id},
    )
    session.commit()
    return row


def _revoke_tokens_of(
    session: Session, user: User, now: datetime, *, keep_token_id: int | None = None
) -> int:
    """Revoke every live token of `user` but `keep_token_id`, in the caller's transaction."""
    query = (
        update(ApiToken)
        .where(col(ApiToken.user_id) == user.id)
        .where(col(ApiToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    if keep_token_id is not None:
        query = query.where(col(ApiToken.id) != keep_token_id)
    return session.execute(query).rowcount  # type: ignore[attr-defined]


# -- review-UI sessions


class UiSessionEnded(AccountError):
    """A review-UI cookie that no longer lets anyone in; the message says why."""


def open_ui_session(
    session: Session,
    name: str,
    cookie: str,
    *,
    ttl: timedelta = DEFAULT_UI_SESSION_TTL,
    now: datetime | None = None,
) -> UiSession:
    """Record a review-UI login of `name` behind the browser's `cookie` (a random secret the
    UI made); only its hash is stored. Committed before the browser gets the cookie."""
    if ttl <= timedelta(0):
        raise AccountError(f"a UI session must last a positive time, got {ttl}")
    now = now or utcnow()
    user = get_user(session, name)
    assert user.id is not None
    # The user's sessions that ended long ago go (the events keep the trail), so the table
    # holds each user's live sessions and a month of ended ones, not every login ever.
    gone = now - ENDED_UI_SESSIONS_KEPT
    session.execute(
        delete(UiSession)
        .where(col(UiSession.user_id) == user.id)
        .where(or_(col(UiSession.expires_at) < gone, col(UiSession.revoked_at) < gone))
    )
    row = UiSession(
        session_hash=hash_secret(cookie),
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    session.flush()
    record_event(
        session,
        kind="ui_session_opened",
        actor=name,
        details={"user": name, "ui_session_id": row.id, "expires_at": row.expires_at},
    )
    session.commit()
    return row


def ui_session_user(session: Session, cookie: str, *, now: datetime | None = None) -> User:
    """The user a review-UI cookie lets in, or `UiSessionEnded` saying why not: unknown,
    logged out, expired, the user deactivated or gone, the password changed since.

    Looked up on every request, so an end holds in every process from the next one.
    Records the last use at most every `LAST_USED_RESOLUTION`."""
    now = now or utcnow()
    found = _credential_and_user(session, UiSession, col(UiSession.session_hash), cookie)
    if found is None:
        raise UiSessionEnded("no such session: log in")
    row, user = found
    if row.revoked_at is not None:
        raise UiSessionEnded(f"the session was ended: {row.revoked_reason or 'logged out'}")
    expires_at = as_utc(row.expires_at)
    assert expires_at is not None
    if expires_at <= now:
        raise UiSessionEnded(f"the session expired at {expires_at:%Y-%m-%d %H:%M} UTC")
    if not user.active:
        raise UiSessionEnded("the account was deactivated")
    changed = as_utc(user.password_changed_at)
    created = as_utc(row.created_at)
    assert created is not None
    if changed is not None and changed > created:
        raise UiSessionEnded("the password was changed after this session logged in")
    _record_use(session, UiSession, row.id, "last_seen_at", as_utc(row.last_seen_at), now)
    return user


def end_ui_session(
    session: Session,
    cookie: str,
    *,
    every_session_of_the_user: bool = False,
    reason: str = "logged out",
    now: datetime | None = None,
) -> int:
    """End the review-UI session behind `cookie` (a logout), or every live session of its
    user; returns how many ended (0: unknown or already ended)."""
    now = now or utcnow()
    found = (
        session.exec(
            select(UiSession, User)
            .join(User, col(UiSession.user_id) == col(User.id))
            .where(UiSession.session_hash == hash_secret(cookie))
        ).first()
        if cookie
        else None
    )
    if found is None:
        return 0
    row, user = found
    if every_session_of_the_user:
        ended = _end_ui_sessions_of(session, user, now, reason)
    else:
        ended = session.execute(
            update(UiSession)
            .where(col(UiSession.id) == row.id)
            .where(col(UiSession.revoked_at).is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        ).rowcount  # type: ignore[attr-defined]
    if ended:
        record_event(
            session,
            kind="ui_session_ended",
            actor=user.name,
            reason=reason,
            details={"user": user.name, "ui_sessions_ended": ended},
        )
    session.commit()
    return ended


def _end_ui_sessions_of(session: Session, user: User, now: datetime, reason: str) -> int:
    """End every live review-UI session of `user`, in the caller's transaction."""
    return session.execute(
        update(UiSession)
        .where(col(UiSession.user_id) == user.id)
        .where(col(UiSession.revoked_at).is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    ).rowcount  # type: ignore[attr-defined]


# -- users' state: deactivation, passwords


def deactivate_user(
    session: Session, name: str, *, actor: str, reason: str = "", now: datetime | None = None
) -> User:
    """Deactivate a user: no login, no token (theirs are revoked), no UI session."""
    now = now or utcnow()
    user = get_user(session, name)
    if not user.active:
        raise AccountConflict(f"user {name!r} is already deactivated")
    if user.role == Role.ADMIN.value:
        admins = session.exec(
            select(User.id).where(User.role == Role.ADMIN.value, col(User.active).is_(True))
        ).all()
        if len(admins) <= 1:
            raise AccountConflict(
                f"{name!r} is the last active admin: add or activate another admin first"
            )
    user.active = False
    session.add(user)
    revoked = _revoke_tokens_of(session, user, now)
    ended = _end_ui_sessions_of(session, user, now, "the account was deactivated")
    record_event(
        session,
        kind="user_deactivated",
        actor=actor,
        reason=reason,
        details={"user": name, "tokens_revoked": revoked, "ui_sessions_ended": ended},
    )
    session.commit()
    return user


def activate_user(session: Session, name: str, *, actor: str, reason: str = "") -> User:
    """Let a deactivated user log in again (their old tokens stay revoked)."""
    user = get_user(session, name)
    if user.active:
        raise AccountConflict(f"user {name!r} is already active")
    user.active = True
    session.add(user)
    record_event(session, kind="user_activated", actor=actor, reason=reason, details={"user": name})
    session.commit()
    return user


def change_password(
    session: Session,
    name: str,
    new_password: str,
    *,
    actor: str,
    reason: str = "",
    by: User | None = None,
    old_password: str | None = None,
    keep_token_id: int | None = None,
    address: str | None = None,
    policy: ThrottlePolicy | None = None,
    now: datetime | None = None,
) -> User:
    """Set a new password; the user's tokens are revoked (but `keep_token_id`, the one a
    user changes their own password with) and their UI sessions end.

    A user changing their own password gives the old one, checked like a login (throttled,
    so a stolen token cannot be used to guess the password); an admin or the operator
    sets anyone's without it.
    """
    now = now or utcnow()
    user = get_user(session, name)
    _may_manage(by, user.name, "change the password")
    _check_password(new_password)
    if by is not None and by.name == user.name:
        if not old_password:
            raise NotPermitted("changing your own password needs your old password")
        try:
            log_in(
                session, name, old_password, address=address, policy=policy or ThrottlePolicy(),
                now=now,
            )  # fmt: skip
        except LoginRefused:
            raise NotPermitted("the old password is wrong") from None
    user.password_hash = hash_password(new_password)
    user.password_changed_at = now
    session.add(user)
    revoked = _revoke_tokens_of(session, user, now, keep_token_id=keep_token_id)
    ended = _end_ui_sessions_of(session, user, now, "the password was changed")
    record_event(
        session,
        kind="password_changed",
        actor=actor,
        reason=reason,
        details={"user": name, "tokens_revoked": revoked, "ui_sessions_ended": ended},
    )
    session.commit()
    return user


# -- camera keys


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
    """The line a camera key belongs to, or None for an unknown or revoked key.

    The image route reads it through `inspect_app.lookups`, which keeps the answer only
    while the change counter a key's revocation bumps stands, so a revocation still holds
    from the camera's next image in every process.
    """
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


def find_camera_key(session: Session, prefix: str) -> CameraKey:
    """The one live key that `prefix` names: its listed prefix (``cam_AbCd1234``, a trailing
    ``...`` allowed), a shorter start of it, or the whole key."""
    needle = (prefix or "").strip().removesuffix("...")
    if len(needle) < MIN_KEY_PREFIX_CHARS:
        raise AccountError(
            f"give at least {MIN_KEY_PREFIX_CHARS} characters of the key (e.g. "
            f"{CAMERA_KEY_PREFIX}_AbCd), as `cameras list` shows it; got {needle!r}"
        )
    if len(needle) > KEY_PREFIX_SHOWN:  # the whole key, or more than any listing shows
        exact = session.exec(
            select(CameraKey).where(CameraKey.key_hash == hash_secret(needle))
        ).first()
        if exact is not None:
            matches = [exact]
        else:
            raise CredentialNotFound(f"no camera key starts with {needle[:KEY_PREFIX_SHOWN]!r}")
    else:
        # LIKE narrows in SQL; SQLite's LIKE ignores case and keys are case-sensitive, so
        # the exact test is Python's.
        rows = session.exec(
            select(CameraKey).where(col(CameraKey.key_prefix).startswith(needle, autoescape=True))
        ).all()
        matches = [row for row in rows if row.key_prefix.startswith(needle)]
    if not matches:
        raise CredentialNotFound(f"no camera key starts with {needle!r}")
    live = [row for row in matches if row.revoked_at is None]
    if not live:
        (row, *_) = matches
        raise AccountConflict(
            f"camera key {row.key_prefix} of {row.line_id} was already revoked at "
            f"{as_utc(row.revoked_at):%Y-%m-%d %H:%M} UTC"
        )
    if len(live) > 1:
        named = ", ".join(f"{row.key_prefix} ({row.line_id})" for row in live)
        raise AccountConflict(
            f"{needle!r} matches {len(live)} live camera keys: {named}; give more of the key"
        )
    return live[0]


def revoke_camera_key(
    session: Session, prefix: str, *, actor: str, reason: str = "", now: datetime | None = None
) -> CameraKey:
    """Revoke the camera key `prefix` names (see `find_camera_key`); the camera's next image
    is refused with 401 by every process."""
    row = find_camera_key(session, prefix)
    row.revoked_at = now or utcnow()
    session.add(row)
    record_event(
        session,
        kind="camera_key_revoked",
        actor=actor,
        reason=reason,
        line_id=row.line_id,
        details={"key_prefix": row.key_prefix},
    )
    session.commit()
    return row

"""Failed-login throttling: a guessed password costs minutes, not milliseconds.

Without it, 50 wrong passwords took 1.3 s and the right one then worked. Now every failed
login (API ``POST /api/v1/auth/token`` and the review UI's form) counts against the name
that was tried and against the client's address; too many within a window lock that name
or address out for a while, refusing even the right password until the lockout ends by
itself. Defaults (`Settings`): 5 failures per name or 20 per address within 15 minutes
lock out for 5 minutes, doubling with each lockout in a row (5, 10, 20, 40, then 60, the
cap). An address gets more tries than a name because several inspectors may share one
terminal or one proxy.

- A name that does not exist is counted like one that does, so a lockout says nothing
  about which names exist.
- A successful login clears its name's failures and its run of lockouts; the address's
  count is left to expire with its window (one valid account must not reset the counter
  of an address that is guessing at others). A run of lockouts is also forgotten after a
  quiet day (`LOCKOUTS_FORGOTTEN_AFTER`).
- Several processes share the state: it lives in the ``loginthrottle`` table, one row per
  name or address that failed recently, updated under a row lock (PostgreSQL) or SQLite's
  write lock, so two processes cannot both let the sixth guess through.
- A lockout is an event (``login_locked``); so is its end (``login_unlocked``), recorded at
  the first login attempt after it, whoever makes it, since nothing runs when time passes.
- The clock is a parameter (`now`): tests move it instead of sleeping.

The policy's arithmetic (`ThrottlePolicy`) is pure; the functions below it are the
database side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import delete, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from inspect_app.events import record_event
from inspect_app.storage.tables import LoginThrottle
from inspect_app.timeutil import as_utc

if TYPE_CHECKING:
    from inspect_app.settings import Settings

# A run of lockouts (each doubling the next) is forgotten after this long without a failed
# login, and so are the rows of names and addresses that stopped failing.
LOCKOUTS_FORGOTTEN_AFTER = timedelta(hours=24)
MAX_KEY_CHARS = 128  # the column's width; a longer "name" is an attack, not a user


class Scope(StrEnum):
    USER = "user"
    ADDRESS = "address"


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures lock out, within which window, for how long."""

    max_user_failures: int = 5
    max_address_failures: int = 20
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=5)  # the first lockout in a run
    max_lockout: timedelta = timedelta(minutes=60)

    def __post_init__(self) -> None:
        if self.max_user_failures < 1 or self.max_address_failures < 1:
            raise ValueError("a lockout needs at least one failure")
        if self.window <= timedelta(0) or self.lockout <= timedelta(0):
            raise ValueError("the window and the lockout must be positive")
        if self.max_lockout < self.lockout:
            raise ValueError("the longest lockout must be at least the first one")

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottlePolicy:
        return cls(
            max_user_failures=settings.login_max_failures_per_user,
            max_address_failures=settings.login_max_failures_per_address,
            window=timedelta(minutes=settings.login_failure_window_minutes),
            lockout=timedelta(minutes=settings.login_lockout_minutes),
            max_lockout=timedelta(minutes=settings.login_lockout_max_minutes),
        )

    def max_failures(self, scope: Scope) -> int:
        return self.max_user_failures if scope == Scope.USER else self.max_address_failures

    def lockout_for(self, lockouts_in_a_row: int) -> timedelta:
        """The n-th lockout in a run (1-based) lasts the first one doubled n - 1 times, capped."""
        if lockouts_in_a_row < 1:
            raise ValueError("the first lockout in a run is number 1")
        lockout = self.lockout
        # Stops at the cap, so a long siege never overflows a timedelta.
        for _ in range(lockouts_in_a_row - 1):
            if lockout >= self.max_lockout:
                break
            lockout *= 2
        return min(lockout, self.max_lockout)


class LoginThrottled(Exception):
    """Logins for this name or address are locked until `locked_until`; answer 429."""

    def __init__(
        self, scope: Scope, key: str, locked_until: datetime, now: datetime, *, failed: bool
    ) -> None:
        self.scope = scope
        self.key = key
        self.locked_until = locked_until
        self.retry_after = max(locked_until - now, timedelta(0))
        who = f"user {key!r}" if scope == Scope.USER else f"address {key}"
        wrong = "wrong name or password; " if failed else ""
        super().__init__(
            f"{wrong}too many failed logins: logins for {who} are locked for "
            f"{_duration(self.retry_after)} more (until {locked_until:%H:%M:%S} UTC), "
            "even with the right password"
        )

    @property
    def retry_after_seconds(self) -> int:
        """For the ``Retry-After`` header: whole seconds, at least 1."""
        return max(1, math.ceil(self.retry_after.total_seconds()))


def _duration(span: timedelta) -> str:
    seconds = max(1, math.ceil(span.total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _keys(name: str, address: str | None) -> list[tuple[Scope, str]]:
    keys = [(Scope.USER, name[:MAX_KEY_CHARS])]
    if address:
        keys.append((Scope.ADDRESS, address[:MAX_KEY_CHARS]))
    return keys


def _row_for_update(session: Session, scope: Scope, key: str, now: datetime) -> LoginThrottle:
    """The row of (scope, key), created if missing, locked for this transaction.

    The insert comes first on purpose: it is a write, so SQLite takes its write lock here
    and every read after it sees the latest commit (a read first and a write later can fail
    on a snapshot another process has moved past). PostgreSQL locks the row with FOR UPDATE.
    """
    values = {"scope": scope.value, "key": key, "failures": 0, "lockouts": 0, "updated_at": now}
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(LoginThrottle)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["scope", "key"])
    )
    return session.exec(
        select(LoginThrottle)
        .where(LoginThrottle.scope == scope.value, LoginThrottle.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _end_lockouts(session: Session, now: datetime) -> None:
    """Record the end of every lockout that is over, once (the first process to see it)."""
    ended = session.exec(
        select(LoginThrottle).where(
            col(LoginThrottle.locked_until).is_not(None), col(LoginThrottle.locked_until) <= now
        )
    ).all()
    for row in ended:
        cleared = session.execute(
            update(LoginThrottle)
            .where(col(LoginThrottle.id) == row.id)
            .where(col(LoginThrottle.locked_until) == row.locked_until)
            .values(locked_until=None)
        )
        if cleared.rowcount == 1:  # type: ignore[attr-defined]
            record_event(
                session,
                kind="login_unlocked",
                actor="system",
                reason="the lockout ended by itself",
                details={"scope": row.scope, "key": row.key, "locked_until": row.locked_until},
            )
    if ended:
        session.commit()


def refuse_if_locked(session: Session, name: str, address: str | None, *, now: datetime) -> None:
    """Raise `LoginThrottled` while the name or the address is locked out; call it before
    checking the password, so a locked-out guess costs no scrypt and learns nothing."""
    _end_lockouts(session, now)
    for scope, key in _keys(name, address):
        row = session.exec(
            select(LoginThrottle).where(
                LoginThrottle.scope == scope.value, LoginThrottle.key == key
            )
        ).first()
        locked_until = as_utc(row.locked_until) if row is not None else None
        if locked_until is not None and locked_until > now:
            raise LoginThrottled(scope, key, locked_until, now, failed=False)


def record_failure(
    session: Session, name: str, address: str | None, *, policy: ThrottlePolicy, now: datetime
) -> LoginThrottled | None:
    """Count one failed login against the name and the address, in one transaction that
    commits before returning; returns the lockout it caused, if it caused one."""
    caused: LoginThrottled | None = None
    session.execute(
        delete(LoginThrottle)
        .where(col(LoginThrottle.updated_at) < now - LOCKOUTS_FORGOTTEN_AFTER)
        .where(col(LoginThrottle.locked_until).is_(None))
    )
    for scope, key in _keys(name, address):
        row = _row_for_update(session, scope, key, now)
        locked_until = as_utc(row.locked_until)
        if locked_until is not None and locked_until > now:
            # Another process locked it between our check and now: it is locked already.
            caused = caused or LoginThrottled(scope, key, locked_until, now, failed=True)
            continue
        last_seen = as_utc(row.updated_at)
        if row.lockouts and last_seen is not None and now - last_seen > LOCKOUTS_FORGOTTEN_AFTER:
            row.lockouts = 0
        window_started = as_utc(row.window_started_at)
        if window_started is None or now - window_started >= policy.window:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        row.updated_at = now
        if row.failures >= policy.max_failures(scope):
            row.lockouts += 1
            lockout = policy.lockout_for(row.lockouts)
            row.locked_until = now + lockout
            record_event(
                session,
                kind="login_locked",
                actor="system",
                reason=(
                    f"{row.failures} failed logins within "
                    f"{policy.window.total_seconds() / 60:g} minutes"
                ),
                details={
                    "scope": scope.value,
                    "key": key,
                    "address": address,
                    "failures": row.failures,
                    "lockout_minutes": lockout.total_seconds() / 60,
                    "lockouts_in_a_row": row.lockouts,
                    "locked_until": row.locked_until,
                },
            )
            row.failures, row.window_started_at = 0, None
            caused = caused or LoginThrottled(scope, key, row.locked_until, now, failed=True)
        session.add(row)
    session.commit()
    return caused


def record_success(session: Session, name: str, *, now: datetime) -> None:
    """A login with the right password clears its name's failures and run of lockouts."""
    row = session.exec(
        select(LoginThrottle).where(
            LoginThrottle.scope == Scope.USER.value, LoginThrottle.key == name[:MAX_KEY_CHARS]
        )
    ).first()
    if row is None:  # the usual case: no write, so a login takes no write lock
        return
    session.execute(
        update(LoginThrottle)
        .where(col(LoginThrottle.id) == row.id)
        .values(failures=0, window_started_at=None, lockouts=0, updated_at=now)
    )
    session.commit()

"""Failed logins lock a name or an address out for a while, the lockout ends by itself, and
every process shares the count. The clock is passed in: nothing here sleeps."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from inspect_app import accounts
from inspect_app.login_throttle import (
    LOCKOUTS_FORGOTTEN_AFTER,
    LoginThrottled,
    Scope,
    ThrottlePolicy,
    record_failure,
)
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import Event, LoginThrottle

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
POLICY = ThrottlePolicy()  # 5 per name, 20 per address, 15 min window, 5 min doubling to 60
PASSWORD = "ann's password"


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def attempt(
    session: Session,
    password: str,
    at: datetime,
    *,
    name: str = "ann",
    address: str | None = "10.0.0.7",
) -> str:
    """'ok', 'refused' or 'locked', as a login form would see it."""
    try:
        accounts.log_in(session, name, password, address=address, policy=POLICY, now=at)
    except accounts.LoginRefused:
        return "refused"
    except LoginThrottled:
        return "locked"
    return "ok"


def events(session: Session, kind: str) -> list[Event]:
    return list(session.exec(select(Event).where(Event.kind == kind).order_by(col(Event.id))))


@pytest.fixture
def ann(session: Session) -> Session:
    accounts.add_user(session, "ann", "inspector", PASSWORD)
    return session


def test_the_policy_doubles_each_lockout_in_a_row_up_to_the_cap() -> None:
    assert [POLICY.lockout_for(n).total_seconds() / 60 for n in range(1, 7)] == [
        5,
        10,
        20,
        40,
        60,
        60,
    ]
    assert POLICY.lockout_for(10_000) == POLICY.max_lockout  # no overflow on a long siege
    assert POLICY.max_failures(Scope.USER) == 5 and POLICY.max_failures(Scope.ADDRESS) == 20


def test_the_policy_comes_from_the_settings_with_these_defaults() -> None:
    assert ThrottlePolicy.from_settings(Settings()) == ThrottlePolicy(
        max_user_failures=5,
        max_address_failures=20,
        window=timedelta(minutes=15),
        lockout=timedelta(minutes=5),
        max_lockout=timedelta(minutes=60),
    )
    with pytest.raises(ValueError, match="at least login_lockout_minutes"):
        Settings(login_lockout_minutes=10, login_lockout_max_minutes=5)
    with pytest.raises(ValueError, match="at least one failure"):
        ThrottlePolicy(max_user_failures=0)


def test_five_wrong_passwords_lock_the_name_even_for_the_right_one(ann: Session) -> None:
    assert [attempt(ann, "guess", minutes(i * 0.01)) for i in range(4)] == ["refused"] * 4
    with pytest.raises(LoginThrottled) as caught:
        accounts.log_in(ann, "ann", "guess", address="10.0.0.7", policy=POLICY, now=minutes(1))
    assert caught.value.retry_after_seconds == 300
    assert "wrong name or password" in str(caught.value) and "user 'ann'" in str(caught.value)
    with pytest.raises(LoginThrottled) as caught:
        accounts.log_in(ann, "ann", PASSWORD, address="10.0.0.7", policy=POLICY, now=minutes(3))
    assert caught.value.retry_after_seconds == 180  # locked at minute 1 until minute 6
    assert "even with the right password" in str(caught.value)
    # another address does not help: the name is locked
    assert attempt(ann, PASSWORD, minutes(3), address="10.0.0.8") == "locked"

    (locked,) = events(ann, "login_locked")
    assert locked.actor == "system" and locked.reason == "5 failed logins within 15 minutes"
    assert locked.details is not None
    assert (locked.details["scope"], locked.details["key"]) == ("user", "ann")
    assert (locked.details["lockout_minutes"], locked.details["address"]) == (5, "10.0.0.7")


def test_a_lockout_ends_by_itself_and_its_end_is_an_event(ann: Session) -> None:
    for i in range(5):
        attempt(ann, "guess", minutes(i * 0.01))
    assert attempt(ann, PASSWORD, minutes(5.03)) == "locked"
    assert not events(ann, "login_unlocked")
    assert attempt(ann, PASSWORD, minutes(5.05)) == "ok"
    (unlocked,) = events(ann, "login_unlocked")
    assert unlocked.reason == "the lockout ended by itself"
    assert unlocked.details is not None and unlocked.details["key"] == "ann"
    assert attempt(ann, PASSWORD, minutes(6)) == "ok"  # recorded once
    assert len(events(ann, "login_unlocked")) == 1


def test_failures_older_than_the_window_do_not_count(ann: Session) -> None:
    assert [attempt(ann, "guess", minutes(i)) for i in range(4)] == ["refused"] * 4
    # the window began at minute 0; at minute 15 a new one begins
    assert [attempt(ann, "guess", minutes(15 + i)) for i in range(4)] == ["refused"] * 4
    assert attempt(ann, PASSWORD, minutes(20)) == "ok"


def test_lockouts_in_a_row_double_and_a_good_login_resets_them(ann: Session) -> None:
    def lock(at: float) -> LoginThrottled:
        for i in range(4):
            attempt(ann, "guess", minutes(at + i * 0.01))
        with pytest.raises(LoginThrottled) as caught:
            accounts.log_in(ann, "ann", "x", address=None, policy=POLICY, now=minutes(at + 0.1))
        return caught.value

    assert lock(0).retry_after == timedelta(minutes=5)
    assert lock(6).retry_after == timedelta(minutes=10)
    assert lock(17).retry_after == timedelta(minutes=20)
    assert attempt(ann, PASSWORD, minutes(38)) == "ok"
    assert lock(40).retry_after == timedelta(minutes=5)


def test_a_run_of_lockouts_is_forgotten_after_a_quiet_day(ann: Session) -> None:
    for start in (0.0, 6.0):
        for i in range(5):
            attempt(ann, "guess", minutes(start + i * 0.01))
    later = minutes(6) + LOCKOUTS_FORGOTTEN_AFTER + timedelta(minutes=20)
    for i in range(4):
        attempt(ann, "guess", later + timedelta(seconds=i))
    caused = record_failure(ann, "ann", None, policy=POLICY, now=later + timedelta(seconds=9))
    assert caused is not None and caused.retry_after == timedelta(minutes=5)


def test_names_that_do_not_exist_are_locked_out_alike(session: Session) -> None:
    """So a lockout tells nobody whether a name exists."""
    outcomes = [attempt(session, "guess", minutes(i * 0.01), name="nobody") for i in range(6)]
    assert outcomes == ["refused"] * 4 + ["locked"] * 2


def test_one_address_guessing_many_names_is_locked_out(ann: Session) -> None:
    outcomes = [
        attempt(ann, "guess", minutes(i * 0.01), name=f"user{i}", address="10.0.0.66")
        for i in range(20)
    ]
    assert outcomes == ["refused"] * 19 + ["locked"]
    assert attempt(ann, PASSWORD, minutes(1), address="10.0.0.66") == "locked"
    assert attempt(ann, PASSWORD, minutes(1), address="10.0.0.7") == "ok"
    scopes = [e.details["scope"] for e in events(ann, "login_locked") if e.details]
    assert scopes == ["address"]


def test_a_good_login_clears_its_name_but_not_its_address(ann: Session) -> None:
    for i in range(4):
        attempt(ann, "guess", minutes(i * 0.01))
    assert attempt(ann, PASSWORD, minutes(1)) == "ok"
    assert [attempt(ann, "guess", minutes(2 + i * 0.01)) for i in range(4)] == ["refused"] * 4
    row = ann.exec(select(LoginThrottle).where(LoginThrottle.scope == "address")).one()
    assert row.failures == 8  # an address with one valid account still counts its guesses


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_database(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """A database that connections of several threads share for real (a file, or a server)."""
    url = (
        f"sqlite:///{tmp_path / 'shared.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    engine = make_engine(url)
    upgrade_database(engine)
    return engine


def test_concurrent_failures_lock_once_and_let_no_sixth_guess_through(
    shared_database: Engine,
) -> None:
    """Each thread has its own connection, as each process would."""
    n = 12
    start = threading.Barrier(n)
    caused: list[LoginThrottled | None] = []
    lock = threading.Lock()

    def fail() -> None:
        with Session(shared_database) as session:
            start.wait()
            result = record_failure(session, "ann", None, policy=POLICY, now=minutes(1))
        with lock:
            caused.append(result)

    threads = [threading.Thread(target=fail) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with Session(shared_database) as session:
        row = session.exec(select(LoginThrottle)).one()
        assert (row.lockouts, row.failures) == (1, 0)
        assert len(events(session, "login_locked")) == 1
    assert sum(1 for c in caused if c is None) == 4  # failures 1-4; the 5th and later: locked
    shared_database.dispose()

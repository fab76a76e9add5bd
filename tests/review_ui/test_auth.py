"""Review UI sessions end with the account: a deactivated inspector, or one whose password
changed after they logged in, is refused on the next action; the login form is throttled
like the API's. The clock is ``app.state.clock``: nothing here sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from gradio_client import Client
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from inspect_app import accounts
from inspect_app.security import hash_secret
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.tables import LoginThrottle, UiSession
from review_ui.auth import COOKIE_ID, SessionTokens
from review_ui.context import ReviewContext
from tests.review_ui.conftest import PASSWORD, LiveService, add_lines, add_people, review_client

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine() -> Iterator[Engine]:
    db = make_engine("sqlite://")
    upgrade_database(db)
    yield db
    db.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(engine: Engine, clock: Clock, tmp_path: Path) -> SessionTokens:
    app = FastAPI()
    app.state.settings = Settings(data_dir=tmp_path)
    app.state.engine = engine
    app.state.clock = clock
    add_people(engine, ("ines", "inspector"), ("ivan", "inspector"), ("root", "admin"))
    return SessionTokens(ReviewContext(app))


def test_a_session_of_a_deactivated_user_ends_on_its_next_look_up(
    tokens: SessionTokens, engine: Engine
) -> None:
    tokens["cookie-1"] = "ines"
    tokens["cookie-2"] = "ivan"
    assert tokens.get("cookie-1") == "ines"
    with Session(engine) as db:
        accounts.deactivate_user(db, "ines", actor="root")
    assert tokens.get("cookie-1") is None
    assert "cookie-1" not in tokens  # ended for good, even if the account comes back
    with Session(engine) as db:
        accounts.activate_user(db, "ines", actor="root")
    assert tokens.get("cookie-1") is None
    assert tokens.get("cookie-2") == "ivan"
    assert tokens.get(None) is None and tokens.get("no such cookie") is None


def test_a_password_change_ends_the_sessions_that_logged_in_before_it(
    tokens: SessionTokens, engine: Engine, clock: Clock
) -> None:
    tokens["before"] = "ines"
    clock.now = T0 + timedelta(minutes=5)
    with Session(engine) as db:
        accounts.change_password(db, "ines", "a new password", actor="root", now=clock.now)
    clock.now = T0 + timedelta(minutes=6)
    tokens["after"] = "ines"  # logged in with the new password
    assert tokens.get("before") is None
    assert tokens.get("after") == "ines"


def test_a_session_of_a_removed_user_ends(tokens: SessionTokens) -> None:
    tokens["cookie"] = "nobody"
    assert tokens.get("cookie") is None


def test_a_login_through_one_process_holds_in_another_until_it_ends(
    tokens: SessionTokens, engine: Engine, clock: Clock, tmp_path: Path
) -> None:
    """Two processes are two token maps on one database: no sticky sessions needed."""
    other_app = FastAPI()
    other_app.state.settings = Settings(data_dir=tmp_path / "other", ui_session_hours=8)
    other_app.state.engine = engine
    other_app.state.clock = clock
    other = SessionTokens(ReviewContext(other_app))
    tokens["cookie-1"] = "ines"  # logged in through the first process
    tokens["cookie-2"] = "ines"  # a second tab
    assert other.get("cookie-1") == "ines" and "cookie-2" in other
    with Session(engine) as db:
        row = db.exec(
            select(UiSession).where(UiSession.session_hash == hash_secret("cookie-1"))
        ).one()
        assert row.session_hash != "cookie-1"  # only the hash is kept
    del other["cookie-1"]  # a logout through the other process
    assert tokens.get("cookie-1") is None and tokens.get("cookie-2") == "ines"
    clock.now = T0 + timedelta(hours=12)  # the first process's sessions last 12 h
    assert other.get("cookie-2") is None
    clock.now = T0 + timedelta(days=31)  # a month later, the next login clears ended rows
    tokens["cookie-3"] = "ines"
    with Session(engine) as db:
        assert [r.session_hash for r in db.exec(select(UiSession))] == [hash_secret("cookie-3")]


def test_a_logout_ends_the_session_in_every_process(tmp_path: Path) -> None:
    """Gradio's logout route, through the middleware: the database rows end, not only the
    answering process's memory."""
    from fastapi.testclient import TestClient

    from inspect_app.api.app import create_app

    settings = Settings(data_dir=tmp_path / "service", cameras=[], demo=False)
    with TestClient(create_app(settings)) as client:
        engine = client.app.state.engine  # type: ignore[attr-defined]
        add_people(engine, ("ines", "inspector"))
        login = client.post("/review/login", data={"username": "ines", "password": PASSWORD})
        assert login.status_code == 200, login.text
        cookie = login.cookies[f"access-token-unsecure-{COOKIE_ID}"]
        client.cookies.clear()
        headers = {"Cookie": f"access-token-unsecure-{COOKIE_ID}={cookie}"}
        assert client.get("/review/gradio_api/user", headers=headers).json() == "ines"
        client.get("/review/logout", headers=headers, follow_redirects=False)
        assert client.get("/review/gradio_api/user", headers=headers).json() is None
        with Session(engine) as db:
            ended = db.exec(select(UiSession)).one()
            assert ended.revoked_at is not None and ended.revoked_reason == "logged out"


# -- through the real service and Gradio's own API ------------------------------------------


def _client(service: LiveService, name: str, password: str = PASSWORD) -> Client:
    return review_client(service.review_url, name, password)


@pytest.mark.slow
def test_the_next_action_after_deactivation_or_a_password_change_is_refused(
    live_service: LiveService, add_parts: Callable[..., list[int]]
) -> None:
    engine = live_service.engine
    add_people(engine, ("ines", "inspector"), ("ivan", "inspector"), ("root", "admin"))
    add_lines(engine, ("line-1", "shadow"))
    add_parts(engine, live_service.settings.image_dir, "line-1", 3)
    ines = _client(live_service, "ines")
    ivan_desk, ivan_laptop = _client(live_service, "ivan"), _client(live_service, "ivan")
    assert ines.predict(api_name="/resume")[-1]["mode"] == "task"
    assert ivan_desk.predict(api_name="/resume")[-1]["mode"] == "task"

    with Session(engine) as db:
        accounts.deactivate_user(db, "ines", actor="root", reason="left")
        accounts.change_password(db, "ivan", "ivan's new password", actor="root")
    for session in (ines, ivan_desk, ivan_laptop):
        with pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"):
            session.predict(api_name="/resume")
    with pytest.raises(ValueError, match="Could not login"):
        _client(live_service, "ivan")  # the old password
    fresh = _client(live_service, "ivan", "ivan's new password")
    assert fresh.predict(api_name="/resume")[-1]["mode"] == "task"


@pytest.mark.slow
def test_the_login_form_is_throttled_and_the_lockout_ends_by_itself(
    live_service: LiveService,
) -> None:
    add_people(live_service.engine, ("ines", "inspector"))
    clock = Clock()
    live_service.app.state.clock = clock
    login = f"{live_service.review_url}login"

    def attempt(password: str) -> httpx.Response:
        return httpx.post(login, data={"username": "ines", "password": password}, timeout=60)

    assert [attempt("guess").status_code for _ in range(4)] == [400] * 4
    fifth = attempt("guess")
    assert fifth.status_code == 429 and fifth.headers["Retry-After"] == "300"
    right = attempt(PASSWORD)
    assert right.status_code == 429 and "even with the right password" in right.json()["detail"]
    clock.now = T0 + timedelta(minutes=5)
    assert attempt(PASSWORD).status_code == 200

    # The address counts too: the client's address reached the login checker.
    with Session(live_service.engine) as db:
        rows = {(r.scope, r.key) for r in db.exec(select(LoginThrottle))}
    assert ("address", "127.0.0.1") in rows

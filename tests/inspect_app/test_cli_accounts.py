"""`inspect-app users|tokens|cameras|lines` round-trip through a data dir."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from inspect_app.accounts import authenticate, line_for_camera_key, user_for_token
from inspect_app.cli import app
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine
from inspect_app.storage.tables import CameraKey, Event


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    runner = CliRunner()
    data_dir = tmp_path / "var"

    def invoke(*args: str, code: int = 0, input: str | None = None) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(data_dir)], input=input)
        assert result.exit_code == code, result.output
        return result.output

    invoke.session = lambda: Session(  # type: ignore[attr-defined]
        make_engine(Settings(data_dir=data_dir).resolved_database_url)
    )
    return invoke


def test_users_add_and_token_round_trip(run) -> None:  # type: ignore[no-untyped-def]
    out = run("users", "add", "ann", "--role", "supervisor")
    password = out.split("password (shown once): ")[1].strip()
    run("users", "add", "bob", "--role", "inspector", "--password", "bob's password")
    token = run("users", "token", "ann").strip()
    with run.session() as db:
        assert authenticate(db, "ann", password) is not None
        assert authenticate(db, "bob", "bob's password") is not None
        user = user_for_token(db, token)
        assert user is not None and (user.name, user.role) == ("ann", "supervisor")
    listed = run("users", "list")
    assert "ann\tsupervisor\tactive" in listed and "bob\tinspector\tactive" in listed


def test_cameras_add_prints_a_key_for_that_line(run) -> None:  # type: ignore[no-untyped-def]
    run("lines", "add", "line-1", "--level", "assist")
    key = run("cameras", "add", "--line", "line-1").strip()
    with run.session() as db:
        assert line_for_camera_key(db, key) == "line-1"
    assert key[:12] in run("cameras", "list")
    assert "line-1\tassist" in run("lines", "list")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "add", "ann", "--role", "boss"), "unknown role 'boss'"),
        (("users", "add", "ann", "--role", "admin", "--password", "short"), "at least 8"),
        (("users", "token", "nobody"), "no user named 'nobody'"),
        (("cameras", "add", "--line", "nope"), "no line 'nope'"),
        (("lines", "add", "line-1", "--level", "full"), "cannot start at full"),
    ],
)
def test_bad_input_exits_1_with_the_reason(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    assert message in run(*args, code=1)


def _events(run, kind: str) -> list[Event]:  # type: ignore[no-untyped-def]
    with run.session() as db:
        return list(db.exec(select(Event).where(Event.kind == kind).order_by(col(Event.id))))


def test_users_deactivate_and_activate_with_the_reason_recorded(run) -> None:  # type: ignore[no-untyped-def]
    run("users", "add", "ann", "--role", "inspector", "--password", "ann's password")
    token = run("users", "token", "ann").strip()
    assert "deactivated ann" in run("users", "deactivate", "ann", "--reason", "left the plant")
    with run.session() as db:
        assert authenticate(db, "ann", "ann's password") is None
        assert user_for_token(db, token) is None
    assert "ann\tinspector\tdeactivated" in run("users", "list")
    (event,) = _events(run, "user_deactivated")
    assert event.actor.startswith("cli") and event.reason == "left the plant"
    assert "already deactivated" in run("users", "deactivate", "ann", code=1)
    run("users", "activate", "ann")
    with run.session() as db:
        assert authenticate(db, "ann", "ann's password") is not None


def test_users_password_asks_twice_without_echo_or_takes_an_option(run) -> None:  # type: ignore[no-untyped-def]
    run("users", "add", "ann", "--role", "inspector", "--password", "ann's password")
    token = run("users", "token", "ann").strip()
    out = run(
        "users", "password", "ann",
        input="first try!\nmistyped!\nnew password\nnew password\n",
    )  # fmt: skip
    assert "do not match" in out and "changed the password of ann" in out
    assert "first try!" not in out and "mistyped!" not in out  # hidden input: no echo
    with run.session() as db:
        assert authenticate(db, "ann", "new password") is not None
        assert user_for_token(db, token) is None  # the old tokens are revoked
    run("users", "password", "ann", "--password", "scripted password", "--reason", "rotation")
    with run.session() as db:
        assert authenticate(db, "ann", "scripted password") is not None
    assert [e.reason for e in _events(run, "password_changed")] == ["", "rotation"]
    assert "at least 8" in run("users", "password", "ann", "--password", "short", code=1)


def test_users_tokens_lists_them_and_tokens_revoke_ends_one(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("INSPECT_TOKEN_TTL_HOURS", "2")
    run("users", "add", "ann", "--role", "inspector", "--password", "ann's password")
    first = run("users", "token", "ann").strip()
    second = run("users", "token", "ann").strip()
    header, *rows = run("users", "tokens", "ann").splitlines()
    assert header == "id\tstate\tcreated\texpires\tlast used\trevoked"
    ids = [row.split("\t")[0] for row in rows]
    created, expires = (datetime.strptime(v, "%Y-%m-%d %H:%M") for v in rows[0].split("\t")[2:4])
    assert [row.split("\t")[1] for row in rows] == ["active", "active"]
    assert expires - created == timedelta(hours=2)  # INSPECT_TOKEN_TTL_HOURS

    assert f"revoked token {ids[0]} of ann" in run("tokens", "revoke", ids[0], "--reason", "lost")
    with run.session() as db:
        assert user_for_token(db, first) is None and user_for_token(db, second) is not None
    states = [row.split("\t")[1] for row in run("users", "tokens", "ann").splitlines()[1:]]
    assert states == ["revoked", "active"]
    assert _events(run, "token_revoked")[0].reason == "lost"
    assert "already revoked" in run("tokens", "revoke", ids[0], code=1)
    assert "no token with id 999" in run("tokens", "revoke", "999", code=1)


def test_cameras_revoke_by_prefix_refusing_an_ambiguous_one(run) -> None:  # type: ignore[no-untyped-def]
    run("lines", "add", "line-1")
    keys = [run("cameras", "add", "--line", "line-1").strip() for _ in range(3)]
    with run.session() as db:
        rows = db.exec(select(CameraKey).order_by(col(CameraKey.id))).all()
        for row, prefix in zip(rows[:2], ("cam_twin1111", "cam_twin2222"), strict=True):
            row.key_prefix = prefix
            db.add(row)
        db.commit()
    out = run("cameras", "revoke", "cam_twin", code=1)
    assert "matches 2 live camera keys: cam_twin1111 (line-1), cam_twin2222 (line-1)" in out
    assert "revoked camera key cam_twin1111... of line-1" in run("cameras", "revoke", "cam_twin1")
    listed = run("cameras", "list")
    assert "cam_twin1111...\trevoked" in listed and "cam_twin2222...\tactive" in listed
    run("cameras", "revoke", keys[2][:12] + "...", "--reason", "camera replaced")
    with run.session() as db:
        assert line_for_camera_key(db, keys[1]) == "line-1"
        assert line_for_camera_key(db, keys[0]) is None and line_for_camera_key(db, keys[2]) is None
    assert _events(run, "camera_key_revoked")[-1].reason == "camera replaced"
    assert "no camera key starts with" in run("cameras", "revoke", "cam_nothing", code=1)

"""`inspect-app users|cameras|lines` round-trip through a data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from inspect_app.accounts import authenticate, line_for_camera_key, user_for_token
from inspect_app.cli import app
from inspect_app.settings import Settings
from inspect_app.storage.db import make_engine


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    runner = CliRunner()
    data_dir = tmp_path / "var"

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
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

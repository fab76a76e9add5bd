"""`inspect-app db current|upgrade` on a data dir: new, round 1's, and one it cannot upgrade."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from typer.testing import CliRunner

from inspect_app.cli import app
from inspect_app.settings import Settings
from inspect_app.storage.db import current_revision, make_engine
from inspect_app.storage.migrations import alembic_config


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    return tmp_path / "var"


def _db(data_dir: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["db", *args, "--data-dir", str(data_dir)])
    assert result.exit_code == code, result.output
    return result.output


def _head() -> str:
    return current_revision(make_engine("sqlite://")).head


def test_a_new_data_dir_is_created_at_head(data_dir: Path) -> None:
    assert "no database at" in _db(data_dir, "current")
    assert not data_dir.exists()  # `current` changes nothing
    out = _db(data_dir, "upgrade")
    assert "before: empty database (no schema)" in out
    assert f"after: {_head()} (head)" in out
    assert "backup" not in out
    assert _db(data_dir, "current").strip() == f"{_head()} (head)"
    assert _db(data_dir, "upgrade").strip() == f"already at {_head()} (head)"


def test_a_round_1_database_is_copied_then_upgraded(data_dir: Path) -> None:
    """Round 1's schema is revision 0001 without its alembic_version table."""
    data_dir.mkdir()
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()

    assert _db(data_dir, "current").strip() == (
        f"round-1 schema (unstamped), upgrade needed (head is {_head()})"
    )
    out = _db(data_dir, "upgrade")
    assert "before: round-1 schema (unstamped)" in out
    assert f"after: {_head()} (head)" in out
    backup = Path(out.split("backup: ")[1].strip())
    assert backup.exists() and backup.name.startswith("inspect.db.pre-")
    assert _db(data_dir, "current").strip() == f"{_head()} (head)"


def test_a_database_it_cannot_upgrade_is_an_error(data_dir: Path) -> None:
    data_dir.mkdir()
    engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE inspection (id INTEGER PRIMARY KEY)")
    engine.dispose()
    for verb in ("current", "upgrade"):
        assert "not a schema this code can upgrade" in _db(data_dir, verb, code=1)
    # the other commands open the database the same way
    result = CliRunner().invoke(app, ["users", "list", "--data-dir", str(data_dir)])
    assert result.exit_code == 1 and "not a schema this code can upgrade" in result.output

"""The ingestion path's cached lookups follow a change made through another engine on the same
database (as another process would make it) from the very next lookup when they read the
revision each time, and within `max_age_s` when they read it at most that often; a change
made through the process's own engine at once; on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from inspect_app import accounts
from inspect_app.domain import AutomationLevel
from inspect_app.lines import add_line, change_automation
from inspect_app.lookups import CameraAnswer, LineLookups, line_lookups
from inspect_app.storage.db import make_engine, upgrade_database
from inspect_app.storage.revisions import read_revision
from inspect_app.storage.tables import Line


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def two_engines(database_url: str) -> Iterator[tuple[Engine, Engine]]:
    """The service's engine and another one on the same database (the CLI, another process)."""
    service, other = make_engine(database_url), make_engine(database_url)
    upgrade_database(service)
    yield service, other
    service.dispose()
    other.dispose()


def _look(engine: Engine, key: str, line_id: str) -> tuple[int, str | None, str | None]:
    with Session(engine) as session:
        lookup = line_lookups(engine).current(session)
        policy = lookup.policy(line_id)
        return lookup.revision, lookup.camera_line(key), policy.level.value if policy else None


def test_a_change_through_another_engine_is_followed_at_the_next_lookup(
    two_engines: tuple[Engine, Engine],
) -> None:
    service, other = two_engines
    with Session(other, expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        supervisor = accounts.add_user(db, "sam", "supervisor", "a long test password")
        key = accounts.add_camera_key(db, "line-1")
    revision, line, level = _look(service, key, "line-1")
    assert (line, level) == ("line-1", "shadow")
    assert _look(service, key, "line-1") == (revision, "line-1", "shadow")  # nothing changed
    assert _look(service, "cam_not_a_key", "line-9") == (revision, None, None)

    with Session(other, expire_on_commit=False) as db:
        change_automation(db, "line-1", level=AutomationLevel.ASSIST, reason="test",
                          actor=supervisor)  # fmt: skip
    moved, line, level = _look(service, key, "line-1")
    assert moved > revision and (line, level) == ("line-1", "assist")

    with Session(other) as db:  # a line that did not exist is found once it does
        add_line(db, "line-9", "human_only")
    assert _look(service, key, "line-9")[2] == "human_only"

    with Session(other) as db:
        accounts.revoke_camera_key(db, key[:12], actor="admin", reason="camera replaced")
    assert _look(service, key, "line-1")[1] is None  # refused from the next image on
    with Session(other) as db:
        new_key = accounts.add_camera_key(db, "line-1")
    assert _look(service, new_key, "line-1")[1] == "line-1"


def test_an_orm_update_statement_counts_as_a_change(two_engines: tuple[Engine, Engine]) -> None:
    """Auto-demotion changes a line with an UPDATE statement, not through a loaded row."""
    service, other = two_engines
    with Session(other) as db:
        add_line(db, "line-1", "assist")
        key = accounts.add_camera_key(db, "line-1")
    assert _look(service, key, "line-1")[2] == "assist"
    with Session(other) as db:
        before = read_revision(db)
        db.exec(update(Line).where(Line.id == "line-1").values(level="shadow"))  # type: ignore[call-overload]
        db.commit()
        assert read_revision(db) == before + 1
    assert _look(service, key, "line-1")[2] == "shadow"


def test_a_change_rolled_back_moves_nothing(two_engines: tuple[Engine, Engine]) -> None:
    service, other = two_engines
    with Session(other) as db:
        add_line(db, "line-1", "shadow")
    with Session(service) as db:
        before = read_revision(db)
    with Session(other) as db:
        line = db.get(Line, "line-1")
        assert line is not None
        line.level = "assist"
        db.add(line)
        db.flush()
        db.rollback()
    with Session(service) as db:
        assert read_revision(db) == before
        assert line_lookups(service).current(db).policy("line-1").level.value == "shadow"  # type: ignore[union-attr]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_with_a_max_age_another_process_s_change_is_followed_once_it_is_over(
    two_engines: tuple[Engine, Engine],
) -> None:
    """The revision is read at most every `max_age_s`: a change through another engine is
    followed at the first lookup after that, never later; meanwhile nothing is read."""
    service, other = two_engines
    with Session(other) as db:
        add_line(db, "line-1", "shadow")
        key = accounts.add_camera_key(db, "line-1")
    clock = _Clock()
    lookups = LineLookups(max_age_s=0.1, clock=clock)
    with Session(service) as db:
        assert lookups.current(db).camera_for_line(key, "line-1").camera_line == "line-1"
    fresh = lookups.peek_camera_for_line(key, "line-1")  # from the cache, no I/O
    assert fresh is not None and fresh.camera_line == "line-1" and fresh.policy is not None
    with Session(other) as db:
        accounts.revoke_camera_key(db, key[:12], actor="admin", reason="camera replaced")
    clock.now += 0.05  # within the bound: the cache's answer stands, with no query
    statements: list[str] = []
    event.listen(service, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with Session(service) as db:
        assert lookups.current(db).camera_line(key) == "line-1"
    assert statements == []
    clock.now += 0.06  # past it: the revision is read again and the revocation followed
    assert lookups.peek_camera_for_line(key, "line-1") is None  # stale: no answer without I/O
    with Session(service) as db:
        assert lookups.current(db).camera_line(key) is None
    assert lookups.peek_camera_for_line(key, "line-1") == CameraAnswer(None, None)


def test_a_change_made_in_this_process_is_followed_at_once_whatever_the_max_age(
    two_engines: tuple[Engine, Engine],
) -> None:
    service, _ = two_engines
    lookups = line_lookups(service)
    lookups.max_age_s = 3600.0
    with Session(service, expire_on_commit=False) as db:
        add_line(db, "line-1", "shadow")
        supervisor = accounts.add_user(db, "sam", "supervisor", "a long test password")
        key = accounts.add_camera_key(db, "line-1")
    assert _look(service, key, "line-1")[1:] == ("line-1", "shadow")
    with Session(service) as db:
        change_automation(db, "line-1", level=AutomationLevel.ASSIST, reason="test",
                          actor=supervisor)  # fmt: skip
    assert _look(service, key, "line-1")[2] == "assist"
    with Session(service) as db:  # a rolled-back change leaves the cache fresh
        line = db.get(Line, "line-1")
        assert line is not None
        line.level = "shadow"
        db.add(line)
        db.flush()
        db.rollback()
    assert lookups.peek_camera_for_line(key, "line-1").policy.level.value == "assist"  # type: ignore[union-attr]
    with Session(service) as db:
        accounts.revoke_camera_key(db, key[:12], actor="admin", reason="camera replaced")
    assert lookups.peek_camera_for_line(key, "line-1") is None
    assert _look(service, key, "line-1")[1] is None

"""Change revisions: how every process knows, with one small read, that its cache still holds.

The ingestion path looks up the same few things for every image: the line's policy and the
camera key's line. They change rarely (a supervisor raises a level, an admin revokes a key),
but when they do, every process must follow within a bound it states: a revoked key must
be refused within a fraction of a second, not after a minute's poll interval. So each change
increments a counter in the database in the change's own transaction (table
``changerevision``, scope ``lines``), and a process keeps its lookups for as long as the
counter reads the same (`inspect_app.lookups`, which reads it at most every
``lookup_max_age_ms`` and drops its cache at the commit of a change made in its own process).

The increment is made by SQLAlchemy session events, not by each use case, so that no writer
of lines or camera keys can forget it (the CLI, the API, monitoring's auto-demotion, the
review UI): any ORM flush that inserts, changes or deletes a `Line` or a `CameraKey`, and any
ORM ``update``/``delete``/``insert`` statement on their tables, increments it before the
change is written. A change made with raw SQL outside the ORM is not seen: there is none in
the product.

The increment locks the counter's row until the change commits (on PostgreSQL), which is
what makes it safe: a reader never sees the new number before the change it counts. Changes
of lines and keys are an operator's, a few a day, so they wait on each other at most briefly.
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session

from inspect_app.storage.tables import CameraKey, ChangeRevision, Line

logger = logging.getLogger(__name__)

LINES = "lines"  # lines and camera keys
# ``session.info`` key: the engines whose lines or keys the session's transaction changed, so
# that a cache of this process (`inspect_app.lookups`) drops what it holds at the commit
CHANGED_ENGINES = "inspect_lines_changed_engines"
_WATCHED = (Line, CameraKey)
_WATCHED_TABLES = frozenset(m.__tablename__ for m in _WATCHED)  # type: ignore[attr-defined]


def read_revision(connection: Connection | Session, scope: str = LINES) -> int:
    """The scope's counter now (0 before its first change)."""
    if isinstance(connection, Session):
        connection = connection.connection()
    value = connection.execute(
        select(ChangeRevision.revision).where(ChangeRevision.scope == scope)  # type: ignore[arg-type]
    ).scalar_one_or_none()
    return int(value) if value is not None else 0


def bump(connection: Connection, scope: str = LINES) -> None:
    """Increment the scope's counter in the connection's transaction (an upsert: a database
    made without the migration's row counts from 0)."""
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    table = ChangeRevision.__table__  # type: ignore[attr-defined]
    statement = insert(table).values(scope=scope, revision=1)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["scope"], set_={"revision": table.c.revision + 1}
        )
    )


@event.listens_for(Session, "before_flush")
def _changes_in_a_flush(session: Session, _context: Any, _instances: Any) -> None:
    changed = any(isinstance(o, _WATCHED) for o in chain(session.new, session.deleted)) or any(
        isinstance(o, _WATCHED) and session.is_modified(o, include_collections=False)
        for o in session.dirty
    )
    if changed:
        _bump_in(session)


@event.listens_for(Session, "do_orm_execute")
def _changes_by_a_statement(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    table = getattr(state.statement, "table", None)
    if table is not None and getattr(table, "name", None) in _WATCHED_TABLES:
        _bump_in(state.session)


def _bump_in(session: Session) -> None:
    connection = session.connection()
    bump(connection)
    session.info.setdefault(CHANGED_ENGINES, set()).add(connection.engine)

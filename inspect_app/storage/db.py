"""Engine, sessions and the schema. SQLite is the embedded default; PostgreSQL by URL for
several processes.

The schema is the Alembic revisions in `inspect_app.storage.migrations`, and
`upgrade_database` is the one way a database gets it: the API app (``serve``) upgrades to
head at start-up, and so does every CLI command that opens the database, so that starting
the new version on a plant's existing database just works. ``inspect-app db upgrade`` does
the same step on its own and says what it did.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine

from inspect_app.storage import (
    revisions,  # noqa: F401  (counts changes of lines and keys)
    tables,  # noqa: F401  (registers the tables on the metadata)
)
from inspect_app.storage.migrations import alembic_config

logger = logging.getLogger(__name__)


# The threads of a service that hold a pooled connection at once: the event loop's default
# executor (asyncio's min(32, cores + 4): the ingestion path's worker hops and the routes'
# sync handlers), plus the group-commit writer, the line monitor, the deployment poller and
# the line outputs' worker. A smaller pool overflows under load, and each overflow
# connection is opened (SQLite: the connect pragmas run again) and closed per checkout:
# SQLAlchemy's default of 5 + 10 overflow did so on every burst of 12 cameras.
POOL_SIZE = min(32, (os.cpu_count() or 1) + 4) + 4


def make_engine(url: str) -> Engine:
    """Build an engine for `url`; ``sqlite://`` (no path) is one shared in-memory database."""
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        # a file's connections are cheap (a file handle each): the pool holds them all
        pool = {} if in_memory else {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE}
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=StaticPool if in_memory else None,
            **pool,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the UI read while ingestion writes; synchronous=FULL makes a
            # committed (acknowledged) inspection survive a crash of the process or machine.
            cur = dbapi_conn.cursor()
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Timestamps are UTC: a session zone of UTC makes PostgreSQL read round 1's columns
    # without a zone as UTC (revision 0002 converts them) and hand timestamptz back in UTC,
    # whatever the server's default zone is.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=max(10, POOL_SIZE),
        max_overflow=20,
        connect_args={"options": "-c timezone=UTC"},
    )


# Any number of service processes may start at once on one PostgreSQL database: upgrading
# under one advisory lock stops them racing on CREATE TABLE (the losers would fail with a
# duplicate-type error); the later ones find the database at head and do nothing.
_SCHEMA_LOCK_KEY = 0x696E7370  # "insp"

# Round 1 made its tables with create_all and recorded no revision: a database holding them
# and no alembic_version table is at this revision.
ROUND1_REVISION = "0001"
ROUND1_TABLES = frozenset(
    {"line", "user", "apitoken", "camerakey", "inspection", "reviewtask", "label", "event"}
)


class SchemaError(RuntimeError):
    """The database cannot be brought to this code's schema; it was left as it was."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against this code's revisions."""

    revision: str | None  # None: none of our tables yet (a new database)
    stamped: bool  # False for round 1's schema, which has no alembic_version table
    head: str

    @property
    def at_head(self) -> bool:
        return self.stamped and self.revision == self.head


@dataclass(frozen=True)
class UpgradeReport:
    before: SchemaState
    after: str
    applied: tuple[str, ...]  # revisions run, oldest first; empty when it was at head
    backup: Path | None  # copy of the SQLite file taken before the first revision ran


@cache
def _script() -> ScriptDirectory:
    """The packaged revisions, read once per process (they are part of the code)."""
    return ScriptDirectory.from_config(alembic_config())


def _revisions_after(revision: str | None) -> tuple[str, ...]:
    """The revisions an upgrade from `revision` to head runs, oldest first."""
    steps = _script().iterate_revisions("head", revision or "base")
    return tuple(reversed([step.revision for step in steps]))


def _schema_state(conn: Connection) -> SchemaState:
    head = _script().get_current_head()
    assert head is not None, "no revisions packaged"
    present = set(inspect(conn).get_table_names())
    if "alembic_version" in present:
        revision = MigrationContext.configure(conn).get_current_revision()
        known = {script.revision for script in _script().walk_revisions()}
        if revision is not None and revision not in known:
            raise SchemaError(
                f"the database is at revision {revision}, which this inspect_app does not "
                f"know (its newest is {head}): it was upgraded by a newer version"
            )
        return SchemaState(revision=revision, stamped=True, head=head)
    if present >= ROUND1_TABLES:
        return SchemaState(revision=ROUND1_REVISION, stamped=False, head=head)
    if present & ROUND1_TABLES:
        missing = ", ".join(sorted(ROUND1_TABLES - present))
        raise SchemaError(
            f"the database has some of inspect_app's tables but not {missing}, and no "
            "alembic_version: not a schema this code can upgrade"
        )
    return SchemaState(revision=None, stamped=False, head=head)


def current_revision(engine: Engine) -> SchemaState:
    """Read where `engine`'s schema stands, changing nothing."""
    with engine.connect() as conn:
        return _schema_state(conn)


@contextmanager
def _postgres_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction under the schema lock: PostgreSQL's DDL is transactional, so a
    revision that fails rolls back every revision of this upgrade with it."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        yield conn


@contextmanager
def _sqlite_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction for the whole upgrade, as SQLite's ALTER TABLE procedure wants.

    SQLite's DDL is transactional, but Python's sqlite3 driver only opens transactions
    before DML, so DDL would commit statement by statement: with the driver's autocommit
    on, BEGIN IMMEDIATE here holds the write lock from the schema check to the commit
    (a second process waits, then finds the database at head). Batch-mode revisions
    rebuild tables (create, copy, drop, rename), which needs foreign keys off; `_apply`
    checks them before the commit instead.
    """
    with engine.connect() as conn:
        dbapi_conn = conn.connection.dbapi_connection
        assert isinstance(dbapi_conn, sqlite3.Connection)
        isolation_level = dbapi_conn.isolation_level
        dbapi_conn.isolation_level = None
        try:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        finally:
            dbapi_conn.isolation_level = isolation_level
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite database; None for in-memory SQLite and other databases."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return Path(database)


def _backup_sqlite(path: Path, first_revision: str) -> Path:
    """Copy the database with SQLite's backup API: a consistent snapshot of the committed
    state, WAL content included, taken while the upgrade holds the write lock."""
    when = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.pre-{first_revision}-{when}.bak")
    with closing(sqlite3.connect(path, timeout=30)) as src, closing(sqlite3.connect(backup)) as dst:
        src.backup(dst)
    return backup


def upgrade_database(engine: Engine) -> UpgradeReport:
    """Bring `engine`'s database to the newest revision, keeping every row.

    ``serve`` calls this at start-up and so does every CLI command that opens the database
    (a decision: starting a new version on a plant's existing database just works, and the
    lock below makes it safe for several processes starting at once).

    - An empty database gets the whole schema (at head directly, see `_apply`).
    - Round 1's schema (its tables, no alembic_version) is stamped 0001, then upgraded.
    - PostgreSQL: one transaction under an advisory lock, so processes starting together
      do not race and a failed upgrade leaves nothing behind.
    - A SQLite file that has tables is first copied to ``<db>.pre-<rev>-<time>.bak``, then
      upgraded in one transaction; a failure rolls back and the error names the copy.
      In-memory SQLite (the tests) just upgrades.
    """
    file = sqlite_path(engine)
    if engine.dialect.name == "postgresql":
        transaction = _postgres_transaction(engine)
    elif engine.dialect.name == "sqlite":
        transaction = _sqlite_transaction(engine)
    else:
        transaction = engine.begin()
    backup: Path | None = None
    with transaction as conn:
        before = _schema_state(conn)
        if before.at_head:
            return UpgradeReport(before=before, after=before.head, applied=(), backup=None)
        applied = _revisions_after(before.revision)
        if file is not None and before.revision is not None:
            backup = _backup_sqlite(file, applied[0])
            logger.info("copied the database to %s before upgrading", backup)
        try:
            _apply(conn, before)
        except Exception as exc:
            kept = f"; the copy taken before it is {backup}" if backup else ""
            raise SchemaError(
                f"upgrading the database from {before.revision or 'empty'} to {before.head} "
                f"failed and was rolled back{kept}: {exc}"
            ) from exc
    logger.info(
        "database schema upgraded from %s to %s (applied %s)",
        before.revision or "empty",
        before.head,
        ", ".join(applied),
    )
    return UpgradeReport(before=before, after=before.head, applied=applied, backup=backup)


def _apply(conn: Connection, before: SchemaState) -> None:
    """Run the revisions from `before` to head on `conn` (inside the caller's transaction).

    A brand-new database takes a shortcut: ``create_all`` and a stamp at head. For an
    in-memory SQLite that is 19 ms against 45 ms for running every revision (create_all
    alone: 17 ms; medians, measured), which matters because the tests make hundreds of
    databases. It is the same schema because ``test_migrations`` proves that head equals
    `tables` on SQLite and PostgreSQL. So a revision must never carry rows that a new
    database needs too (seed data): such rows belong in the code that creates them, or
    this shortcut has to go.
    """
    script = _script()
    if before.revision is None:
        SQLModel.metadata.create_all(conn)
        MigrationContext.configure(conn).stamp(script, "head")
        return
    if not before.stamped:
        MigrationContext.configure(conn).stamp(script, before.revision)
    command.upgrade(alembic_config(conn), "head")
    if conn.dialect.name == "sqlite":
        violations = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise SchemaError(f"rows without their referenced row afterwards: {violations[:5]}")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written rows."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def database_disk_full(exc: DBAPIError) -> bool:
    """The database refused a write because its disk is full (SQLite's SQLITE_FULL,
    PostgreSQL's disk_full): the service answers 503 and the camera sends the image again."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(orig, "sqlstate", None) == _POSTGRES_DISK_FULL
